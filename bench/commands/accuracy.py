"""``vptbench accuracy``: train (or load) and evaluate backbones and variants, record MPJPE, P-MPJPE, MPJVE.

Here the command plans its cases (backbones x variants at the preset's size and length, or the
one case of ``--checkpoint``), hands them to an executor with the job of
:mod:`bench.accuracy.job` (the protocol, the same for every case) and prints a summary table.

Execution: ``vptbench accuracy`` runs its cases with :mod:`bench.run.executors` (``--executor
local``, the default: a fresh process per case; ``inline``; ``slurm``), ``--shard i/n`` and
``--resume`` as ``vptbench run`` does. Each process trains on the preset's thread count (the
smoke preset: one thread, the fastest for tiny models on a shared CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import UsageError
from . import options

if TYPE_CHECKING:
    from ..accuracy.data import PoseData
    from ..accuracy.job import Preset
    from ..core.case import Case

MATRIX_OPTIONS = ("preset", "backbones", "variants", "frames", "size", "batch", "shard")


def add_parser(sub: Any, **kw: Any) -> None:
    p = sub.add_parser("accuracy", **kw, help="train/evaluate variants and record MPJPE, P-MPJPE, MPJVE")
    p.add_argument("--preset", default=None, help="smoke | full (default: smoke)")
    p.add_argument("--backbones", type=options.csv_list, default=None, help="comma list (default: every registered backbone)")
    p.add_argument("--variants", type=options.csv_list, default=None, help="comma list (default: all three)")
    options.strategy_options(p)
    p.add_argument("--frames", type=int, default=None, help="sequence length T (default: the preset's)")
    p.add_argument("--size", default=None, help="model size (default: the preset's)")
    p.add_argument("--data", choices=("synthetic", "h36m"), default="synthetic", help="the dataset")
    p.add_argument("--data-dir", default=None, help="h36m: folder of the VideoPose3D npz files")
    p.add_argument("--keypoints", choices=("cpn", "gt"), default="cpn", help="h36m: 2D from CPN detections or ground truth")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--batch", type=int, default=None, help="training batch size (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, data order and synthetic data")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    options.checkpoint_options(p, "evaluate this checkpoint instead of training (a vptbench one, or a release's file: "
                           "then --backbones and --variants take one value each)")
    p.add_argument("--out", default=None, help="run directory (default: results/<run_id>)")
    options.executor_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """``vptbench accuracy``: train/evaluate the requested cases with an executor; accuracy records."""
    import torch

    from ..accuracy.checkpoints import accuracy_checkpoint, accuracy_checkpoint_path, checkpoint_model
    from ..accuracy.job import PRESETS, AccuracyJob, load_data, load_once, synthetic_from, synthetic_keys
    from ..core import plugins
    from ..core.case import Case
    from ..core.results import read_meta, read_records
    from ..run.executors import run_cases, shard
    from ..run.store import ensure_fresh, writer

    stored = read_meta(args.out) if args.resume and args.out else {}
    preset_name = args.preset or stored.get("preset") or "smoke"  # --resume: the run's own
    if preset_name not in PRESETS:
        raise UsageError(f"unknown preset {preset_name!r}; choose from {', '.join(PRESETS)}")
    preset = PRESETS[preset_name]
    _check_device(args.device)
    if args.batch is not None and args.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {args.batch}")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    if args.frames is not None and args.frames < 1:
        raise UsageError(f"--frames must be >= 1, got {args.frames}")
    if getattr(args, "workers", None) is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    steps = args.steps or stored.get("steps") or preset.steps
    keypoints = getattr(args, "keypoints", None) or "cpn"
    executor = getattr(args, "executor", None) or "local"
    if getattr(args, "workers", None) is None:
        # Training results do not depend on what runs beside them: one single-threaded case per core.
        cpu = torch.device(getattr(args, "device", "cpu")).type == "cpu" and preset.threads == 1
        args = argparse.Namespace(**{**vars(args), "workers": (os.cpu_count() or 1) if cpu else 1})
    loader: Callable[[], PoseData]

    if args.checkpoint:
        ckpt = accuracy_checkpoint(args)  # a release's file converted, or a vptbench checkpoint as is
        try:
            cases = [Case(**(ckpt["case"] | {"device": args.device})).resolve()]
        except TypeError as e:
            raise UsageError(f"{args.checkpoint}: bad case in checkpoint ({e})") from None
        checkpoint_model(ckpt, cases[0], args.checkpoint)  # weights that do not fit: exit 2 before any run
        raw = ckpt.get("data")
        described: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if args.data == "synthetic" and described.get("source") == "synthetic":
            synthetic_keys(described)
            loader = functools.partial(synthetic_from, described)  # the test split it was trained next to
        else:
            loader = functools.partial(load_data, args.data, preset=preset, seed=args.seed, data_dir=args.data_dir,
                                       keypoints=keypoints)  # fmt: skip
    else:
        cases = plan_cases(args, preset)
        loader = functools.partial(load_data, args.data, preset=preset, seed=args.seed, data_dir=args.data_dir,
                                   keypoints=keypoints)  # fmt: skip
    if args.shard:
        cases = shard(cases, args.shard)  # UsageError for a malformed i/n
    # Loaded here too: bad data files fail before anything runs, and meta.json describes the data.
    data = load_once(loader)

    run_dir = Path(args.out) if args.out else Path("results") / new_run_id()
    with writer(run_dir):  # one writer per run directory, from here to the summary
        run_id = run_dir.name
        if args.resume:
            run_id = stored.get("run_id") or run_id  # resumed records keep the run's id
            cases = _resumed_cases(args, stored, cases)
        else:
            ensure_fresh(run_dir)
        checkpoint = accuracy_checkpoint_path(ckpt, args.checkpoint, run_dir) if args.checkpoint else None
        job = AccuracyJob(loader, steps=steps, seed=args.seed, checkpoint=checkpoint, lr=preset.lr,
                          weight_decay=preset.weight_decay, threads=preset.threads,
                          progress=executor == "inline")  # fmt: skip
        meta = {"kind": "accuracy", "preset": preset.name, "steps": steps, "seed": args.seed, "lr": preset.lr,
                "threads": preset.threads, "data": data.description, "shard": args.shard,
                "plugins": plugins.describe(), "matrix": [dataclasses.asdict(c) for c in cases]}  # fmt: skip
        before = torch.get_num_threads()
        try:
            run_cases(cases, run_dir, run_id=run_id, resume=args.resume, args=args, job=job, meta=meta)
        finally:
            torch.set_num_threads(before)  # an inline run set the preset's count in this process
        _print_summary(summary_rows(run_dir, [c.case_id for c in cases]), run_dir)
        ids = {c.case_id for c in cases}
        failed = {r["case_id"] for r in read_records(run_dir) if r["case_id"] in ids and r["status"] in ("error", "oom")}
        return 1 if failed else 0


def new_run_id() -> str:
    return time.strftime("accuracy-%Y%m%d-%H%M%S")


def _check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise UsageError(f"unknown device {device!r}; choose cpu or cuda[:N]")


def plan_cases(args: argparse.Namespace, preset: Preset) -> list[Case]:
    """The resolved cases of a run: backbones x variants at the preset's size and length."""
    import backbones

    from ..core.case import Case
    from ..run.presets import with_strategies

    names = args.backbones or backbones.names()
    variants = args.variants or list(backbones.VARIANTS)
    cases = []
    for name in names:
        try:
            spec = backbones.spec(name)
        except ValueError as e:
            raise UsageError(str(e)) from None
        # A user backbone without a 'tiny' size runs the smoke preset at its default size.
        size = args.size or (preset.size if preset.size in spec.sizes else None)
        for variant in variants:
            batch = args.batch or preset.batch_for(spec.pipeline)
            cases.append(Case(name, variant, frames=args.frames or preset.frames, batch=batch, device=args.device,
                              size=size).resolve())  # fmt: skip
    return with_strategies(cases, getattr(args, "pruners", None), getattr(args, "recoverers", None))


