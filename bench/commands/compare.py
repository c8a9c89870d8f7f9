"""``vptbench compare RUN_A RUN_B [...]``: runs side by side, ratios per metric with CIs, changes starred
(bench.analysis.compare says when); always exits 0."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..core.errors import UsageError


def add_parser(sub: Any, **kw: Any) -> None:
    p = sub.add_parser("compare", **kw, help="runs side by side: ratios per metric with CIs; always exits 0")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories or records.jsonl files; the first is the reference")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true", help="print a Markdown table (changes in bold)")
    fmt.add_argument("--csv", action="store_true", help="print CSV, full precision")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Always exits 0 (the gate judges)."""
    from ..analysis.compare import CHANGED, UNCONFIRMED, compare_runs, format_rows, legend
    from ..core.results import read_records

    if len(args.runs) < 2:
        raise UsageError("compare needs at least two runs (run directories or records.jsonl files)")
    runs = [read_records(r) for r in args.runs]
    for path, recs in zip(args.runs, runs, strict=True):
        if not recs:
            raise UsageError(f"{path}: the run holds no records to compare")
    names = [_name(r) for r in args.runs]
    if len(set(names)) < len(names):
        names = [f"{chr(ord('A') + i)}:{n}" for i, n in enumerate(names)]
    rows, only = compare_runs(runs)
    style = "csv" if args.csv else "github" if args.markdown else "simple"
    if style == "csv":
        print(format_rows(rows, names, style), end="")
        return 0
    if not rows:
        print(f"no case of {names[0]} was measured in the other run(s): nothing to compare side by side")
    else:
        print(format_rows(rows, names, style))
        changed = sum(CHANGED in r.marks for r in rows)
        unconfirmed = sum(UNCONFIRMED in r.marks and CHANGED not in r.marks for r in rows)
        print(f"\n{len(rows)} measurement(s) compared: {changed} changed ({CHANGED}), {unconfirmed} to confirm "
              f"({UNCONFIRMED}).\n{legend(style)}")  # fmt: skip
    for name, cases in zip(names, only, strict=True):
        if cases:
            print(f"only in {name}: {len(cases)} case(s), e.g. {sorted(cases)[0]}")
    return 0


def _name(path: str) -> str:
    p = Path(path)
    return p.parent.name if p.name == "records.jsonl" else p.name
