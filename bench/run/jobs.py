"""What is done for one case: the :class:`Job` an executor runs (:mod:`bench.run.executors`).

A job is a small frozen, picklable dataclass, so the same object runs in this process, in a
fresh subprocess (``python -m bench.run.worker``) or in a Slurm job (submitit pickles it).
:class:`BenchJob` is ``vptbench run``'s; ``vptbench accuracy``'s is
:class:`bench.accuracy.job.AccuracyJob`, beside the training it runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..core.case import Case
from ..scenarios import Settings, group_metric, measure_case


class Job(Protocol):
    """The work for one case. Implementations are frozen dataclasses so that they pickle."""

    def records(self, case: Case, run_id: str, run_dir: Path) -> Iterable[dict[str, Any]]:
        """The case's records, yielded as they are measured."""
        ...

    def expected(self, case: Case) -> list[str]:
        """The metrics a finished case has records of: a killed job gets an error record for each one missing."""
        ...


@dataclass(frozen=True)
class BenchJob:
    """``vptbench run``: measure the metric groups of ``bench.scenarios.measure`` (params, flops, ...)."""

    metrics: tuple[str, ...]
    settings: Settings | None = None

    def records(self, case: Case, run_id: str, run_dir: Path) -> Iterator[dict[str, Any]]:
        yield from measure_case(case, list(self.metrics), run_id, settings=self.settings, run_dir=run_dir)

    def expected(self, case: Case) -> list[str]:
        return [group_metric(g, case.device) for g in self.metrics]
