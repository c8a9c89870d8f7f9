"""``vptbench list``, ``vptbench profile`` and ``vptbench run``: parse-level checks, then the library.

Every user mistake is found before anything is measured and raised as UsageError (the CLI prints
one line and exits 2): unknown backbone, variant, pruner, recoverer, size or preset, a bad
schedule, frames a backbone cannot take, a device this machine lacks, an unwritable or already
used output directory, a malformed ``--shard``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from tabulate import tabulate

import backbones
from backbones.official import parameters_on_meta

from ..core import numbers, plugins
from ..core.case import Case
from ..core.errors import UsageError
from ..core.results import read_meta, read_records
from ..measure import runtimes
from ..measure.timing import unstable_summary
from ..run import executors, store
from ..run.presets import Preset, build_matrix, get_preset, with_strategies
from ..run.runner import RunSummary, run_matrix
from ..run.store import ensure_fresh
from ..scenarios.measure import METRIC_GROUPS, Settings, check_device, measure_case

# --------------------------------------------------------------------------- list


def _build_light(name: str, variant: str) -> nn.Module:
    """The canonical model with its parameters on the meta device (see ``backbones.official.parameters_on_meta``)."""
    try:
        with parameters_on_meta():
            return backbones.create(name, variant=variant)
    except Exception:  # a constructor that needs real parameter values: build it for real
        return backbones.create(name, variant=variant)


def describe_backbones() -> list[dict[str, Any]]:
    """Every registered backbone with its variants' default schedules resolved at canonical T."""
    out = []
    for name in backbones.names():
        spec = backbones.spec(name)
        variants = {}
        for variant, v in spec.variants.items():
            model: Any = _build_light(name, variant)
            tokens = model.tokens
            variants[variant] = {
                "schedule": tokens.schedule_text,
                "pruner": tokens.pruner,
                "recoverer": tokens.recoverer,
                "embed_kept": v.embed_kept,
                "token_profile": list(model.token_profile),
                "params": sum(p.numel() for p in model.parameters()),
            }
        out.append({
            "name": name, "pipeline": spec.pipeline, "in_channels": spec.in_channels, "frames": spec.frames,
            "sizes": {k: dict(kw) for k, kw in spec.sizes.items()}, "default_size": spec.default_size,
            "source": spec.source, "variants": variants,
        })  # fmt: skip
    return out


def _runs(profile: list[int]) -> str:
    """[243, 243, 81, 81, 81] -> '243x2 81x3' (the token hourglass, compactly)."""
    parts: list[str] = []
    prev, count = None, 0
    for t in [*profile, None]:
        if t == prev:
            count += 1
            continue
        if prev is not None:
            parts.append(f"{prev}x{count}")
        prev, count = t, 1
    return " ".join(parts)


def describe_strategies() -> dict[str, list[dict[str, Any]]]:
    """The registered pruners and recoverers with their one-line descriptions (built-ins first)."""
    return {
        "pruners": [
            {"name": n, "attention": backbones.pruner_spec(n).attention, "doc": _first_line(backbones.pruner_spec(n).doc)}
            for n in backbones.pruners()
        ],
        "recoverers": [{"name": n, "doc": _first_line(backbones.recoverer_spec(n).doc)} for n in backbones.recoverers()],
    }


def _first_line(doc: str) -> str:
    return doc.strip().splitlines()[0] if doc.strip() else ""


def cmd_list(args: argparse.Namespace) -> int:
    what = getattr(args, "what", None)
    if what in ("pruners", "recoverers"):
        items = describe_strategies()[what]
        if args.json:
            print(json.dumps(items, indent=2))
        else:
            print(tabulate([[i["name"], "yes" if i.get("attention") else "", i["doc"]] for i in items]
                           if what == "pruners" else [[i["name"], i["doc"]] for i in items],
                           headers=["pruner", "attention", "what it does"] if what == "pruners"
                           else ["recoverer", "what it does"], disable_numparse=True))  # fmt: skip
        return 0
    info = describe_backbones()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    rows = []
    for b in info:
        sizes = ", ".join(f"{s}*" if s == b["default_size"] else s for s in b["sizes"])
        for variant, v in b["variants"].items():
            how = f"{v['pruner']}+{v['recoverer'] or '-'}" if v["pruner"] else ""
            rows.append([b["name"], b["pipeline"], b["in_channels"], b["frames"], sizes, variant,
                         v["schedule"], how, numbers.count(v["params"]), _runs(v["token_profile"])])  # fmt: skip
    headers = ["backbone", "pipeline", "C_in", "T", "sizes (* default)", "variant", "schedule",
               "pruner+recoverer", "params", "tokens per block"]  # fmt: skip
    print(tabulate(rows, headers=headers, disable_numparse=True))
    print("\nschedule = BLOCK:KEEP[:PRUNER],... at the canonical T (the registered keeps are ratios of T).")
    if what is None:
        for kind in ("pruners", "recoverers"):
            print()
            cmd_list(argparse.Namespace(what=kind, json=False))
    return 0


