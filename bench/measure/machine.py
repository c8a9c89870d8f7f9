"""Is this machine fit for timing right now, and why not: the checks behind ``vptbench doctor``.

In the spirit of ``pyperf system show``: each check reads what the OS tells (and says so where it
tells nothing, as in most virtual machines) and gives advice where a setting makes timings slower
or noisier. The verdict is *fit* unless a check that changes timings now fails:

- ``load``: other processes' CPU use over a short window (bench.measure.load's rule: more than the
  cores the timing leaves free, plus a quarter core, makes the machine busy), the load average,
  the processes that use the most, and the time the hypervisor took (steal);
- ``reference``: the reference workload (bench.measure.reference) timed now against its quiet
  median on this machine: more than 15 % slower is a slow episode;
- ``frequency``: the CPU frequency governor and turbo where readable (``performance`` keeps the
  clock steady; ``powersave``/``schedutil`` let it wander);
- ``smt``: simultaneous multithreading (two hardware threads of one core share it: use at most one
  torch thread per physical core);
- ``threads``: the torch threads a timing would use against the cores this process may run on;
- ``allocator``: the allocator the run's processes would use (bench.measure.allocator).

Only ``load`` and ``reference`` change the verdict: the others are settings, reported with advice.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from . import load


@dataclass
class Check:
    """One line of the doctor's answer."""

    name: str
    ok: bool
    what: str  # what was found, in a few words
    advice: str = ""  # what to do about it ("" when nothing)
    decides: bool = False  # whether a failure makes the machine unfit for timing now
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class Verdict:
    checks: list[Check]

    @property
    def fit(self) -> bool:
        return all(c.ok for c in self.checks if c.decides)

    def line(self) -> str:
        """One line: the verdict and, when unfit, why."""
        bad = [c for c in self.checks if c.decides and not c.ok]
        if not bad:
            found = "; ".join(c.what for c in self.checks if c.decides)
            return f"fit for timing ({found})"
        return "not fit for timing: " + "; ".join(f"{c.what} ({c.advice})" if c.advice else c.what for c in bad)

    def to_dict(self) -> dict[str, Any]:
        return {"fit": self.fit, "line": self.line(),
                "checks": [{"name": c.name, "ok": c.ok, "what": c.what, "advice": c.advice, "decides": c.decides,
                            **c.fields} for c in self.checks]}  # fmt: skip


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return None


def check_load(threads: int, window_s: float = 1.0) -> Check:
    """Other processes' CPU over ``window_s``, the load average, the busiest processes, steal time."""
    me = psutil.Process()
    procs = {p.pid: p for p in psutil.process_iter(["name"])}
    for p in procs.values():
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)  # starts each process's counter; read after the window
    steal0 = getattr(psutil.cpu_times(), "steal", 0.0)
    with load.Monitor(threads, interval_s=window_s) as mon:
        time.sleep(window_s)
    fields = mon.fields()
    steal = (getattr(psutil.cpu_times(), "steal", 0.0) - steal0) / max(fields["phase_s"], 1e-9)
    own = {me.pid, *(c.pid for c in me.children(recursive=True))}
    busiest = []
    for pid, p in procs.items():
        if pid in own:
            continue
        try:
            pct = p.cpu_percent(None)
        except psutil.Error:
            continue
        if pct >= 10.0:
            busiest.append((pct, f"{p.info.get('name') or pid} ({pid}) {pct:.0f} %"))
    busiest.sort(reverse=True)
    what = f"other processes {fields['other_cores']:.2f} cores, load {fields['load_1m']}"
    if steal > 0.05:
        what += f", steal {steal:.2f} cores"
    advice = ""
    if fields["busy"]:
        names = ", ".join(b for _, b in busiest[:3]) or "short-lived processes"
        advice = f"busiest: {names}; wait for them or stop them"
    return Check("load", not fields["busy"], what, advice, decides=True,
                 fields={"other_cores": fields["other_cores"], "load_1m": fields["load_1m"], "cpus": fields["cpus"],
                         "steal_cores": round(steal, 3), "busiest": [b for _, b in busiest[:5]]})  # fmt: skip


