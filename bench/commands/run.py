"""``vptbench run``: measure a matrix of cases (a preset, or the options' matrix) into a run directory, then report."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import UsageError
from . import options
from . import stream as stream_command
from .common import check_resume, doctor_line, report_dir, warn_unstable, with_allocator, write_run_report

if TYPE_CHECKING:
    from ..core.case import Case
    from ..run.presets import Preset
    from ..run.runner import RunSummary
    from ..scenarios import Settings

MATRIX_OPTIONS = ("preset", "backbones", "variants", "frames", "batch", "size", "device", "dtype", "metrics", "shard",
                  "pruners", "recoverers", "runtime", "precision")  # fmt: skip


def add_parser(sub: Any, **kw: Any) -> None:
    p = sub.add_parser("run", **kw, help="measure a matrix of cases (default: the 'paper' preset) and report")
    p.add_argument("--preset", default=None, help="smoke | paper | scaling (default: paper)")
    p.add_argument("--backbones", type=options.csv_list, default=None, help="comma list (default: every registered backbone)")
    p.add_argument("--variants", type=options.csv_list, default=None, help="comma list (default: all three)")
    options.strategy_options(p)
    p.add_argument("--frames", type=options.int_list, default=None, help="comma list of T (default: the preset's)")
    p.add_argument("--batch", type=options.int_list, default=None, help="comma list of batch sizes (default: the preset's)")
    p.add_argument("--size", default=None, help="model size for every backbone (default: the preset's)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--dtype", default=None, help="float32 | float16 | bfloat16 (default: float32)")
    p.add_argument("--metrics", type=options.metric_list, default=None, help=f"comma list of {', '.join(options.METRIC_GROUPS)} (default: the preset's, all)")
    p.add_argument("--runtime", type=options.csv_list, default=None, metavar="R,...",
                   help="runtimes to time, a comma list of eager (default), compile, onnxruntime; a matrix axis")
    options.precision_options(p)
    p.add_argument("--save-onnx", action="store_true", help="onnxruntime: keep every exported .onnx in <out>/onnx/")
    p.add_argument("--onnx-exporter", choices=("auto", "torchscript", "dynamo"), default="auto",
                   help="onnxruntime: the ONNX exporter (auto: torchscript, then dynamo if it fails)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: the preset's)")
    options.min_time_option(p)
    options.allocator_option(p)
    stream_command.stream_options(p, in_run=True)
    p.add_argument("--out", default=None, help="run directory (default: results/<run_id>)")
    p.add_argument("--report-out", default=None,
                   help="report directory (default: reports/<id> for a run in results/<id>, else OUT/report)")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--history", default=None, metavar="DIR",
                   help="when the run ends, copy its records.jsonl and meta.json into DIR/<run_id>/ (append-only; "
                        "vptbench history DIR reads it)")  # fmt: skip
    p.add_argument("--extend", action="store_true",
                   help="with --resume: add the cases of the given matrix options to the run's own")  # fmt: skip
    options.executor_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Exit 0 when every case is ok, 1 when a case failed (error or oom), 2 on bad input."""
    check_resume(args)  # before the imports: resuming nothing is answered at once
    from ..core import plugins
    from ..core.results import read_meta, read_records
    from ..measure.load import cpu_count
    from ..run import executors, store
    from ..run.runner import run_matrix

    if getattr(args, "extend", False) and not args.resume:
        raise UsageError("--extend adds cases to a run: it needs --resume and --out")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if getattr(args, "history", None):
        from ..run.archive import check_history

        check_history(args.history)
    executor = args.executor or "local"
    run_dir = Path(args.out) if args.out else None
    with store.writer(run_dir) if run_dir else contextlib.nullcontext():
        stored = read_meta(run_dir) if args.resume and run_dir else {}
        preset, cases, metrics, settings = _matrix(args, stored)
        settings = with_allocator(settings, args.allocator, fresh_processes=executor != "inline")
        settings = stream_command.apply(args, settings, metrics, cases)  # --fps ... of --metrics stream
        run_id = stored.get("run_id") or (run_dir.name if run_dir else store.default_run_id(preset.name))
        run_dir = run_dir or Path("results") / run_id
        with store.writer(run_dir):
            if not args.resume:
                store.ensure_fresh(run_dir)
            store.check_writable(run_dir)
            runtime_list = list(dict.fromkeys(c.runtime for c in cases))
            if args.save_onnx and "onnxruntime" not in runtime_list:
                raise UsageError("--save-onnx saves the models that --runtime onnxruntime exports; "
                                 "add onnxruntime to --runtime")  # fmt: skip
            save = str((run_dir / "onnx").resolve()) if args.save_onnx else None
            settings = dataclasses.replace(settings, save_onnx=save, onnx_exporter=args.onnx_exporter)
            if any(m in metrics for m in ("latency", "speedup", "train", "stream")):
                doctor_line(settings.speed.threads or cpu_count())
            meta = {"preset": preset.name, "executor": executor, "shard": args.shard or stored.get("shard"),
                    "plugins": plugins.describe(), "matrix": [dataclasses.asdict(c) for c in cases],
                    "runtimes": runtime_list}  # fmt: skip
            if executor != "inline":
                summary = executors.run_cases(
                    cases, run_dir, run_id=run_id, metrics=metrics, resume=args.resume, settings=settings,
                    meta=meta, args=args,
                )  # fmt: skip
            else:
                summary = run_matrix(
                    cases, run_dir, run_id=run_id, metrics=metrics, resume=args.resume, settings=settings,
                    meta=meta,
                )  # fmt: skip
            print(_outcome_line(summary))
            warn_unstable(read_records(summary.run_dir))
            if getattr(args, "history", None):
                from ..run.archive import archive_run

                print(f"history: {archive_run(summary.run_dir, args.history)}")
            if not args.no_report:
                write_run_report(summary.run_dir, report_dir(args, summary.run_dir))
            return 1 if failed_case_ids(run_dir, [c.case_id for c in cases]) else 0


