"""Peak resident set of a case in a fresh process: the zygote that forks it, and what it measures.

:func:`bench.measure.memory.peak_rss` asks here (:func:`ask_fresh`), one request per case. The
process is forked from a "zygote" (``python -m bench.measure.rss --serve``, started once per run)
that has imported torch and the harness and run nothing: as clean as a new interpreter, without
paying torch's import (seconds) per case. (multiprocessing's forkserver would do the same but
re-imports the parent's ``__main__`` in every child, which for ``python -m bench`` is the CLI
itself.) Under the local executor each case's zygote is forked from a memory server instead
(:func:`start_server`), forked in turn before the executor's zygote imported what only the cases
need. Without ``os.fork`` (Windows) every request starts a new interpreter instead
(``python -m bench.measure.rss --request JSON``).

The child builds the case, runs one inference step and reads the high-water mark (``VmHWM``);
then resets the mark (``/proc/self/clear_refs``) and runs the training step. The training figure
is the steady state: a first step creates AdamW's state, the mark is reset, and the next step is
the one reported. Where the mark cannot be reset, the training phase runs in a second fresh
process. Activation memory (``peak_mem_activations``, method ``rss_delta``): the same steps' peak
above the resident set just before them, once glibc has returned freed memory to the system
(``malloc_trim``). The same steady-state steps can be timed there (``train_timing``): on CPU the
harness takes the training-step time from them instead of running the training steps a second
time in-process.

A backbone registered outside the ``backbones`` package is found in the child by importing the
module that defines its constructor (registration runs on import); one defined in ``__main__``
cannot be, and its memory records say so.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import importlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

import torch

MIB = 2**20


def _proc_status_mib(field: str) -> float | None:
    """A memory line of this process's ``/proc/self/status`` (e.g. ``VmHWM``) in MiB; None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _vm_hwm_mib() -> float:
    """This process's peak resident set so far (Linux ``VmHWM``; ru_maxrss elsewhere)."""
    hwm = _proc_status_mib("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / MIB if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def _rss_mib() -> float | None:
    """This process's resident set now (Linux ``VmRSS``), None where it cannot be read."""
    return _proc_status_mib("VmRSS")


def _settled_rss_mib() -> float:
    """The resident set once freed memory went back to the system: the baseline of an activation peak.

    glibc keeps freed heap memory mapped (counted in the RSS) for reuse; without ``malloc_trim``
    a warm-up step's activations would sit in the baseline and the step's peak above it would
    read near zero. Falls back to the high-water mark where the RSS cannot be read.
    """
    gc.collect()
    with contextlib.suppress(Exception):  # not glibc (macOS, musl): nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    rss = _rss_mib()
    return rss if rss is not None else _vm_hwm_mib()


def _reset_hwm() -> bool:
    """Reset the peak resident set to the current one (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _measure_here(request: dict[str, Any]) -> dict[str, Any]:
    """Build the requested case in this process and run its phases; the reply of one request.

    Reply: ``{"status": "ok" | "oom" | "error", "message": str, "out": {phase: MiB, ...}}``; ``out``
    keeps the phases measured before a failure. With ``request["train_timing"]`` (keyword
    arguments of :func:`bench.measure.timing.measure_latency`) the steady-state training steps whose peak
    is measured are also timed, and ``out["train_samples"]`` holds their times (ms).
    """
    out: dict[str, Any] = {}
    try:
        import backbones

        from ..core.case import Case
        from .inputs import example_inputs
        from .timing import measure_latency, train_step_fn

        fields, module = request["case"], request.get("module", "")
        # The run's plugins (pruners, backbones) with the folders they came from: a long-lived
        # zygote started before they were loaded does not have those folders on its path.
        from ..core.plugins import Plugin, activate_all

        activate_all(Plugin(**p) for p in request.get("plugins", ()))
        if fields["backbone"] not in backbones.names() and module not in ("", "__main__"):
            importlib.import_module(module)  # a user's backbone registers itself on import
        if request.get("threads"):
            torch.set_num_threads(int(request["threads"]))
        case = Case(**fields)
        torch.manual_seed(0)
        model = case.build().to(dtype=getattr(torch, case.dtype))
        x, y = example_inputs(case, model)
        out.update(baseline_mib=_vm_hwm_mib(), reset=True)
        for phase in request["phases"]:
            if phase == "inference":
                model.eval()
                before = _vm_hwm_mib()  # building the model may have peaked higher than the step
                base = _settled_rss_mib()
                fresh_mark = _reset_hwm()
                with torch.inference_mode():
                    model(x)
                out["inference"] = max(before, _vm_hwm_mib())
                if fresh_mark:  # the step's own peak is readable: above the settled baseline
                    out["activations_inference"] = _vm_hwm_mib() - base
            else:
                step = train_step_fn(model, x, y)
                timed = dict(request.get("train_timing") or {"warmup": 0, "repeats": 1})
                for _ in range(max(1, timed.pop("warmup"))):
                    step()  # creates AdamW's state: the steady state starts with the next step
                model.zero_grad(set_to_none=True)  # what the step does first anyway
                from .phase import Phase

                # The load is read here, where the steps run: this process is no descendant of the
                # harness's (the memory server forks it), so from there its CPU time looks "other".
                # The phase's reference workload holds its matrices from here on, before the baseline.
                phase = Phase(torch.get_num_threads(), case.device, with_reference=bool(request.get("train_timing")))
                base = _settled_rss_mib()
                fresh_mark = _reset_hwm()
                out["reset"] &= fresh_mark
                with phase:
                    samples = measure_latency(step, warmup=0, reference=phase.reference, **timed)
                out["train"] = _vm_hwm_mib()
                out["train_load"] = phase.fields()
                if fresh_mark:
                    out["activations_train"] = out["train"] - base
                if request.get("train_timing"):
                    out["train_samples"] = samples
            out["reset"] &= _reset_hwm()
        return {"status": "ok", "message": "", "out": out}
    except BaseException as e:  # the parent turns it into a record, with what was measured so far
        oom = isinstance(e, MemoryError) or "can't allocate memory" in str(e)
        return {"status": "oom" if oom else "error", "message": f"{type(e).__name__}: {e}", "out": out}


def _serve(reply_fd: int, requests: Iterable[str] | None = None) -> None:
    """The zygote: one JSON request per line of ``requests`` (stdin), each measured in a child forked for it.

    The zygote has imported torch and the harness and run nothing, so every child starts as clean
    as a new interpreter but without the seconds of importing torch. Replies go to ``reply_fd``.
    """
    import backbones  # noqa: F401  (imported once here, inherited by every child)

    from . import inputs, timing  # noqa: F401

    for line in sys.stdin if requests is None else requests:
        request = json.loads(line)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the fresh child
            os.close(r)
            with os.fdopen(w, "w") as fh:
                fh.write(json.dumps(_measure_here(request)))
            os._exit(0)
        os.close(w)
        with os.fdopen(r) as fh:
            data = fh.read()
        _, wait_status = os.waitpid(pid, 0)
        if data:
            reply = json.loads(data)
        elif os.WIFSIGNALED(wait_status) and os.WTERMSIG(wait_status) == signal.SIGKILL:
            # SIGKILL is the kernel's OOM killer in practice; say what we know, not more.
            reply = {"status": "oom", "message": "killed by SIGKILL (likely out of memory)", "out": {}}
        else:
            reply = {"status": "error", "message": f"memory process ended with status {wait_status}", "out": {}}
        os.write(reply_fd, (json.dumps(reply) + "\n").encode())


class PeakRssError(RuntimeError):
    """The fresh process failed; ``status`` says whether it ran out of memory (oom) or not."""

    def __init__(self, message: str, status: str = "error", partial: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.partial = partial or {}  # the phases measured before the failure


class _Zygote:
    """The parent's handle on one ``python -m bench.measure.rss --serve`` process."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.measure.rss", "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.requests, self.replies = self.proc.stdin, self.proc.stdout

    def ask(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        self.requests.write(json.dumps(request) + "\n")
        self.requests.flush()
        ready, _, _ = select.select([self.replies], [], [], timeout_s)
        line = self.replies.readline() if ready else ""
        if not line:
            self.close()
            why = f"timed out after {timeout_s:.0f} s" if not ready else f"exited with {self.returncode()}"
            raise PeakRssError(f"memory process {why}")
        return json.loads(line)

    def returncode(self) -> int | None:
        return self.proc.poll()

    def alive(self) -> bool:
        return self.returncode() is None

    def close(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # the zygote and a child it may be waiting on
        self.proc.wait()


class _SocketZygote(_Zygote):
    """A per-connection zygote of the memory server that this process was forked after (:func:`start_server`)."""

    def __init__(self, path: str) -> None:  # the parent's __init__ would start an interpreter: not called
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.requests, self.replies = self.sock.makefile("w"), self.sock.makefile("r")
        self.pid = int(self.replies.readline())  # the zygote's own process group, see _handle

    def returncode(self) -> int | None:
        try:
            os.kill(self.pid, 0)
            return None
        except ProcessLookupError:
            return -signal.SIGKILL

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.requests.close()
            self.replies.close()
            self.sock.close()  # the end of its requests: it exits
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # in case it is stuck measuring


_zygote: _Zygote | None = None
_server_path: str | None = None  # the memory server of :func:`start_server`, for processes forked after it


def start_server() -> int:
    """Fork a memory server from this process, which must have imported but run nothing; its pid.

    The local executor's zygote (:mod:`bench.run.worker`) calls this before it imports what only the
    cases need (fvcore, torch._dynamo: tens of MiB that a fresh interpreter measuring memory would
    not hold). Processes forked from this one afterwards ask the server: each connection gets a
    zygote forked from it, which forks a fresh child per request, as clean as a new interpreter
    without paying torch's import per case. The server ends when this process does.
    """
    global _server_path
    folder = tempfile.mkdtemp(prefix="vptbench-memory-")
    path = os.path.join(folder, "socket")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 0
        signal.signal(signal.SIGTERM, _exit_on_term)  # so that the socket's folder is removed
        try:
            _accept_loop(listener, parent)
        except BaseException:
            code = 1
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        os._exit(code)
    listener.close()
    _server_path = path
    return pid


def _exit_on_term(*_: object) -> None:
    raise SystemExit(0)


def _accept_loop(listener: socket.socket, parent: int) -> None:
    """The memory server: a zygote forked per connection, until the process that started it ends."""
    handlers: set[int] = set()
    while os.getppid() == parent:
        ready, _, _ = select.select([listener], [], [], 0.5)
        if ready:
            conn, _ = listener.accept()
            pid = os.fork()
            if pid == 0:
                listener.close()
                os._exit(_handle(conn))
            conn.close()
            handlers.add(pid)
        for pid in list(handlers):
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    handlers.discard(pid)


def _handle(conn: socket.socket) -> int:
    """One connection's zygote: says its pid, then serves the connection's requests."""
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.setpgid(0, 0)  # its own group: the client can stop it and a child it waits on at once
        conn.sendall(f"{os.getpid()}\n".encode())
        with conn, conn.makefile("r") as requests:
            _serve(conn.fileno(), requests)
        return 0
    except BaseException:
        return 1


def shutdown() -> None:
    """Stop this process's memory zygote, if it has one."""
    global _zygote
    if _zygote is not None:
        _zygote.close()
        _zygote = None


def ask_fresh(request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Measure ``request`` in a fresh process: a zygote's fork, or (without fork) a new interpreter."""
    global _zygote
    if not hasattr(os, "fork"):
        done = subprocess.run(
            [sys.executable, "-m", "bench.measure.rss", "--request", json.dumps(request)],
            capture_output=True, text=True, timeout=timeout_s,
        )
        lines = done.stdout.strip().splitlines()
        if not lines:
            raise PeakRssError(f"memory process exited with {done.returncode}: {done.stderr.strip()[-300:]}")
        return json.loads(lines[-1])
    if _zygote is None or not _zygote.alive():
        _zygote = _SocketZygote(_server_path) if _server_path else _Zygote()
        atexit.register(_zygote.close)
    return _zygote.ask(request, timeout_s)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.measure.rss --serve`` (the zygote) or ``--request JSON`` (one request here)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.measure.rss", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--serve", action="store_true", help="answer JSON requests on stdin, one per line")
    mode.add_argument("--request", help="measure one JSON request in this process and print the reply")
    args = parser.parse_args(argv)
    if args.serve:
        # Replies get a private copy of stdout; anything printed by a model goes to stderr instead.
        reply_fd = os.dup(1)
        os.dup2(2, 1)
        _serve(reply_fd)
    else:
        print(json.dumps(_measure_here(json.loads(args.request))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
