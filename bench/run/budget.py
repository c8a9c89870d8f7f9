"""A run's timing budget, spent where the uncertainty is: the per-case cap of each latency or pair phase.

A preset gives every timed phase a cap (``max_time_s``: the paper preset's 12 s). Phases stop
earlier when their 95 % CI is tight (bench.measure.timing), which the cheap cases reach in a few
seconds: MHFormer's pairs take 0.25 s, MixSTE-243's 3.2 s, so a fixed cap gives the first 20 pairs
and the second 4, and the expensive cases, whose intervals are the widest, end unstable while the
budget of the cheap ones goes unused. With a run budget (``Settings.run_budget_s``: the seconds of
latency and pair phases the whole run may spend), each case's cap is its fair share of what is left:

    cap = clamp(left / phases_left, settings.max_time_s, MAX_FACTOR x settings.max_time_s)

where ``left`` is the budget minus the ``phase_s`` the finished cases' latency and pair phases
took, and ``phases_left`` the cases still to run (each has one such phase: a pruned case's latency
is the pruned half of its pairs). The cap never falls below the preset's, so no case is worse off
than without a budget; the run goes over its budget only by what those floors take. The cases run
in the matrix's order, cheap or not; what the early ones leave, the later ones may use.
The timed records carry the cap they had (``time_cap_s``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..core.results import read_records

MAX_FACTOR = 2.5  # a case may get at most this many times the preset's cap
TIMED = ("latency", "speedup")  # the records whose phase the budget pays for


def phase_seconds(records: Iterable[Mapping[str, Any]]) -> float:
    """The seconds the latency and pair phases of ``records`` took (one phase per case)."""
    per_case: dict[str, float] = {}
    for r in records:
        if r.get("metric") in TIMED and r.get("status") == "ok" and r.get("phase_s") is not None:
            per_case[r["case_id"]] = max(per_case.get(r["case_id"], 0.0), float(r["phase_s"]))
    return sum(per_case.values())


def spent(run_dir: str | Path) -> float:
    """The seconds of latency and pair phases already in ``run_dir`` (0 before its first record)."""
    if not (Path(run_dir) / "records.jsonl").is_file():
        return 0.0
    return phase_seconds(read_records(run_dir))


def cap(settings: Any, spent_s: float, phases_left: int) -> float | None:
    """The next case's ``max_time_s`` (module docstring); the preset's when the run has no budget."""
    base = settings.max_time_s if settings.max_time_s is not None else settings.min_time_s
    if settings.run_budget_s is None or phases_left < 1:
        return settings.max_time_s
    share = (settings.run_budget_s - spent_s) / phases_left
    return round(min(MAX_FACTOR * base, max(base, share)), 2)


def capped(settings: Any, spent_s: float, phases_left: int) -> Any:
    """``settings`` with ``max_time_s`` set to the next case's cap (as they are without a run budget)."""
    if settings is None or getattr(settings, "run_budget_s", None) is None:
        return settings
    return dataclasses.replace(settings, max_time_s=cap(settings, spent_s, phases_left))


def with_cap(job: Any, spent_s: float, phases_left: int) -> Any:
    """``job`` with its settings capped for the next case (a job without settings as it is)."""
    settings = getattr(job, "settings", None)
    new = capped(settings, spent_s, phases_left)
    return job if new is settings else dataclasses.replace(job, settings=new)
