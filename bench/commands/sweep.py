"""``vptbench sweep BACKBONE``: every pruning schedule of a grid, its cost (and accuracy), the Pareto front.

The grid's schedules (:mod:`bench.sweep.grid`) are measured by the standard harness through the
standard executors (local, inline, Slurm; ``--shard``, ``--resume``): the sweep directory is a run
directory (``records.jsonl``, ``meta.json``), so ``vptbench report``, ``merge`` and ``gate`` read it
as they read any run. ``--accuracy smoke|full`` then trains and evaluates them (:mod:`bench.sweep.search`).

Outputs: ``schedules.csv`` (every schedule: cost, accuracy, Pareto rank, reference label),
``pareto.csv`` (exactly the non-dominated schedules over the objectives), and a report where every
command puts one (``reports/<id>/`` for a sweep in ``results/<id>/``, else ``OUT/report/``, or
``--report-out``): ``index.html`` and ``index.md``, the front and, for one-stage schedules, a heat
map of cost over first prune block x keep. ``--budget-gflops X``/``--budget-ms X`` prints the best schedule
within the budget as ready options (``--variant ... --schedule ... --pruner ... --recoverer ...``).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import UsageError
from . import options
from .common import check_resume, report_dir, warn_unstable

if TYPE_CHECKING:
    from ..sweep.front import Budget
    from ..sweep.search import AccuracyPlan


def add_parser(sub: Any, **kw: Any) -> None:
    p = sub.add_parser("sweep", **kw, help="search pruning schedules: the cost (and accuracy) of each, the Pareto front")
    p.add_argument("backbone", help="a registered backbone (see vptbench list)")
    g = p.add_argument_group("grid (every valid schedule is measured)")
    g.add_argument("--stages", type=options.int_list, default=[1, 2], help="numbers of prune stages (default 1,2)")
    g.add_argument("--blocks", type=options.int_list, default=None, help="candidate prune blocks (default: every block)")
    g.add_argument("--keep", default="1/3,1/9", help="keeps, ratios of T (1/3, 0.25) or token counts (81); the "
                   "stages of a schedule take them in decreasing order (default 1/3,1/9)")
    g.add_argument("--pruners", type=options.csv_list, default=["tps"], help="pruners, a comma list of {pruners} (default tps)")
    g.add_argument("--per-stage-pruners", action="store_true",
                   help="every combination of --pruners over a schedule's stages (2:9:tps,5:3:tpc, ...), "
                        "not one pruner per schedule")
    g.add_argument("--recoverers", type=options.csv_list, default=["tri"], help="recoverers, a comma list of {recoverers} (default tri; none for seq2frame)")
    g.add_argument("--no-references", action="store_true",
                   help="leave out the backbone's registered defaults (rectangle, HoT, H2OT-style)")
    g = p.add_argument_group("measurement")
    g.add_argument("--size", default=None, help="default: the accuracy preset's size, else the backbone's")
    g.add_argument("--frames", type=int, default=None, help="T (default: the accuracy preset's, else canonical)")
    g.add_argument("--batch", type=int, default=1, help="batch of the efficiency measurements (default 1)")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    g.add_argument("--runtime", default="eager", help="how each schedule's forward is timed: eager, compile, onnxruntime")
    options.precision_options(g)
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
    g.add_argument("--report-out", "--report", dest="report_out", default=None,
                   help="report directory (default: reports/<id> for a sweep in results/<id>, else OUT/report; "
                        "--report is the older name)")
    g.add_argument("--no-report", action="store_true", help="do not write the report")
    options.executor_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """``vptbench sweep BACKBONE``: enumerate, measure, (train), write the front, report, pick for a budget."""
    check_resume(args, "sweep")  # before the imports: resuming nothing is answered at once
    import backbones

    from ..core.case import PRECISION_DTYPES
    from ..core.results import read_meta, read_records
    from ..run import executors
    from ..run.presets import check_precisions, get_preset, with_threads
    from ..run.store import check_writable, default_run_id, ensure_fresh
    from ..scenarios import check_device
    from ..sweep.front import (
        best_within,
        budget_line,
        cost_columns,
        front,
        front_text,
        mark_front,
        ready_options,
        sweep_table,
    )
    from ..sweep.grid import (
        Grid,
        count_line,
        enumerate_schedules,
        model_depth,
        parse_keeps,
        reference_candidates,
        with_references,
    )
    from ..sweep.search import run_accuracy
    from .run import with_pose_settings

    try:
        spec = backbones.spec(args.backbone)
    except ValueError as e:
        raise UsageError(str(e)) from None
    check_device(args.device)
    _check_options(args)
    size, frames = _size_and_frames(args, spec)
    objectives = _objectives(args, bool(args.accuracy))
    cols = cost_columns(args.counter)
    obj_cols = [cols[o] for o in objectives]
    budget = _budget(args, cols["flops"])

    grid = Grid(stages=tuple(args.stages), blocks=tuple(args.blocks) if args.blocks else None,
                keeps=parse_keeps(args.keep), pruners=tuple(args.pruners), recoverers=tuple(args.recoverers),
                per_stage_pruners=args.per_stage_pruners)  # fmt: skip
    depth = model_depth(args.backbone, frames, size)
    where = {"frames": frames, "size": size, "batch": args.batch, "device": args.device, "depth": depth}
    cands = enumerate_schedules(args.backbone, grid, **where)
    refs, notes = ([], []) if args.no_references else reference_candidates(args.backbone, **where)
    if args.runtime != "eager":  # every schedule timed on that runtime (bench.measure.runtimes); accuracy trains eager
        from ..measure import runtimes

        if args.accuracy:
            raise UsageError(f"--runtime {args.runtime} with --accuracy: schedules are trained and evaluated in eager "
                             "mode; time them on another runtime in a sweep without --accuracy")  # fmt: skip
        runtimes.check(args.runtime, args.device, "float32")
        cands, refs = ([replace(c, case=replace(c.case, runtime=args.runtime).resolve()) for c in group]
                       for group in (cands, refs))  # fmt: skip
    precisions = check_precisions(args.precision)
    if precisions != ["fp32"]:  # every schedule in every precision: the front may mix them (deployment options)
        if args.accuracy:
            raise UsageError(f"--precision {','.join(precisions)} with --accuracy: schedules are trained and "
                             "evaluated in fp32; measure pose_error (--metrics ...,pose_error) in a sweep "
                             "without --accuracy")  # fmt: skip
        cands, refs = ([replace(c, case=replace(c.case, precision=p, dtype=PRECISION_DTYPES[p]).resolve())
                        for c in group for p in precisions] for group in (cands, refs))  # fmt: skip
    everything = with_references(cands, refs)
    extra_refs = sum(not c.keeps for c in everything)
    print(f"sweep {args.backbone} ({size}, T={frames}, depth {depth}): {count_line(cands)}"
          f"{f' + {extra_refs} reference case(s)' if extra_refs else ''}", file=sys.stderr)  # fmt: skip
    for note in notes:
        print(f"  {note}", file=sys.stderr)
    if not cands:
        raise UsageError("the grid has no valid schedule (keeps must fall below the tokens entering each stage, "
                         f"blocks lie in 0..{depth - 1})")  # fmt: skip

    run_id = default_run_id(f"sweep-{args.backbone}")
    out = Path(args.out) if args.out else Path("results") / run_id
    if args.resume:
        run_id = read_meta(out).get("run_id") or out.name
    else:
        ensure_fresh(out)
    check_writable(out)
    cases = [c.case for c in everything]
    if args.shard:
        cases = executors.shard(cases, args.shard)
        chosen = set(cases)
        everything = [c for c in everything if c.case in chosen]
    settings = with_threads(get_preset("smoke" if size == "tiny" else "paper").settings, args.threads)
    settings = with_pose_settings(settings, args)
    plan = _accuracy_plan(args, out, run_id)
    meta = {"kind": "sweep", "backbone": args.backbone, "size": size, "frames": frames, "depth": depth,
            "grid": grid.describe(), "schedules": len(cands), "references": [c.reference for c in everything
                                                                              if c.reference],
            "objectives": objectives, "flops_counter": args.counter, "search": args.search,
            "accuracy": args.accuracy, "steps": plan.steps if plan else None, "shard": args.shard,
            "precisions": precisions}  # fmt: skip
    summary = executors.run_cases(cases, out, run_id=run_id, metrics=args.metrics, resume=args.resume,
                                  settings=settings, meta=meta, args=args)  # fmt: skip
    print(f"efficiency: {summary.measured} case(s) measured, {summary.resumed} already done: {out}", file=sys.stderr)
    records = read_records(out) if (out / "records.jsonl").is_file() else []
    warn_unstable(records)  # as run and profile do: a front drawn from unstable latencies says so
    table = sweep_table(everything, records)
    accuracy = None
    if plan:
        accuracy = run_accuracy(args, plan, everything, table, budget, [c for c in obj_cols if c != "mpjpe_mm"])
        table = sweep_table(everything, records, accuracy)

    table = mark_front(table, obj_cols)
    table.to_csv(out / "schedules.csv", index=False)
    pareto = front(table, obj_cols)
    pareto.to_csv(out / "pareto.csv", index=False)
    print(f"pareto.csv: {len(pareto)} non-dominated of {int(table[obj_cols].notna().all(axis=1).sum())} "
          f"schedule(s) with every objective ({', '.join(obj_cols)}): {out / 'pareto.csv'}")  # fmt: skip
    print(front_text(pareto, obj_cols))
    pick = best_within(table, budget, cols["flops"]) if budget else None
    if budget and pick:
        print(budget_line(pick, budget, cols["flops"], args.backbone, size, frames))
    if args.shard:
        print(f"--shard {args.shard}: this front covers the shard only; merge the shards (vptbench merge) and run "
              "the same sweep with --out MERGED --resume for the whole front", file=sys.stderr)  # fmt: skip
    if not args.no_report:
        from ..sweep.plots import write_sweep_report

        path = write_sweep_report(table, pareto, obj_cols, report_dir(args, out), title=f"{args.backbone} ({size}, T={frames})",
                                  meta=meta, budget=budget, pick=pick,
                                  pick_options=ready_options(pick[0]) if pick and pick[0] is not None else "")  # fmt: skip
        print(f"report: {path}")
    failed = summary.failures or (accuracy and any(math.isnan(v["mpjpe"]) for v in accuracy.values()))
    return 1 if failed else 0


def _check_options(args: argparse.Namespace) -> None:
    """The option errors found before anything is built (UsageError, one line)."""
    import backbones

    from ..accuracy.job import PRESETS
    from ..sweep.front import COUNTERS
    from ..sweep.search import SEARCHES, require_optuna

    if args.search not in SEARCHES:
        raise UsageError(f"--search {args.search!r}: choose from {', '.join(SEARCHES)}")
    if args.search != "grid" and not args.accuracy:
        raise UsageError(f"--search {args.search} ranks schedules by accuracy: add --accuracy smoke|full")
    if args.accuracy and args.accuracy not in PRESETS:
        raise UsageError(f"--accuracy {args.accuracy!r}: choose from {', '.join(PRESETS)}")
    if args.search == "optuna":
        require_optuna()
        if args.trials is None or args.trials < 1:
            raise UsageError("--search optuna needs --trials N (N >= 1)")
    if args.shard and args.search != "grid":
        raise UsageError(f"--shard splits a grid; --search {args.search} decides each step from the one before")
    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {args.batch}")
    if args.counter not in COUNTERS:
        raise UsageError(f"--flops-counter {args.counter!r}: choose from {', '.join(COUNTERS)}")
    for name, given, known in (("--pruners", args.pruners, backbones.pruners()),
                               ("--recoverers", args.recoverers, backbones.recoverers())):  # fmt: skip
        bad = [p for p in given if p not in known]
        if bad or not given:
            raise UsageError(f"{name} {bad[0] if bad else ''!r}: choose from {', '.join(known)}")


def _size_and_frames(args: argparse.Namespace, spec: Any) -> tuple[str, int]:
    """``--size``/``--frames``, else the accuracy preset's, else the backbone's; UsageError if it cannot take them."""
    from ..accuracy.job import PRESETS

    preset = PRESETS[args.accuracy] if args.accuracy else None
    size = args.size or (preset.size if preset and preset.size in spec.sizes else None) or spec.default_size
    frames = args.frames or (preset.frames if preset else None) or spec.frames
    if size not in spec.sizes:
        raise UsageError(f"unknown size {size!r} for {args.backbone}; choose from {', '.join(spec.sizes)}")
    reason = spec.valid_frames(frames)
    if reason:
        raise UsageError(f"{args.backbone} cannot take {frames} frames: {reason}")
    return size, frames


def _objectives(args: argparse.Namespace, accuracy: bool) -> list[str]:
    from ..sweep.front import OBJECTIVES

    objectives = list(args.objectives or (["flops", "mpjpe"] if accuracy else ["flops", "latency"]))
    bad = [o for o in objectives if o not in OBJECTIVES]
    if bad:
        raise UsageError(f"--objectives {bad[0]!r}: choose from {', '.join(OBJECTIVES)}")
    if len(set(objectives)) != len(objectives):
        raise UsageError(f"--objectives {','.join(objectives)}: an objective is named twice")
    if "mpjpe" in objectives and not accuracy:
        raise UsageError("--objectives mpjpe needs --accuracy smoke|full (accuracy is measured by training)")
    need = {"flops": "flops", "latency": "latency", "memory": "memory"}
    for o in objectives:
        if o in need and need[o] not in args.metrics:
            raise UsageError(f"--objectives {o} needs --metrics to include {need[o]} (got {','.join(args.metrics)})")
    if len(objectives) < 2:
        raise UsageError(f"--objectives {','.join(objectives)}: a front needs two or more, e.g. flops,latency")
    return objectives


def _budget(args: argparse.Namespace, flops_col: str) -> Budget | None:
    from ..sweep.front import Budget

    limits = []
    if args.budget_gflops is not None:
        limits.append((flops_col, float(args.budget_gflops)))
    if args.budget_ms is not None:
        limits.append(("latency_ms", float(args.budget_ms)))
    for col, v in limits:
        if not v > 0:
            raise UsageError(f"--budget {v:g} for {col}: a budget must be > 0")
    if args.budget_gflops is not None and "flops" not in args.metrics:
        raise UsageError("--budget-gflops needs --metrics to include flops")
    if args.budget_ms is not None and "latency" not in args.metrics:
        raise UsageError("--budget-ms needs --metrics to include latency")
    return Budget(tuple(limits)) if limits else None


def _accuracy_plan(args: argparse.Namespace, out: Path, run_id: str) -> AccuracyPlan | None:
    if not args.accuracy:
        return None
    from ..accuracy.job import PRESETS, load_data
    from ..sweep.search import ACCURACY_DIR, AccuracyPlan

    preset = PRESETS[args.accuracy]
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    loader = functools.partial(load_data, args.data, preset=preset, seed=args.seed, data_dir=args.data_dir)
    workers = args.workers
    if workers is None:  # as vptbench accuracy: one single-threaded training per core on the CPU
        cpu = args.device == "cpu" and preset.threads == 1
        workers = (os.cpu_count() or 1) if cpu else 1
    acc_args = argparse.Namespace(**{**vars(args), "workers": workers})
    return AccuracyPlan(preset=preset, steps=args.steps or preset.steps, seed=args.seed, loader=loader,
                        args=acc_args, resume=args.resume, root=out / ACCURACY_DIR, run_id=run_id)  # fmt: skip
