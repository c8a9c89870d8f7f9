"""``vptbench history RUN_DIR|GLOB ...``: runs across commits, a trend chart per (case, metric), the steps."""

from __future__ import annotations

import argparse
from typing import Any

from . import options


def add_parser(sub: Any, **kw: Any) -> None:
    p = sub.add_parser("history", **kw, help="runs across commits: a trend chart per (case, metric), steps detected; "
                                             "always exits 0")  # fmt: skip
    p.add_argument("runs", nargs="+", metavar="RUN_DIR|GLOB",
                   help="run directories, directories of runs (run --history DIR), or globs of either (quote them)")
    p.add_argument("--out", default=None, help="directory of index.html and history.csv (default: reports/history)")
    p.add_argument("--backbones", type=options.csv_list, default=None, help="comma list (default: all in the runs)")
    p.add_argument("--variants", type=options.csv_list, default=None, help="comma list (default: all in the runs)")
    p.add_argument("--metrics", type=options.csv_list, default=None, metavar="METRIC,...",
                   help="metric names, e.g. latency,speedup,flops (default: params, FLOPs, timings, peak memory)")
    p.add_argument("--machine", default=None,
                   help="only this machine: its id (as the page shows it) or part of its name (host, CPU, GPU)")
    p.add_argument("--sustain", type=int, default=2,
                   help="runs in a row that must leave the level for a step (params/FLOPs: always 1)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Print the steps, write the page; exit 0 whatever it finds (the gate decides)."""
    from ..analysis.history import build_history, steps_table
    from ..analysis.history_page import write_history

    h = build_history(args.runs, backbones=args.backbones, variants=args.variants, metrics=args.metrics,
                      machine=args.machine, sustain=args.sustain)  # fmt: skip
    out = write_history(h, args.out)
    print(steps_table(h))
    print(f"history: {out / 'index.html'}")
    print(f"         {out / 'history.csv'} (one row per run x case x metric)")
    return 0
