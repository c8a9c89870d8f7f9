"""What else used the CPU while something was timed: load average, other processes' CPU, clock.

    with load.Monitor(threads=torch.get_num_threads()) as mon:
        samples = timing.measure_latency(...)
    fields = mon.fields()   # phase_s, load_1m, other_cores, other_cores_max, cpu_mhz, cpus, busy

``phase_s`` is the wall time of the phase (warm-up included: what the timing cost).
``other_cores`` is the CPU time that processes *other than this one and its descendants* (the
memory group's fresh processes are descendants) consumed during the phase, divided by the
phase's wall time: 1.0 means another process kept one core busy all along. It is the
system-wide busy time (psutil.cpu_times: everything but idle and iowait) minus this process
tree's own CPU time, so it also counts kernel work done for others. ``other_cores_max`` is the
highest such figure over the sampling windows (``interval_s``, 1 s): a load that came part-way
through a long phase shows there even when its average is small.

The *busy* rule: a timing is taken on a busy machine when other processes used, on average, more
than the cores it left free plus a quarter core: ``other_cores > max(0, cpus - threads) + 0.25``.
One thread on two cores tolerates one other busy core (each gets its own); two threads on two
cores tolerate none, since OpenMP's threads wait for each other at every barrier and one
preempted thread stalls them all. ``bench.measure.timing.stats_fields`` turns ``busy`` into
``stable: false``.
"""

from __future__ import annotations

import os
import threading
import time
from types import TracebackType
from typing import Any

import psutil

BUSY_MARGIN_CORES = 0.25  # the other processes' use, beyond the free cores, that makes a machine busy
INTERVAL_S = 1.0


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent not idle, since boot (all cores together)."""
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    return sum(t) - idle - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)  # guest is inside user


def _own_cpu_s(proc: psutil.Process) -> float:
    """CPU seconds of ``proc`` and its descendants (live ones, and those already waited for)."""
    total = 0.0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        members = [proc]
    for p in members:
        try:
            t = p.cpu_times()
        except psutil.Error:  # exited between the listing and the reading
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def cpu_mhz() -> float | None:
    """The CPU's current mean clock (MHz), or None where the OS does not say."""
    try:
        f = psutil.cpu_freq()
    except (OSError, NotImplementedError, AttributeError):
        return None
    return round(float(f.current), 1) if f and f.current else None


def cpu_count() -> int:
    """The cores this process may run on (its affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return psutil.cpu_count() or 1


def is_busy(other_cores: float, cpus: int, threads: int) -> bool:
    """The busy rule of the module docstring."""
    return other_cores > max(0, cpus - threads) + BUSY_MARGIN_CORES


class Monitor:
    """Measures the load of a timed phase (a context manager; see the module docstring).

    A background thread wakes every ``interval_s`` to read the counters; finding this process's
    descendants reads every /proc/PID/stat (about 4 ms of CPU for 150 processes), so at 1 s it
    costs the timed code under 0.5 % of one core, and a median nothing measurable.
    """

    def __init__(self, threads: int, *, interval_s: float = INTERVAL_S) -> None:
        self.threads = max(1, int(threads))
        self.interval_s = interval_s
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._windows: list[float] = []
        self._start: tuple[float, float, float] = (0.0, 0.0, 0.0)
        self._end: tuple[float, float, float] | None = None
        self._mhz: list[float] = []

    def _snapshot(self) -> tuple[float, float, float]:
        return time.perf_counter(), _busy_cpu_s(), _own_cpu_s(self._proc)

    @staticmethod
    def _other(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
        wall = b[0] - a[0]
        if wall <= 0:
            return 0.0
        return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / wall)

    def _watch(self) -> None:
        last = self._start
        while not self._stop.wait(self.interval_s):
            now = self._snapshot()
            self._windows.append(self._other(last, now))
            last = now
            mhz = cpu_mhz()
            if mhz:
                self._mhz.append(mhz)

    def __enter__(self) -> Monitor:
        mhz = cpu_mhz()
        if mhz:
            self._mhz.append(mhz)
        self._start = self._snapshot()
        self._thread = threading.Thread(target=self._watch, name="vptbench-load", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._end = self._snapshot()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def fields(self) -> dict[str, Any]:
        """The load figures of the phase, as recorded next to its timing."""
        if self._end is None:
            raise RuntimeError("Monitor.fields() is read after the timed block")
        cpus = cpu_count()
        other = self._other(self._start, self._end)
        load_1m = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        return {
            "phase_s": round(self._end[0] - self._start[0], 3),
            "load_1m": None if load_1m is None else round(load_1m, 2),
            "other_cores": round(other, 3),
            "other_cores_max": round(max([other, *self._windows]), 3),
            "cpu_mhz": round(sum(self._mhz) / len(self._mhz), 1) if self._mhz else None,
            "cpus": cpus,
            "busy": is_busy(other, cpus, self.threads),
        }
