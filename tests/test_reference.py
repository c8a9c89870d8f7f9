"""The reference workload: when it runs between samples, and how a phase's slowdown is judged."""

from __future__ import annotations

import json

import pytest

from bench.measure import reference, timing


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "vptbench" / "reference.json"


def test_interleaved_runs_first_then_about_every_share_of_the_timed_time():
    calls = []
    ref = reference.Interleaved(lambda: calls.append(1), share=0.02)
    ref.times = []
    ref.after(100.0)  # the first sample: the reference runs at once
    assert len(calls) == 1
    ref.times = [2.0]  # pretend it costs 2 ms: next after 2 / 0.02 = 100 ms of timed calls
    for _ in range(9):
        ref.after(10.0)
    assert len(calls) == 1
    ref.after(10.0)
    assert len(calls) == 2


def test_timers_tell_the_reference_every_sample_and_pair():
    class Count:
        def __init__(self):
            self.seen = []

        def after(self, ms):
            self.seen.append(ms)

    seen = Count()
    timing.measure_latency(lambda: None, warmup=1, repeats=4, reference=seen)
    assert len(seen.seen) == 4
    pairs = Count()
    ref_ms, new_ms = timing.measure_paired(lambda: None, lambda: None, warmup=0, repeats=3, reference=pairs)
    assert pairs.seen == pytest.approx([r + n for r, n in zip(ref_ms, new_ms, strict=True)])


def test_slowdown_against_the_quiet_median_of_earlier_phases(cache):
    key = "m|cpu|threads=2"
    first = reference.slowdown([1.0, 1.1, 1.2], key)  # no history: the phase's own fastest calls
    assert first["reference_basis"] == "phase" and first["machine_slowdown"] == pytest.approx(1.1 / 1.02, rel=1e-3)
    for _ in range(4):
        reference.slowdown([1.0, 1.0, 1.0], key)
    slow = reference.slowdown([1.3, 1.3, 1.3], key)
    assert slow["reference_basis"] == "history" and slow["machine_slowdown"] == pytest.approx(1.3)
    assert slow["reference_ms"] == 1.3 and slow["reference_n"] == 3
    # the slow phase joined the history, but the quiet median (25th percentile) stays 1.0
    again = reference.slowdown([1.0], key, remember=False)
    assert again["machine_slowdown"] == pytest.approx(1.0)
    stored = json.loads(cache.read_text())[key]
    assert stored == [1.1, 1.0, 1.0, 1.0, 1.0, 1.3]
    assert reference.slowdown([], key)["machine_slowdown"] is None


def test_history_keeps_the_newest_phases(cache):
    for i in range(reference.HISTORY + 5):
        reference.slowdown([float(i + 1)], "k")
    assert reference.history("k") == [float(i + 1) for i in range(5, reference.HISTORY + 5)]


def test_an_unwritable_cache_costs_the_history_not_the_timing(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))  # a file where the folder should be
    f = reference.slowdown([2.0, 2.0], "k")
    assert f["machine_slowdown"] == pytest.approx(1.0) and f["reference_basis"] == "phase"


def test_the_workload_runs_on_the_given_threads():
    times = reference.time_calls(reference.workload(), 3)
    assert len(times) == 3 and all(t > 0 for t in times)
