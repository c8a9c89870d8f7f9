"""The processes the local executor runs its cases in: one fresh process per case.

``python -m bench.run.worker PART_DIR`` runs the one case pickled in ``PART_DIR/task.pkl`` in a new
interpreter. ``python -m bench.run.worker --serve`` is the executor's *zygote* (:class:`ForkServer`):
it imports torch and the harness once, runs nothing, and forks one child per case. A child is
as fresh as a new interpreter (no earlier case ran in it, no allocator state, no cached weights)
without paying torch's import, seconds of CPU per case; a child can fork its own memory zygote
the same way (:func:`bench.measure.rss.start_server`), so that peak memory is still measured in a
process that never ran anything. Where ``os.fork`` is missing (Windows) every case starts a new
interpreter instead (:func:`start_worker`).

Either way the task writes its records into the part and closes it itself; exit code 0 means the
case finished; :data:`WRITE_FAILED` that the run directory could not be written (the executor
stops the run, the part stays for ``--resume``); anything else (a kill included, as a negative
signal number) is recorded by the executor.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

WRITE_FAILED = 75  # EX_TEMPFAIL: the disk, not the case, failed


def run_part(part: str | Path) -> int:
    """Run the task pickled in ``part/task.pkl`` in this process; the exit code (0, or :data:`WRITE_FAILED`)."""
    import cloudpickle

    from ..core.errors import WriteError

    task = cloudpickle.loads((Path(part) / "task.pkl").read_bytes())
    try:
        task()
        return 0
    except WriteError as e:
        print(f"vptbench worker: error: {e}", file=sys.stderr)  # the executor's one line, from the log
        return WRITE_FAILED
    finally:
        from ..measure import rss

        rss.shutdown()


# --------------------------------------------------------------------------- the zygote (child side)


def _preload() -> int:
    """What every case needs, imported once in the zygote and inherited by every child; the memory server's pid.

    First what a fresh process measuring peak memory holds (torch, the backbones, the harness),
    then the memory server is forked (:func:`bench.measure.rss.start_server`), then the rest: fvcore
    and torch._dynamo (which FlopCounterMode and AdamW import on first use, seconds each time), and
    what unpickling a case's task imports (:mod:`bench.run.task`, its job and the run directory's store).
    """
    import torch  # noqa: F401

    import backbones  # noqa: F401

    from ..measure import rss
    from ..scenarios import measure  # noqa: F401

    server = rss.start_server()
    import cloudpickle  # noqa: F401
    import torch._dynamo  # noqa: F401

    from ..measure import flops  # noqa: F401
    from . import task  # noqa: F401

    return server


def _child(request: dict[str, Any], reply_fd: int) -> int:
    """In the forked child: log to the case's log, set its environment, run it; the exit code."""
    code = 1
    try:
        os.close(reply_fd)
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.environ.update(request.get("env") or {})
        code = run_part(request["part"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
    return code


def serve(reply_fd: int) -> None:
    """The zygote: one JSON request per stdin line, each run in a child forked for it.

    Replies on ``reply_fd``, one line each: ``start ID PID`` when a child is forked and
    ``exit PID CODE`` when it ends (CODE negative for a signal, as subprocess reports it).
    At the end of stdin the zygote stops its remaining children and exits.
    """
    memory_server = _preload()
    buf = b""
    children: set[int] = set()
    eof = False
    while not eof or children:
        if not eof:
            ready, _, _ = select.select([0], [], [], 0.05)
            if ready:
                chunk = os.read(0, 1 << 16)
                eof = not chunk
                buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    os._exit(_child(request, reply_fd))
                children.add(pid)
                os.write(reply_fd, f"start {request['id']} {pid}\n".encode())
            if eof:
                for pid in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
        else:
            time.sleep(0.05)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            children.discard(pid)
            with contextlib.suppress(OSError):
                os.write(reply_fd, f"exit {pid} {os.waitstatus_to_exitcode(status)}\n".encode())
    with contextlib.suppress(OSError):
        os.kill(memory_server, signal.SIGTERM)
        os.waitpid(memory_server, 0)  # reaped: its CPU time counts in this process tree's


# --------------------------------------------------------------------------- the zygote (executor side)


class ForkServer:
    """The executor's handle on one ``python -m bench.run.worker --serve`` process."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.run.worker", "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(env),
            start_new_session=True,  # Ctrl-C reaches the executor, which stops the cases itself
        )  # fmt: skip
        self._buf = b""
        self._started: dict[int, int] = {}  # request id -> pid
        self._codes: dict[int, int] = {}  # pid -> exit code
        self._next = 0

    def start(self, part: str | Path, log: str | Path, env: Mapping[str, str]) -> ForkedWorker:
        """Fork a child that runs ``part``'s task with ``env`` set, its output appended to ``log``."""
        assert self.proc.stdin is not None
        rid, self._next = self._next, self._next + 1
        request = {"id": rid, "part": str(part), "log": str(log), "env": dict(env)}
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        while rid not in self._started:
            if not self._pump(1.0) and self.proc.poll() is not None:
                raise RuntimeError(f"the worker zygote exited with {self.proc.returncode}")
        return ForkedWorker(self, self._started.pop(rid))

    def _pump(self, timeout: float) -> bool:
        """Read what the zygote has said within ``timeout`` s; False if it said nothing."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return False
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return False
        self._buf += chunk
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            kind, a, b = line.decode().split()
            if kind == "start":
                self._started[int(a)] = int(b)
            else:
                self._codes[int(a)] = int(b)
        return True

    def code(self, pid: int) -> int | None:
        """The exit code of child ``pid`` once it has ended, else None."""
        while self._pump(0):
            pass
        if pid not in self._codes and self.proc.poll() is not None:
            return 1  # the zygote died; its children were stopped with it or are orphans we cannot wait for
        return self._codes.get(pid)

    def close(self) -> None:
        """End the zygote (it stops children still running) and wait for it."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class ForkedWorker:
    """One forked case child, with the part of the ``subprocess.Popen`` interface the executor uses."""

    def __init__(self, server: ForkServer, pid: int) -> None:
        self.server = server
        self.pid = pid

    def poll(self) -> int | None:
        return self.server.code(self.pid)

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if end is not None and time.monotonic() > end:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0)
            self.server._pump(0.05)
        return code


def start_worker(
    server: ForkServer | None, part: str | Path, log: str | Path, env: Mapping[str, str]
) -> subprocess.Popen[bytes] | ForkedWorker:
    """Run ``part`` in a fresh process: a child of ``server``, or a new interpreter without one."""
    if server is not None:
        return server.start(part, log, env)
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.run.worker", str(part)], stdout=fh, stderr=subprocess.STDOUT,
            env=os.environ | dict(env),
        )  # fmt: skip


def fork_server(env: Mapping[str, str]) -> ForkServer | None:
    """A zygote for the local executor, or None where this platform cannot fork."""
    if not hasattr(os, "fork") or not hasattr(os, "waitstatus_to_exitcode"):
        return None
    return ForkServer(os.environ | dict(env))



def main(argv: list[str]) -> int:
    if argv == ["--serve"]:
        reply_fd = os.dup(1)
        os.dup2(2, 1)  # anything printed by the zygote itself goes to stderr, not into the replies
        serve(reply_fd)
        return 0
    if len(argv) != 1:
        print("usage: python -m bench.run.worker PART_DIR | --serve", file=sys.stderr)
        return 2
    return run_part(argv[0])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
