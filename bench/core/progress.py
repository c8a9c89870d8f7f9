"""How a running case is going, passed from the process that runs it to the executor's bar.

A case run by the local executor lives in a subprocess whose own progress bars go to its log.
While the case runs, :func:`report_progress` keeps one short line ("320/600 loss 95.1mm",
"latency") in a file of the case's part; the parent reads it with :func:`read_progress` and shows
it beside the case. Outside a case (a test, a notebook) reporting is a no-op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

FILE = "progress.txt"  # in a running case's part directory
_current: Path | None = None  # the file of the case this process runs, while it runs


@contextlib.contextmanager
def reporting_to(part: Path) -> Iterator[None]:
    """Send :func:`report_progress` lines to ``part`` while the block runs."""
    global _current
    before, _current = _current, part / FILE
    try:
        yield
    finally:
        _current = before


def report_progress(text: str) -> None:
    """Say in a few words how the running case is going. Never fails the case (its part may be gone)."""
    if _current is None:
        return
    tmp = _current.with_suffix(".tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, _current)  # a reader sees the old line or the new one, whole


def read_progress(part: Path) -> str:
    """The latest line reported into ``part``; '' if none (or the part is closed)."""
    try:
        return (part / FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return ""