# --------------------------------------------------------------------------- profile


def cmd_profile(args: argparse.Namespace) -> int:
    if getattr(args, "checkpoint", None):
        from ..accuracy.checkpoints import profile_model

        check_device(args.device)
        model, case = profile_model(args)  # a release's file or a vptbench checkpoint: its model, its case
    else:
        case = Case(
            backbone=args.backbone, variant=args.variant or "rectangle", frames=args.frames, batch=args.batch,
            device=args.device, dtype=args.dtype, size=args.size, schedule=args.schedule,
            pruner=args.pruner, recoverer=args.recoverer, runtime=args.runtime,
        ).resolve()
        check_device(case.device)
        torch.manual_seed(0)
        model = case.build()  # UsageError for what only the model knows (e.g. a block beyond the depth)
    if case.runtime != args.runtime:  # a checkpoint's case
        case = dataclasses.replace(case, runtime=args.runtime)
    runtimes.check(case.runtime, case.device, case.dtype)
    if not args.json:
        print(f"profiling {case.case_id} ...", file=sys.stderr)
    # The effort of the preset this case would belong to: tiny sizes are smoke tests.
    settings = with_threads(get_preset("smoke" if case.size == "tiny" else "paper").settings, args.threads)
    settings = with_min_time(settings, args.min_time)
    settings = dataclasses.replace(settings, save_onnx=args.save_onnx, onnx_exporter=args.onnx_exporter)
    metrics = args.metrics if args.metrics is not None else ([] if args.trace else list(METRIC_GROUPS))
    if args.trace:
        write_profile_trace(case, model, args.trace, settings)
        if not args.json:
            print(f"trace of {case.case_id} written to {args.trace} (open it in ui.perfetto.dev)", file=sys.stderr)
        if not metrics:
            return 0
    records = list(measure_case(case, metrics, "profile", settings=settings, model=model))
    if args.json:
        print(json.dumps(records))
    else:
        print(format_records(case, records))
    _warn_unstable(records)
    return 0


def _warn_unstable(records: Iterable[dict[str, Any]]) -> None:
    line = unstable_summary(records)
    if line:
        print(f"warning: {line}", file=sys.stderr)


def write_profile_trace(case: Case, model: nn.Module, path: str, settings: Settings) -> None:
    """The case's trace (bench.measure.breakdown.write_trace) under the preset's speed settings."""
    from ..measure import breakdown, timing
    from ..scenarios.measure import example_inputs

    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as e:
        raise UsageError(f"--trace {path}: cannot write there ({e.strerror or e})") from None
    model = model.to(case.device, getattr(torch, case.dtype))
    x, _ = example_inputs(case, model)
    with timing.applied(settings.speed):
        breakdown.write_trace(model, x, path, backbone=case.backbone, device=case.device)


def _value_and_unit(r: dict[str, Any]) -> tuple[str, str]:
    """A record's value for people (counts with separators, units scaled, a CI where timed) and its unit."""
    value, unit = r["value"], str(r.get("unit") or "")
    if value is None:
        return "-", unit
    if unit == "count":
        return numbers.count(value), unit
    x, new_unit = numbers.scaled(float(value), unit)
    factor = x / float(value) if value else 1.0
    low, high = r.get("ci_low"), r.get("ci_high")
    if numbers.finite(low) and numbers.finite(high):
        return numbers.with_ci(x, low * factor, high * factor), new_unit
    return numbers.sig(x), new_unit


def format_records(case: Case, records: list[dict[str, Any]]) -> str:
    """A readable summary of one case's records: the metrics, then FLOPs per block."""
    rows = []
    for r in records:
        if r["metric"] == "flops_block":
            continue
        where = r.get("phase") or ""
        note = r["error"] if r["status"] != "ok" else ""
        if r["status"] == "ok" and r.get("stable") is False:
            note = f"unstable: {r.get('unstable_reason', '')}"
        rows.append([r["metric"], *_value_and_unit(r), r["method"], where, r["status"], note])
    headers = ["metric", "value [95 % CI]", "unit", "method", "phase", "status", "note"]
    text = [case.case_id, "", tabulate(rows, headers=headers, disable_numparse=True, colalign=("left", "right"))]
    blocks = [r for r in records if r["metric"] == "flops_block" and r["status"] == "ok"]
    if blocks:
        unit, factor = numbers.column_unit([r["value"] for r in blocks], "GFLOPs")
        text += ["", tabulate([[r["block"], r["tokens"], numbers.sig(r["value"] * factor)] for r in blocks],
                              headers=["block", "tokens", f"{unit} (fvcore)"], disable_numparse=True)]  # fmt: skip
    unsupported = next((r.get("unsupported") for r in records if r["metric"] == "flops" and r["method"] == "fvcore"), None)
    if unsupported:
        text += ["", "fvcore could not count: " + ", ".join(f"{k} x{v}" for k, v in unsupported.items())]
    return "\n".join(text)


