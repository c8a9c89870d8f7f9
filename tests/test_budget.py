"""A run's timing budget: each case's cap is its share of what is left, never below the preset's."""

from __future__ import annotations

import pytest

from bench.core.case import Case
from bench.core.results import read_records
from bench.run import budget
from bench.run.runner import run_matrix
from bench.scenarios import Settings


def settings(**kw):
    return Settings(warmup=0, repeats=2, min_time_s=0.0, max_time_s=2.0, **kw)


def test_the_cap_is_the_fair_share_of_what_is_left_within_the_floor_and_the_ceiling():
    s = settings(run_budget_s=40.0)
    assert budget.cap(s, spent_s=0.0, phases_left=4) == 5.0  # 40 / 4, below 2.5 x 2 s
    assert budget.cap(s, spent_s=0.0, phases_left=2) == 5.0  # 20 each would be more than 2.5 x the preset's
    assert budget.cap(s, spent_s=38.0, phases_left=4) == 2.0  # never below the preset's cap
    assert budget.cap(s, spent_s=30.0, phases_left=3) == pytest.approx(3.33)
    assert budget.cap(settings(), spent_s=0.0, phases_left=4) == 2.0  # no run budget: the preset's
    assert budget.capped(settings(), 0.0, 1) == settings()


def test_phase_seconds_counts_one_phase_per_case():
    recs = [
        {"case_id": "a", "metric": "latency", "status": "ok", "phase_s": 3.0},
        {"case_id": "a", "metric": "speedup", "status": "ok", "phase_s": 3.0},  # the same pairs
        {"case_id": "b", "metric": "latency", "status": "ok", "phase_s": 1.5},
        {"case_id": "b", "metric": "train_step", "status": "ok", "phase_s": 9.0},  # not the budget's
        {"case_id": "c", "metric": "latency", "status": "error", "phase_s": None},
    ]
    assert budget.phase_seconds(recs) == 4.5


def test_a_run_records_the_cap_each_case_had(tmp_path):
    cases = [Case("mixste", v, frames=27, size="tiny").resolve() for v in ("rectangle", "hierarchical")]
    s = Settings(warmup=0, repeats=2, min_time_s=0.0, max_time_s=0.05, max_repeats=3, run_budget_s=10.0)
    run_matrix(cases, tmp_path / "r", run_id="r", metrics=["latency"], settings=s, progress=False)
    caps = [r["time_cap_s"] for r in read_records(tmp_path / "r") if r["metric"] == "latency"]
    assert caps == [0.12, 0.12]  # 10 s shared by 2 would be 5 s: the ceiling is 2.5 x the preset's 0.05 s


def test_min_time_scales_the_run_budget_with_the_cap():
    from bench.run.presets import PAPER_SETTINGS, with_min_time

    assert PAPER_SETTINGS.run_budget_s == 140.0 and PAPER_SETTINGS.max_time_s == 12.0
    longer = with_min_time(PAPER_SETTINGS, 30.0)
    assert longer.max_time_s == 90.0 and longer.run_budget_s == 1050.0  # 140 s x 90 / 12
    shorter = with_min_time(PAPER_SETTINGS, 1.0)  # the cap stays 12 s: so does the budget
    assert shorter.max_time_s == 12.0 and shorter.run_budget_s == 140.0
