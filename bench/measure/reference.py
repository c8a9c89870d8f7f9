"""A reference workload timed alongside every timed phase: does the machine run at its usual speed?

``other_cores`` (bench.measure.load) sees other processes. It does not see a machine that is slow on
its own: a virtual machine whose host is busy (steal time the guest is not told of), a CPU that
lowered its clock, a noisy neighbour on a shared cache. Some rounds of a quiet 2-core VM contain
forwards 50 % slower than the rest with no extra page faults, no steal time in /proc/stat and no
other process busy: the whole process's CPU time rises with the wall time. Only a workload of
known cost, timed next to the model, shows them.

The workload is one fixed matrix product (:data:`SIZE` x :data:`SIZE`, float32, on the timing's
threads), a few milliseconds: the same kind of kernel that dominates the backbones. The timers
(bench.measure.timing) call it between samples, so that it takes about 2 % of the timed time.
``machine_slowdown`` = the median of its times during the phase / its *quiet median*: 1.0 is the
usual speed, 1.3 a machine 30 % slower than usual.

The quiet median is kept per machine (CPU model, threads, torch version) in
``$XDG_CACHE_HOME/vptbench/reference.json`` (``~/.cache`` by default): the phase medians of recent
runs, newest last, :data:`HISTORY` of them. The quiet median is their 25th percentile (the usual
speed when nothing slowed it down), taken over the history *before* this phase, so a slow phase
does not raise its own yardstick. With fewer than :data:`MIN_HISTORY` phases on record, the phase
is compared with its own fastest calls. ``vptbench doctor`` times the workload afresh and compares.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.results import cpu_model

SIZE = 384  # 2 x 384^3 = 113 MFLOP per product: about 1 ms on two cores, the size of the backbones' matmuls
REPEATS = 2  # products per reference call: a few ms, long enough to time
HISTORY = 50
MIN_HISTORY = 3
QUIET_PERCENTILE = 25
SHARE = 0.02  # the reference is called when the timed calls since its last call exceed 1/SHARE its cost
SLOW = 1.15  # machine_slowdown above this makes an absolute timing unstable


def workload(threads: int | None = None, device: str = "cpu") -> Callable[[], None]:
    """The reference call: :data:`REPEATS` products of two fixed :data:`SIZE` x :data:`SIZE` matrices."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(SIZE, SIZE, generator=gen).to(device)
    b = torch.randn(SIZE, SIZE, generator=gen).to(device)
    out = torch.empty(SIZE, SIZE, device=device)

    def call() -> None:
        for _ in range(REPEATS):
            torch.mm(a, b, out=out)
        if out.device.type == "cuda":
            torch.cuda.synchronize(out.device)

    return call


def time_calls(call: Callable[[], None], n: int) -> list[float]:
    """ms of ``n`` calls (after one untimed call)."""
    call()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vptbench" / "reference.json"


def machine_key(threads: int, device: str = "cpu") -> str:
    """Which history a phase belongs to: the CPU (or GPU), the threads and torch's version."""
    what = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else cpu_model()
    return f"{platform.node()}|{what}|threads={threads}|torch={torch.__version__}|{device.split(':')[0]}"


@contextlib.contextmanager
def _locked_cache() -> Iterator[dict[str, Any]]:
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path.with_suffix(".lock"), "a+")  # noqa: SIM115  # held across the yield below
    except OSError:  # a read-only home: no history, nothing breaks
        yield {}
        return
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, ValueError):
            data = {}
        before = json.dumps(data, sort_keys=True)
        yield data
        if json.dumps(data, sort_keys=True) != before:
            with contextlib.suppress(OSError):
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
                tmp.replace(path)


def history(key: str) -> list[float]:
    """The phase medians (ms) on record for ``key``, oldest first."""
    with _locked_cache() as data:
        return [float(v) for v in data.get(key, [])]


def quiet_median(past: Sequence[float]) -> float | None:
    """The usual time of the reference call, from the phase medians of ``past`` (None with too few)."""
    if len(past) < MIN_HISTORY:
        return None
    return float(np.percentile(np.asarray(past, dtype=float), QUIET_PERCENTILE))


def slowdown(times_ms: Sequence[float], key: str, *, remember: bool = True) -> dict[str, Any]:
    """The fields a timed record carries about the machine's speed during the phase (module docstring).

    ``times_ms``: the reference calls of the phase. Returns ``machine_slowdown`` (None without
    calls), ``reference_ms`` (their median) and ``reference_n``; with ``remember``, the phase's
    median joins the history for ``key``.
    """
    if not times_ms:
        return {"machine_slowdown": None, "reference_ms": None, "reference_n": 0}
    med = float(np.median(np.asarray(times_ms, dtype=float)))
    with _locked_cache() as data:
        past = [float(v) for v in data.get(key, [])]
        if remember:
            data[key] = [*past, round(med, 4)][-HISTORY:]
    base = quiet_median(past)
    basis = "history"
    if base is None:  # a new machine: the phase's own fastest calls are the yardstick
        base = float(np.percentile(np.asarray(times_ms, dtype=float), 10))
        basis = "phase"
    return {"machine_slowdown": round(med / base, 3) if base > 0 else None, "reference_ms": round(med, 4),
            "reference_n": len(times_ms), "reference_basis": basis}  # fmt: skip


class Interleaved:
    """The reference call between a timer's samples, about :data:`SHARE` of the timed time (bench.measure.timing).

    ``after(ms)`` is told the duration of each timed call; once the calls since the last reference
    add up to 1/SHARE times its cost, the reference runs and its time joins ``times``. The first
    call runs it at once, so even a phase of a few samples has one.
    """

    def __init__(self, call: Callable[[], None], *, share: float = SHARE) -> None:
        self.call = call
        self.share = share
        self.times: list[float] = []
        self._since = float("inf")

    def after(self, sample_ms: float) -> None:
        self._since += sample_ms
        cost = float(np.median(self.times)) if self.times else 0.0
        if self._since * self.share < cost:
            return
        t = time.perf_counter()
        self.call()
        self.times.append((time.perf_counter() - t) * 1e3)
        self._since = 0.0