def with_pose_settings(settings: Settings, args: argparse.Namespace) -> Settings:
    """``settings`` with ``--checkpoint`` (its absolute path, for the case processes) and ``--pose-steps``."""
    checkpoint, steps = getattr(args, "checkpoint", None), getattr(args, "pose_steps", None)
    if steps is not None and steps < 0:
        raise UsageError(f"--pose-steps must be >= 0, got {steps}")
    if checkpoint:
        path = Path(checkpoint)
        if not path.is_file():
            raise UsageError(f"--checkpoint {checkpoint}: no such file")
        settings = dataclasses.replace(settings, checkpoint=str(path.resolve()))
    return settings if steps is None else dataclasses.replace(settings, pose_steps=steps)


def _outcome_line(summary: RunSummary) -> str:
    """'12 case(s) measured, 0 already done, 1 record(s) failed in 1 case(s), 24 skipped: DIR'.

    Failed (error, oom) and skipped (a metric that does not apply: memory on onnxruntime, a length
    the backbone cannot take) are counted apart: only the first make ``run`` exit 1.
    """
    failed = [r for r in summary.failures if r["status"] in ("error", "oom")]
    skipped = len(summary.failures) - len(failed)
    line = (f"{summary.measured} case(s) measured, {summary.resumed} already done, "
            f"{len(failed)} record(s) failed in {len({r['case_id'] for r in failed})} case(s)")  # fmt: skip
    if skipped:
        line += f", {skipped} skipped (the records say why)"
    return f"{line}: {summary.run_dir}"


def failed_case_ids(run_dir: Path, case_ids: list[str]) -> set[str]:
    """The cases of ``case_ids`` with an error or oom record: they make ``run`` exit 1."""
    from ..core.results import read_records

    ids = set(case_ids)
    return {r["case_id"] for r in read_records(run_dir) if r["case_id"] in ids and r["status"] in ("error", "oom")}


