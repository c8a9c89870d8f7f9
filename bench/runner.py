"""Run a matrix of cases into a run directory, and resume one that was interrupted.

    summary = run_matrix(cases, "results/r1", run_id="r1", metrics=METRIC_GROUPS, resume=False)

The unit of work is :func:`run_case`: measure one case, append each record to
``records.jsonl`` the moment it is measured (flushed and fsynced), then write the case's line in
``done.txt``. Executors that run cases elsewhere (other processes, Slurm jobs) call it too.

Resuming. A kill can land anywhere: between two records of a case, in the middle of writing a
record, or in the middle of writing the ``done.txt`` line. ``--resume`` therefore trusts only
``done.txt``: finished cases are skipped, and every unfinished case of the matrix is redone from
scratch after its partial records are removed from ``records.jsonl`` (the file is rewritten and
atomically replaced). Redoing a partial case costs its measurement time again, but mixing records
of a killed attempt with a new one would give some (case, metric) twice, with values taken under
different conditions. Writing a case's records only once it is done would avoid the rewrite but
lose everything measured when a long case is killed. Records of cases outside the matrix are
never touched. A run directory that already holds records is only continued with ``--resume``,
never appended to or overwritten by accident.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .case import Case
from .errors import UsageError
from .measure import Settings, measure_case
from .results import RecordWriter, finish_meta, finished_case_ids, mark_done, read_records, write_meta


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
        for rec in measure_case(case, metrics, run_id, settings=settings):
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
    resume: bool,
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
    if not resume:
        ensure_fresh(run_dir)
    write_meta(run_dir, {
        "run_id": run_id, "metrics": list(metrics), "settings": settings.to_dict(), "cases": len(matrix),
        **(meta or {}),
    })  # fmt: skip
    done = prepare_resume(run_dir, ids) if resume else set()
    todo = [c for c in matrix if c.case_id not in done]
    summary = RunSummary(run_dir=run_dir, cases=len(matrix), resumed=len(matrix) - len(todo))
    with tqdm(total=len(matrix), initial=summary.resumed, unit="case", file=sys.stderr,
              disable=not progress, dynamic_ncols=True) as bar:  # fmt: skip
        for case in todo:
            bar.set_description_str(case.case_id)
            records = run_case(case, run_dir, run_id, metrics, settings)
            summary.measured += 1
            summary.failures += [r for r in records if r["status"] != "ok"]
            bar.update(1)
    finish_meta(run_dir)
    return summary


def ensure_fresh(run_dir: str | Path) -> None:
    """UsageError if ``run_dir`` already holds a run (continue it with --resume instead)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out {run_dir} is a file, not a directory")
    held = [n for n in ("records.jsonl", "done.txt") if (run_dir / n).is_file() and (run_dir / n).stat().st_size]
    if held:
        raise UsageError(f"{run_dir} already holds a run ({held[0]}); pass --resume to continue it or choose another --out")


def prepare_resume(run_dir: str | Path, case_ids: Iterable[str]) -> set[str]:
    """Make ``run_dir`` ready to continue: returns the finished case ids; partial cases are cleared.

    Repairs a ``done.txt`` line cut short by a kill, and removes from ``records.jsonl`` the records
    of the cases in ``case_ids`` that are not finished (and a last line cut short), so that they can
    be measured again without duplicates.
    """
    run_dir = Path(run_dir)
    _drop_torn_tail(run_dir / "done.txt")
    done = finished_case_ids(run_dir)
    redo = set(case_ids) - done
    path = run_dir / "records.jsonl"
    if not path.is_file():
        return done
    torn = not path.read_text(encoding="utf-8").endswith("\n")
    records = read_records(path)  # validated line by line; a last record cut short is left out
    kept = [r for r in records if r["case_id"] not in redo]
    if torn or len(kept) < len(records):
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in kept)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    return done


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line without its newline (a write interrupted by a kill) off ``path``."""
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        path.write_text(text[: text.rfind("\n") + 1], encoding="utf-8")
