"""What several commands do alike: say which timings are unstable, and write a run's report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any


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
