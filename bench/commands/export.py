"""``vptbench export RUN_DIR --format F --out FILE``: a run in the JSON a CI dashboard reads."""

from __future__ import annotations

import argparse
from typing import Any

from . import options

FORMATS = ("github-action-benchmark", "bencher", "pytest-benchmark")  # bench.analysis.export.FORMATS


def add_parser(sub: Any, **kw: Any) -> None:
    p = sub.add_parser("export", **kw, help="a run as github-action-benchmark, Bencher (BMF) or pytest-benchmark JSON")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (or its records.jsonl)")
    p.add_argument("--format", required=True, metavar="FORMAT",
                   help=f"{' | '.join(FORMATS)}; github-action-benchmark writes FILE (customSmallerIsBetter: times, "
                        "memory, params, FLOPs) and FILE with .bigger before its suffix (customBiggerIsBetter: "
                        "speed-up, FPS)")  # fmt: skip
    p.add_argument("--out", required=True, metavar="FILE", help="the JSON file to write")
    p.add_argument("--metrics", type=options.csv_list, default=None, metavar="METRIC,...",
                   help="metric names (default: params, FLOPs, timings, FPS, peak memory)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..analysis.export import export_run

    for path in export_run(args.run_dir, args.format, args.out, args.metrics):
        print(f"wrote {path}")
    return 0