def _resumed_cases(args: argparse.Namespace, stored: dict[str, Any], cases: list[Case]) -> list[Case]:
    """On --resume: the run's own cases (meta.json) unless matrix options are given; those must match it."""
    from ..core.case import Case

    if not isinstance(stored.get("matrix"), list):
        return cases  # written by an older vptbench: the options decide, as before
    try:
        before = [Case(**c) for c in stored["matrix"]]
    except TypeError as e:
        raise UsageError(f"{args.out}/meta.json: malformed matrix ({e})") from None
    if args.checkpoint:
        return cases  # the checkpoint defines the case
    if not any(getattr(args, o, None) is not None for o in MATRIX_OPTIONS):
        return before
    if set(cases) != set(before):
        raise UsageError(f"these options give a different matrix ({len(cases)} cases) than {args.out}'s "
                         f"({len(before)} cases); drop them to continue the run's own")  # fmt: skip
    return cases


def summary_rows(run_dir: str | Path, case_ids: Sequence[str]) -> list[dict[str, Any]]:
    """One row per case of ``case_ids`` with accuracy records in ``run_dir`` (its latest records)."""
    from ..accuracy.evaluate import METRICS
    from ..core.results import read_records

    latest: dict[str, dict[str, dict[str, Any]]] = {}
    for r in read_records(run_dir) if (Path(run_dir) / "records.jsonl").is_file() else []:
        if r["metric"] in METRICS:
            latest.setdefault(r["case_id"], {})[r["metric"]] = r  # a resumed case: the last one counts
    return [_summary_row(latest[c]) for c in dict.fromkeys(case_ids) if c in latest]


def _summary_row(by: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from ..accuracy.evaluate import METRICS

    first = next(iter(by.values()))
    row: dict[str, Any] = {"backbone": first["backbone"], "variant": first["variant"], "T": first["frames"],
                           "size": first["size"]}  # fmt: skip
    for m in METRICS:
        rec = by.get(m)
        row[f"{m} (mm)"] = None if rec is None else rec["value"] if rec["status"] == "ok" else rec["status"]
    mpjpe = by.get("mpjpe", {})
    row["mean pose (mm)"] = mpjpe.get("mean_pose_mpjpe")
    row["train s"] = mpjpe.get("train_s")
    return row


def _print_summary(rows: list[dict[str, Any]], run_dir: Path) -> None:
    from tabulate import tabulate

    if rows:
        print(tabulate(rows, headers="keys", floatfmt=".1f"))
    print(f"records: {run_dir / 'records.jsonl'}")
