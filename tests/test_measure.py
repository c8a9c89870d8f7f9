"""The speedup group of bench.scenarios.speedup: paired against the case's own rectangle, one record per pruned case."""

from __future__ import annotations

import pytest

from bench import scenarios
from bench.core import results
from bench.core.case import Case
from bench.measure.timing import SpeedSettings
from bench.scenarios import Settings, measure_case, speedup

QUICK = Settings(warmup=1, repeats=6, min_time_s=0.0, max_time_s=0.2, max_repeats=30, speed=SpeedSettings(threads=1))
TIMED_FIELDS = {"n", "ci_low", "ci_high", "ci_level", "ci_method", "mad_pct", "drift_pct", "stable",
                "unstable_reason", "other_cores", "load_1m", "busy", "cpu_mhz", "threads"}  # fmt: skip


def test_a_pruned_case_gets_one_paired_speedup_against_its_own_rectangle():
    case = Case(backbone="motionbert", variant="single", frames=27, size="tiny").resolve()
    recs = list(measure_case(case, ["latency", "speedup"], "r", settings=QUICK))
    (sp,) = [r for r in recs if r["metric"] == "speedup"]
    assert (sp["status"], sp["unit"], sp["method"]) == ("ok", "x", "paired")
    assert sp["reference"] == scenarios.reference_case(case).case_id
    assert "rectangle" in sp["reference"] and sp["reference"] != case.case_id
    assert set(sp) >= TIMED_FIELDS
    n = sp["n"]
    assert len(sp["samples"]) == len(sp["samples_rectangle"]) == len(sp["samples_pruned"]) == n >= 6
    assert sp["samples"] == pytest.approx([r / p for r, p in zip(sp["samples_rectangle"], sp["samples_pruned"])])
    assert sp["ci_low"] <= sp["value"] <= sp["ci_high"]
    (lat,) = [r for r in recs if r["metric"] == "latency"]
    assert set(lat) >= TIMED_FIELDS and lat["n"] == len(lat["samples"])
    # One timed phase: the latency is the pruned half of the pairs, and says so.
    assert lat["samples"] == sp["samples_pruned"] and lat["value"] == sp["latency_pruned_ms"]
    assert lat["paired"] is True and lat["reference"] == sp["reference"]
    assert [r["metric"] for r in recs].count("fps") == 1


def test_a_pruned_latency_alone_and_a_rectangle_latency_are_timed_on_their_own():
    single = Case(backbone="motionbert", variant="single", frames=27, size="tiny").resolve()
    rect = scenarios.reference_case(single)
    for case, metrics in ((single, ["latency"]), (rect, ["latency", "speedup"])):
        (lat,) = [r for r in measure_case(case, metrics, "r", settings=QUICK) if r["metric"] == "latency"]
        assert lat["status"] == "ok" and "paired" not in lat and "reference" not in lat


def test_a_failing_pair_fails_both_the_latency_and_the_speedup(monkeypatch):
    def broken(*_a, **_k):
        raise RuntimeError("timer broke")

    monkeypatch.setattr(speedup.timing, "measure_paired", broken)
    case = Case(backbone="motionbert", variant="single", frames=27, size="tiny").resolve()
    recs = list(measure_case(case, ["params", "latency", "speedup"], "r", settings=QUICK))
    assert [(r["metric"], r["status"]) for r in recs] == [("params", "ok"), ("latency", "error"), ("speedup", "error")]
    assert all("timer broke" in r["error"] for r in recs[1:])


def test_a_rectangle_has_no_speedup_record_and_an_unbuildable_case_a_skipped_one():
    rect = Case(backbone="mixste", variant="rectangle", frames=9, size="tiny").resolve()
    assert [r["metric"] for r in measure_case(rect, ["params", "speedup"], "r", settings=QUICK)] == ["params"]
    unbuildable = Case(backbone="mixste", variant="single", frames=9, size="tiny", pruner="no-such-pruner")
    recs = list(measure_case(unbuildable, ["params", "speedup"], "r", settings=QUICK))
    assert [(r["metric"], r["status"]) for r in recs] == [("params", "skipped"), ("speedup", "skipped")]


def test_speedup_is_a_known_metric_in_x():
    assert results.METRIC_UNITS["speedup"] == "x"
    assert "speedup" in scenarios.METRIC_GROUPS


def test_timed_records_say_how_fast_the_machine_ran_and_how_it_allocated():
    case = Case(backbone="mixste", variant="hierarchical", frames=27, size="tiny").resolve()
    recs = [r for r in measure_case(case, ["latency", "speedup", "train"], "r", settings=QUICK)
            if r["metric"] in ("latency", "speedup", "train_step")]  # fmt: skip
    assert {r["metric"] for r in recs} == {"latency", "speedup", "train_step"}
    for r in recs:
        assert r["reference_n"] >= 1 and r["reference_ms"] > 0 and r["machine_slowdown"] > 0, r["metric"]
        assert r["allocator"] == "tuned" and "M_MMAP_MAX=0" in r["allocator_settings"] and r["cpu_affinity"]
    off = Settings(**{**QUICK.to_dict(), "speed": QUICK.speed, "reference": False, "allocator": "system"})
    (lat,) = [r for r in measure_case(case, ["latency"], "r", settings=off) if r["metric"] == "latency"]
    assert "machine_slowdown" not in lat and lat["allocator"] == "system"


def test_settings_of_a_run_recorded_before_the_allocator_choice_read_as_glibc_defaults():
    old = QUICK.to_dict()
    del old["allocator"], old["reference"]
    assert Settings.from_dict(old).allocator == "system" and Settings.from_dict(old).reference is True
    assert Settings.from_dict(QUICK.to_dict()) == QUICK
