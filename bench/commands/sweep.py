"""``vptbench sweep BACKBONE``: every pruning schedule of a grid, its cost (and accuracy), the Pareto front."""

from __future__ import annotations

import argparse
from typing import Any

from . import options


def add_parser(sub: Any, **kw: Any) -> None:
    p = sub.add_parser("sweep", **kw, help="search pruning schedules: the cost (and accuracy) of each, the Pareto front")
    p.add_argument("backbone", help="a registered backbone (see vptbench list)")
    g = p.add_argument_group("grid (every valid schedule is measured)")
    g.add_argument("--stages", type=options.int_list, default=[1, 2], help="numbers of prune stages (default 1,2)")
    g.add_argument("--blocks", type=options.int_list, default=None, help="candidate prune blocks (default: every block)")
    g.add_argument("--keep", default="1/3,1/9", help="keeps, ratios of T (1/3, 0.25) or token counts (81); the "
                   "stages of a schedule take them in decreasing order (default 1/3,1/9)")
    g.add_argument("--pruners", type=options.csv_list, default=["tps"], help="pruners, built-in or registered (default tps)")
    g.add_argument("--per-stage-pruners", action="store_true",
                   help="every combination of --pruners over a schedule's stages (2:9:tps,5:3:tpc, ...), "
                        "not one pruner per schedule")
    g.add_argument("--recoverers", type=options.csv_list, default=["tri"], help="recoverers (default tri; none for seq2frame)")
    g.add_argument("--no-references", action="store_true",
                   help="leave out the backbone's registered defaults (rectangle, HoT, H2OT-style)")
    g = p.add_argument_group("measurement")
    g.add_argument("--size", default=None, help="default: the accuracy preset's size, else the backbone's")
    g.add_argument("--frames", type=int, default=None, help="T (default: the accuracy preset's, else canonical)")
    g.add_argument("--batch", type=int, default=1, help="batch of the efficiency measurements (default 1)")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    g.add_argument("--runtime", default="eager", help="how each schedule's forward is timed: eager, compile, onnxruntime")
    g.add_argument("--metrics", type=options.metric_list, default=["flops", "latency"],
                   help="metric groups measured for every schedule (default flops,latency)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: the preset's)")
    g = p.add_argument_group("accuracy and search")
    g.add_argument("--accuracy", default=None, metavar="smoke|full",
                   help="train and evaluate schedules with this accuracy preset (default: cost only)")
    g.add_argument("--steps", type=int, default=None, help="training steps of a fully trained schedule "
                   "(default: the preset's)")
    g.add_argument("--search", default="grid", metavar="grid|halving|optuna",
                   help="grid: train every schedule; halving: successive halving over --rungs; optuna: --trials N")
    g.add_argument("--rungs", type=int, default=3, help="successive halving: rungs (default 3)")
    g.add_argument("--trials", type=int, default=None, help="optuna: number of trials (needs the 'search' extra)")
    g.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and the initial weights")
    g.add_argument("--data", choices=("synthetic", "h36m"), default="synthetic", help="the accuracy data")
    g.add_argument("--data-dir", default=None, help="h36m: the folder of the VideoPose3D npz files")
    g = p.add_argument_group("front and budget")
    g.add_argument("--objectives", type=options.csv_list, default=None, help="minimised objectives among flops, latency, "
                   "memory, mpjpe (default: flops,mpjpe with --accuracy, else flops,latency)")
    g.add_argument("--flops-counter", dest="counter", default="paper", metavar="paper|fvcore|torch",
                   help="FLOPs counter of the objectives and --budget-gflops: paper (default), fvcore, torch")
    g.add_argument("--budget-gflops", type=float, default=None, help="print the best schedule within X GFLOPs")
    g.add_argument("--budget-ms", type=float, default=None, help="print the best schedule within X ms of latency")
    g.add_argument("--out", default=None, help="sweep directory (default: results/<run_id>)")
    g.add_argument("--report", default=None, help="report directory (default: reports/<run_id>)")
    g.add_argument("--no-report", action="store_true", help="do not write the report")
    options.executor_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..sweep.grid import cmd_sweep

    return cmd_sweep(args)
