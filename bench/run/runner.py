"""Run a matrix of cases in this process into a run directory, and resume one that was interrupted.

    summary = run_matrix(cases, "results/r1", run_id="r1", metrics=METRIC_GROUPS, resume=False)

The unit of work is :func:`run_case`: measure one case, append each record to
``records.jsonl`` the moment it is measured (flushed and fsynced), then write the case's line in
``done.txt``. How a run directory is written, and what ``--resume`` trusts and redoes, is
:mod:`bench.run.store`'s; executors that run cases elsewhere (other processes, Slurm jobs) are in
:mod:`bench.run.executors`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..core.case import Case
from ..core.results import finish_meta, write_meta
from ..scenarios import Settings, group_metric, measure_case
from . import budget
from .store import RecordWriter, ensure_fresh, mark_done, prepare_resume, writer


@dataclass
class RunSummary:
    """What a run did: cases in the matrix, measured now, skipped as already finished, failures."""

    run_dir: Path
    cases: int
    measured: int = 0
    resumed: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)  # records with status != ok


def run_case(
    case: Case, run_dir: str | Path, run_id: str, metrics: Sequence[str], settings: Settings
) -> list[dict[str, Any]]:
    """Measure ``case`` into ``run_dir`` (records appended as measured) and mark it done."""
    records = []
    with RecordWriter(run_dir) as writer:
        for rec in measure_case(case, metrics, run_id, settings=settings, run_dir=run_dir):
            writer.write(rec)
            records.append(rec)
    mark_done(run_dir, case.case_id)
    return records


def run_matrix(
    cases: Iterable[Case],
    run_dir: str | Path,
    *,
    run_id: str,
    metrics: Sequence[str],
    resume: bool = False,
    progress: bool = True,
    settings: Settings | None = None,
    meta: dict[str, Any] | None = None,
) -> RunSummary:
    """Measure ``cases`` in order into ``run_dir``; with ``resume``, continue an interrupted run.

    Writes ``meta.json`` (environment, settings, start and end time; ``meta`` adds fields) and
    shows a progress bar with the current case on stderr. Failed metrics are records (status
    error/oom/skipped), never exceptions: the run goes on.
    """
    settings = settings or Settings()
    run_dir = Path(run_dir)
    matrix = list(dict.fromkeys(cases))  # the same case asked for twice is measured once
    ids = [c.case_id for c in matrix]
    with writer(run_dir):
        if not resume:
            ensure_fresh(run_dir)
        write_meta(run_dir, {
            "run_id": run_id, "metrics": list(metrics), "settings": settings.to_dict(), "cases": len(matrix),
            **(meta or {}),
        })  # fmt: skip
        expected = {c.case_id: [group_metric(g, c.device) for g in metrics] for c in matrix}
        done = prepare_resume(run_dir, ids, expected) if resume else set()
        todo = [c for c in matrix if c.case_id not in done]
        summary = RunSummary(run_dir=run_dir, cases=len(matrix), resumed=len(matrix) - len(todo))
        with tqdm(total=len(matrix), initial=summary.resumed, unit="case", file=sys.stderr,
                  disable=not progress, dynamic_ncols=True) as bar:  # fmt: skip
            for i, case in enumerate(todo):
                bar.set_description_str(case.case_id)
                capped = budget.capped(settings, budget.spent(run_dir), len(todo) - i)
                records = run_case(case, run_dir, run_id, metrics, capped)
                summary.measured += 1
                summary.failures += [r for r in records if r["status"] != "ok"]
                bar.update(1)
        finish_meta(run_dir)
    return summary
