"""``vptbench report RUN_DIR``: tables and plots of a run, joined with accuracy."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any, **kw: Any) -> None:
    p = sub.add_parser("report", **kw, help="tables and plots of a run, joined with accuracy")
    p.add_argument("run_dir", help="a run directory (or its records.jsonl)")
    p.add_argument("--accuracy", nargs="*", default=None, metavar="SRC",
                   help="accuracy records (run dirs or records.jsonl) or 'reported' (the papers' table)")
    p.add_argument("--report-out", "--out", dest="report_out", default=None,
                   help="report directory (default: reports/<id> for a run in results/<id>, else RUN_DIR/report; "
                        "--out is the older name)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Write the report, print where it is."""
    from ..analysis.report import write_report

    out = write_report(args.run_dir, accuracy=args.accuracy, out=args.report_out)
    print(f"report: {out / 'index.html'}")
    print(f"        {out / 'index.md'} (tables), {out / 'summary.csv'} (numbers)")
    return 0