# --------------------------------------------------------------------------- run


def with_threads(settings: Settings, threads: int | None) -> Settings:
    """``settings`` with the CPU thread count of ``--threads`` (None keeps the preset's)."""
    if threads is None:
        return settings
    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    return dataclasses.replace(settings, speed=dataclasses.replace(settings.speed, threads=threads))


def with_min_time(settings: Settings, min_time: float | None) -> Settings:
    """``settings`` timing each timed metric at least ``min_time`` s and up to 3x that (``--min-time``)."""
    if min_time is None:
        return settings

    def most(old: float | None, old_min: float) -> float:
        return max(old if old is not None else old_min, 3 * min_time)

    return dataclasses.replace(
        settings, min_time_s=min_time, max_time_s=most(settings.max_time_s, settings.min_time_s),
        train_min_time_s=min_time, train_max_time_s=most(settings.train_max_time_s, settings.train_min_time_s),
        max_repeats=max(settings.max_repeats, 1000),
    )


def default_run_id(preset: str) -> str:
    return f"{preset}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"cannot write to --out {run_dir}: {e.strerror or e}") from None


MATRIX_OPTIONS = ("preset", "backbones", "variants", "frames", "batch", "size", "device", "dtype", "metrics", "shard",
                  "pruners", "recoverers", "runtime")  # fmt: skip


def cmd_run(args: argparse.Namespace) -> int:
    """``vptbench run``: exit 0 when every case is ok, 1 when a case failed (error or oom), 2 on bad input."""
    if args.resume and not args.out:
        raise UsageError("--resume needs --out: the run directory to continue")
    if getattr(args, "extend", False) and not args.resume:
        raise UsageError("--extend adds cases to a run: it needs --resume and --out")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    executor = args.executor or "local"
    run_dir = Path(args.out) if args.out else None
    with store.writer(run_dir) if run_dir else contextlib.nullcontext():
        stored = read_meta(run_dir) if args.resume and run_dir else {}
        preset, cases, metrics, settings = _matrix(args, stored)
        run_id = stored.get("run_id") or (run_dir.name if run_dir else default_run_id(preset.name))
        run_dir = run_dir or Path("results") / run_id
        with store.writer(run_dir):
            if not args.resume:
                ensure_fresh(run_dir)
            _check_writable(run_dir)
            runtime_list = list(dict.fromkeys(c.runtime for c in cases))
            if args.save_onnx and "onnxruntime" not in runtime_list:
                raise UsageError("--save-onnx saves the models that --runtime onnxruntime exports; "
                                 "add onnxruntime to --runtime")  # fmt: skip
            save = str((run_dir / "onnx").resolve()) if args.save_onnx else None
            settings = dataclasses.replace(settings, save_onnx=save, onnx_exporter=args.onnx_exporter)
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
            _warn_unstable(read_records(summary.run_dir))
            if not args.no_report:
                _report(summary.run_dir, report_dir(args, run_id))
            return 1 if failed_case_ids(run_dir, [c.case_id for c in cases]) else 0


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
    ids = set(case_ids)
    return {r["case_id"] for r in read_records(run_dir) if r["case_id"] in ids and r["status"] in ("error", "oom")}


def _matrix(args: argparse.Namespace, stored: dict[str, Any]) -> tuple[Preset, list[Case], list[str], Settings]:
    """The run's preset, cases, metric groups and settings: from the options, or on --resume from meta.json.

    ``--resume`` without matrix options continues the run's own matrix (``meta.json``'s); with
    them, the matrix they give must be the run's, unless ``--extend`` adds its new cases.
    """
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
        settings = with_min_time(with_threads(settings, args.threads), args.min_time)
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
    )  # fmt: skip
    cases = with_strategies(cases, getattr(args, "pruners", None), getattr(args, "recoverers", None))
    if args.shard:
        cases = executors.shard(cases, args.shard)  # UsageError for a malformed i/n
    metrics = args.metrics or list((args.resume and stored.get("metrics")) or preset.metrics)
    settings = with_min_time(with_threads(preset.settings, args.threads), args.min_time)
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


def report_dir(args: argparse.Namespace, run_id: str) -> Path:
    """Where ``run`` writes its report: --report-out, else next to the results (OUT/report), else reports/<run_id>."""
    if getattr(args, "report_out", None):
        return Path(args.report_out)
    if args.out:
        return Path(args.out) / "report"
    return Path("reports") / run_id


def _report(run_dir: Path, out: Path) -> None:
    from ..analysis.report import write_report  # matplotlib is imported only when a report is written

    written = write_report(run_dir, out=out)
    print(f"report: {written / 'index.html'}")  # the last line: the page to open