def _matrix(args: argparse.Namespace, stored: dict[str, Any]) -> tuple[Preset, list[Case], list[str], Settings]:
    """The run's preset, cases, metric groups and settings: from the options, or on --resume from meta.json.

    ``--resume`` without matrix options continues the run's own matrix (``meta.json``'s); with
    them, the matrix they give must be the run's, unless ``--extend`` adds its new cases.
    """
    from ..core.case import Case
    from ..measure import runtimes
    from ..run import executors
    from ..run.presets import build_matrix, get_preset, with_min_time, with_pose_error, with_strategies, with_threads
    from ..scenarios import Settings, check_device

    given = [o for o in MATRIX_OPTIONS if getattr(args, o, None) is not None]
    if args.resume and not given and stored:
        if not isinstance(stored.get("matrix"), list) or not stored.get("preset"):
            raise UsageError(f"{args.out}/meta.json does not record the run's matrix (an older vptbench wrote it); "
                             "give the run's --preset and matrix options with --resume")  # fmt: skip
        preset = get_preset(stored["preset"])
        try:
            cases = [Case(**c) for c in stored["matrix"]]
        except TypeError as e:
            raise UsageError(f"{args.out}/meta.json: malformed matrix ({e})") from None
        settings = Settings.from_dict(stored["settings"]) if isinstance(stored.get("settings"), dict) else preset.settings
        check_device(cases[0].device if cases else "cpu")
        for runtime, device, dtype in dict.fromkeys((c.runtime, c.device, c.dtype) for c in cases):
            runtimes.check(runtime, device, dtype)  # e.g. the deploy extra uninstalled since
        settings = with_pose_settings(with_min_time(with_threads(settings, args.threads), args.min_time), args)
        return preset, cases, list(stored.get("metrics") or preset.metrics), settings
    preset = get_preset(args.preset)
    device = args.device or "cpu"
    check_device(device)
    dtype = args.dtype or "float32"
    runtime_list = list(dict.fromkeys(args.runtime or ["eager"]))
    for runtime in runtime_list:
        runtimes.check(runtime, device, dtype)  # one line naming the runtime, the extra or the dtype
    cases = build_matrix(
        preset, backbone_names=args.backbones, variants=args.variants, frames=args.frames,
        batch=args.batch, size=args.size, device=device, dtype=dtype, runtimes=runtime_list,
        precisions=getattr(args, "precision", None),
    )  # fmt: skip
    cases = with_strategies(cases, getattr(args, "pruners", None), getattr(args, "recoverers", None))
    if args.shard:
        cases = executors.shard(cases, args.shard)  # UsageError for a malformed i/n
    metrics = args.metrics or list((args.resume and stored.get("metrics")) or with_pose_error(preset.metrics, cases))
    settings = with_pose_settings(with_min_time(with_threads(preset.settings, args.threads), args.min_time), args)
    if not (args.resume and isinstance(stored.get("matrix"), list)):
        return preset, cases, metrics, settings
    before = [Case(**c) for c in stored["matrix"]]
    new = [c for c in cases if c not in set(before)]
    if list(stored.get("metrics") or []) != list(metrics):
        raise UsageError(f"--metrics {','.join(metrics)} differs from the run's ({','.join(stored.get('metrics') or [])}); "
                         "a run has one metric set: drop --metrics or choose another --out")  # fmt: skip
    if new or set(cases) != set(before):
        if not getattr(args, "extend", False):
            raise UsageError(f"these options give a different matrix ({len(cases)} cases, {len(new)} not in the run) "
                             f"than {args.out}'s ({len(before)} cases); drop them to continue the run's own, or add "
                             "--extend to add the new cases")  # fmt: skip
        cases = before + new  # --extend: the run's cases stay; the new ones are added
    return preset, cases, metrics, settings
