"""What several commands do alike: check a --resume, say whether the machine is fit for timing, which
timings are unstable, and write a run's report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..core.errors import UsageError


def check_resume(args: argparse.Namespace, what: str = "run") -> None:
    """On ``--resume``: ``--out`` must name a run that exists; resuming nothing is a mistake, not a fresh run.

    Checked from the paths alone, before the library (and torch) is imported, so the mistake is
    answered at once rather than after minutes of a run the user did not ask for.
    """
    if not getattr(args, "resume", False):
        return
    if not args.out:
        raise UsageError(f"--resume needs --out: the {what} directory to continue")
    out = Path(args.out)
    # what a run leaves from its first moment on (writer.lock) to its end (bench.run.store)
    if not any((out / name).exists() for name in ("meta.json", "records.jsonl", "writer.lock", "parts", "done.txt")):
        detail = "" if not out.exists() else " (it holds no meta.json, records.jsonl or writer.lock)"
        raise UsageError(f"{out}: no {what} to resume{detail}; drop --resume to start one there")


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
    from ..analysis.stability import unstable_summary

    line = unstable_summary(records)
    if line:
        print(f"warning: {line}", file=sys.stderr)


def report_dir(args: argparse.Namespace, run_dir: Path) -> Path:
    """Where a command writes the report of ``run_dir``: ``--report-out``, else the one rule of
    :func:`bench.analysis.report.default_report_dir` (``results/<id>`` -> ``reports/<id>``, any other
    directory D -> ``D/report``). Path arithmetic only: matplotlib is not imported for it."""
    if getattr(args, "report_out", None):
        return Path(args.report_out)
    from ..analysis.report import default_report_dir

    return default_report_dir(run_dir)


def write_run_report(run_dir: Path, out: Path) -> None:
    """Write the report of ``run_dir`` into ``out`` and print its page as the command's last line."""
    from ..analysis.report import write_report  # matplotlib is imported only when a report is written

    written = write_report(run_dir, out=out)
    print(f"report: {written / 'index.html'}")  # the last line: the page to open
