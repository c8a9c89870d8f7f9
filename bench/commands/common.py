"""What several commands do alike: say whether the machine is fit for timing, which timings are
unstable, and write a run's report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def doctor_line(threads: int) -> None:
    """``vptbench doctor``'s verdict in one line on stderr, before anything is timed (a second or two)."""
    from ..measure import machine

    verdict = machine.Verdict([machine.check_load(threads, window_s=1.0), machine.check_reference(threads, calls=20)])
    print(f"doctor: {verdict.line()}", file=sys.stderr)


def with_allocator(settings: Any, name: str | None, *, fresh_processes: bool) -> Any:
    """``settings`` with ``--allocator`` (None keeps the preset's); UsageError for one this run cannot use."""
    import dataclasses

    from ..measure import allocator

    chosen = name or settings.allocator
    allocator.check(chosen, fresh_processes=fresh_processes)
    return dataclasses.replace(settings, allocator=chosen)


def warn_unstable(records: Iterable[dict[str, Any]]) -> None:
    """The end-of-run line on stderr when a timing is unstable (nothing when all are stable)."""
    from ..measure.timing import unstable_summary

    line = unstable_summary(records)
    if line:
        print(f"warning: {line}", file=sys.stderr)


def report_dir(args: argparse.Namespace, run_id: str) -> Path:
    """Where ``run`` writes its report: --report-out, else next to the results (OUT/report), else reports/<run_id>."""
    if getattr(args, "report_out", None):
        return Path(args.report_out)
    if args.out:
        return Path(args.out) / "report"
    return Path("reports") / run_id


def write_run_report(run_dir: Path, out: Path) -> None:
    """Write the report of ``run_dir`` into ``out`` and print its page as the command's last line."""
    from ..analysis.report import write_report  # matplotlib is imported only when a report is written

    written = write_report(run_dir, out=out)
    print(f"report: {written / 'index.html'}")  # the last line: the page to open
