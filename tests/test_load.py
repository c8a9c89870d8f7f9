"""Machine load: the busy rule, whose CPU counts as "other", and timing beside a CPU hog.

The hog test asserts no speed: only that a figure taken beside the hog is within tolerance of the
quiet one or says it is unstable (the promise of bench.measure.timing's stability rule).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from bench.core.case import Case
from bench.measure import load
from bench.measure.timing import SpeedSettings
from bench.scenarios import Settings, measure_case


def test_busy_rule_counts_the_cores_the_timing_left_free():
    # one thread on two cores: another process may take the other core
    assert not load.is_busy(1.0, cpus=2, threads=1)
    assert load.is_busy(1.3, cpus=2, threads=1)
    # two threads on two cores: a third of a core elsewhere already stalls OpenMP's barriers
    assert not load.is_busy(0.2, cpus=2, threads=2)
    assert load.is_busy(0.3, cpus=2, threads=2)
    assert load.is_busy(0.3, cpus=2, threads=4)  # more threads than cores: nothing is free


_BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def test_a_childs_cpu_is_this_process_trees_not_another_processes():
    import psutil

    me = psutil.Process()
    before = load._own_cpu_s(me)
    subprocess.run([sys.executable, "-c", _BURN.format(s=0.4)], check=True)  # waited for: children_user
    assert load._own_cpu_s(me) - before >= 0.35


def test_monitor_fields():
    with load.Monitor(threads=1, interval_s=0.1) as mon:  # /proc/stat counts in 10 ms ticks
        time.sleep(0.3)
    f = mon.fields()
    assert set(f) == {"phase_s", "load_1m", "other_cores", "other_cores_max", "cpu_mhz", "cpus", "busy"}
    assert f["phase_s"] >= 0.3
    assert 0 <= f["other_cores"] <= f["other_cores_max"] <= f["cpus"] + 0.5
    assert f["busy"] is load.is_busy(f["other_cores"], f["cpus"], 1)
    with pytest.raises(RuntimeError):
        load.Monitor(threads=1).fields()


def _start_hogs(n: int, seconds: float) -> list[int]:
    """``n`` busy-looping processes that are not our descendants (so they count as other processes)."""
    code = f"import time\nt = time.time()\nwhile time.time() - t < {seconds}: pass\n"
    pids = []
    for _ in range(n):
        out = subprocess.run(["sh", "-c", f"{sys.executable} -c '{code}' >/dev/null 2>&1 & echo $!"],
                             capture_output=True, text=True, check=True)  # fmt: skip
        pids.append(int(out.stdout.strip()))
    return pids


def _stop(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def test_a_speedup_timed_beside_cpu_hogs_is_within_tolerance_or_marked_unstable():
    case = Case(backbone="mixste", variant="hierarchical", frames=27, size="tiny").resolve()
    settings = Settings(warmup=2, repeats=6, min_time_s=0.3, max_time_s=1.5, max_repeats=200,
                        speed=SpeedSettings(threads=1))  # fmt: skip

    def speedup() -> dict:
        (rec,) = [r for r in measure_case(case, ["speedup"], "r", settings=settings) if r["metric"] == "speedup"]
        assert rec["status"] == "ok" and rec["unit"] == "x" and rec["method"] == "paired"
        return rec

    quiet = speedup()
    hogs = _start_hogs(os.cpu_count() or 2, seconds=20)
    try:
        hogged = speedup()
    finally:
        _stop(hogs)
    assert hogged["other_cores"] > 0.5  # the monitor saw the hogs (and anything else running)
    within = abs(hogged["value"] / quiet["value"] - 1) <= 0.15
    assert within or hogged["stable"] is False, (quiet["value"], hogged)
    if not hogged["stable"]:
        assert hogged["unstable_reason"]
    assert torch.get_num_threads() == 1
