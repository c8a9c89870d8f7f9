"""What became of the cases handed to an executor, counted as each one ends.

:class:`Outcome` is what :func:`bench.run.executors.execute` returns. Every executor (inline and
local in :mod:`bench.run.executors`, Slurm in :mod:`bench.run.slurm`) counts a case in with
:func:`finish` when it has ended, printing why if it failed, and advances a
:func:`progress_bar` of cases on stderr.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from ..core.case import Case


@dataclass
class Outcome:
    """What became of the cases handed to :func:`bench.run.executors.execute`."""

    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # case_id -> why (naming the log)
    skipped: list[str] = field(default_factory=list)  # finished before (--resume)


def progress_bar(total: int, progress: bool, desc: str) -> Any:
    """A bar of ``total`` cases on stderr, hidden without ``progress``."""
    from tqdm import tqdm

    return tqdm(total=total, disable=not progress, file=sys.stderr, desc=desc, unit="case", leave=False)


def finish(outcome: Outcome, case: Case, why: str | None, progress: bool) -> None:
    """Count ``case`` in ``outcome``: finished if ``why`` is None, else failed (said on stderr with ``progress``)."""
    if why is None:
        outcome.finished.append(case.case_id)
        return
    outcome.failed[case.case_id] = why
    if progress:
        print(f"failed: {case.case_id}: {why}", file=sys.stderr)