def check_reference(threads: int, calls: int = 40) -> Check:
    """The reference workload now against its quiet median (bench.measure.reference)."""
    import torch

    from . import reference

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = reference.time_calls(reference.workload(), calls)
    finally:
        torch.set_num_threads(saved)
    key = reference.machine_key(threads)
    past = reference.history(key)
    f = reference.slowdown(times, key, remember=False)
    if f["reference_basis"] == "phase":
        return Check("reference", True, f"reference workload {f['reference_ms']:.2f} ms (no history yet on this "
                     "machine: a run records it)", decides=True, fields=f)  # fmt: skip
    slow = f["machine_slowdown"]
    ok = slow is not None and slow <= reference.SLOW
    what = f"reference workload x{slow:.2f} its usual time ({f['reference_ms']:.2f} ms, {len(past)} phases on record)"
    advice = "" if ok else "the machine runs slower than usual: another tenant, a throttled clock; wait and rerun"
    return Check("reference", ok, what, advice, decides=True, fields=f)


def check_frequency() -> Check:
    governors = sorted({g for g in (_read(str(p)) for p in Path("/sys/devices/system/cpu").glob(
        "cpu[0-9]*/cpufreq/scaling_governor")) if g})  # fmt: skip
    no_turbo = _read("/sys/devices/system/cpu/intel_pstate/no_turbo")
    boost = _read("/sys/devices/system/cpu/cpufreq/boost")
    mhz = load.cpu_mhz()
    if not governors:
        what = "frequency scaling not readable (no cpufreq: typical of a virtual machine)"
        return Check("frequency", True, what + (f", {mhz:.0f} MHz" if mhz else ""), fields={"cpu_mhz": mhz})
    ok = governors == ["performance"]
    what = f"governor {', '.join(governors)}" + (f", {mhz:.0f} MHz" if mhz else "")
    if no_turbo is not None or boost is not None:
        turbo = (no_turbo == "0") if no_turbo is not None else (boost == "1")
        what += f", turbo {'on' if turbo else 'off'}"
    advice = "" if ok else "set the governor to performance (cpupower frequency-set -g performance) for steady clocks"
    return Check("frequency", ok, what, advice, fields={"governors": governors, "cpu_mhz": mhz})


def check_smt(threads: int) -> Check:
    active = _read("/sys/devices/system/cpu/smt/active")
    logical = psutil.cpu_count(logical=True) or 1
    physical = psutil.cpu_count(logical=False) or logical
    smt = active == "1" if active is not None else logical > physical
    what = f"{physical} physical cores, {logical} logical" + (", SMT on" if smt else "")
    ok = not smt or threads <= physical
    advice = "" if ok else f"use --threads {physical} or fewer: two hardware threads of a core compete for it"
    return Check("smt", ok, what, advice, fields={"physical": physical, "logical": logical, "smt": smt})


def check_threads(threads: int) -> Check:
    cpus = load.cpu_count()
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    what = f"{threads} torch thread(s) on {cpus} usable core(s)" + (f", {env}" if env else "")
    ok = threads <= cpus
    advice = "" if ok else f"more threads than cores: use --threads {cpus}"
    return Check("threads", ok, what, advice, fields={"threads": threads, "cpus": cpus, "env": env})


def check_allocator(name: str) -> Check:
    from . import allocator

    try:
        allocator.check(name)
    except Exception as e:  # a UsageError: the library is missing
        return Check("allocator", False, f"allocator {name}: {e}", fields={"allocator": name})
    what = f"allocator {name} for the run's processes"
    return Check("allocator", True, what, fields={"allocator": name})


def diagnose(threads: int, *, allocator_name: str = "tuned", reference_calls: int = 40, window_s: float = 1.0) -> Verdict:
    """Every check, for a timing on ``threads`` torch threads."""
    return Verdict([
        check_load(threads, window_s),
        check_reference(threads, reference_calls),
        check_frequency(),
        check_smt(threads),
        check_threads(threads),
        check_allocator(allocator_name),
    ])  # fmt: skip
