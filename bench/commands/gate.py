"""``vptbench gate``: compare a run with a baseline; exit 1 on an efficiency regression."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..core.errors import UsageError


def add_parser(sub: Any, **kw: Any) -> None:
    p = sub.add_parser("gate", **kw, help="compare a run with a baseline; exit 1 on an efficiency regression")
    p.add_argument("--baseline", required=True, help="baseline records (a run directory or .jsonl)")
    p.add_argument("--current", required=True, help="the run to check (a run directory or .jsonl)")
    p.add_argument("--rules", default=None, help="TOML file of per-metric/backbone tolerances")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..analysis.gate import check_backbones, check_same_matrix, compare, format_result, load_rules
    from ..core.results import read_records

    baseline = read_records(args.baseline)
    current = read_records(args.current)
    if not baseline:
        raise UsageError(f"{args.baseline}: the baseline holds no records")
    check_same_matrix(baseline, current, args.baseline, args.current)
    rules = load_rules(args.rules)
    check_backbones(rules, {r["backbone"] for r in baseline + current}, args.rules)
    result = compare(baseline, current, rules)
    print(format_result(result), file=sys.stdout)
    return 0 if result.passed else 1
