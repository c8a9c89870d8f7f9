"""``vptbench profile BACKBONE``: measure one case and print it."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
from typing import TYPE_CHECKING, Any

from ..core import numbers
from ..core.errors import UsageError
from . import options
from .common import warn_unstable

if TYPE_CHECKING:
    import torch.nn as nn

    from ..core.case import Case
    from ..scenarios import Settings


def add_parser(sub: Any, **kw: Any) -> None:
    p = sub.add_parser("profile", **kw, help="measure one case and print it")
    p.add_argument("backbone", help="a registered backbone (see vptbench list)")
    p.add_argument("--variant", default=None, help="rectangle (default), single or hierarchical")
    p.add_argument("--frames", type=int, default=None, help="sequence length T (default: the backbone's canonical T)")
    p.add_argument("--batch", type=int, default=1, help="clips per forward")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="float32", help="float32 | float16 | bfloat16")
    p.add_argument("--size", default=None, help="model size (default: the backbone's default, e.g. lite for motionbert)")
    p.add_argument("--schedule", default="", metavar="BLOCK:KEEP,...",
                   help="prune points; KEEP a token count or a ratio of T (default '': the variant's)")
    p.add_argument("--pruner", default="", help="tps | tpc | tpa | tpmo (default '': the variant's)")
    p.add_argument("--recoverer", default="", help="tri | tra (default '': the variant's)")
    p.add_argument("--metrics", type=options.metric_list, default=None,
                   help=f"comma list of {', '.join(options.METRIC_GROUPS)} (default: all; none with --trace)")
    p.add_argument("--runtime", default="eager", help="how the forward runs when timed: eager (default), compile, onnxruntime")
    options.precision_options(p, checkpoint=False)  # --checkpoint is below: it is the profiled model too
    p.add_argument("--save-onnx", default=None, metavar="DIR", help="onnxruntime: write the exported .onnx file into DIR")
    p.add_argument("--onnx-exporter", choices=("auto", "torchscript", "dynamo"), default="auto",
                   help="onnxruntime: the ONNX exporter (auto: torchscript, then dynamo if it fails)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: the preset's)")
    options.min_time_option(p)
    p.add_argument("--json", action="store_true", help="print the records as one JSON list, nothing else")
    options.checkpoint_options(p, "profile the model of this checkpoint (a release's file or a vptbench one); "
                                  "pose_error uses its weights")
    p.add_argument("--trace", default=None, metavar="FILE",
                   help="write a Chrome/Perfetto trace of a few steady-state forwards, labelled by part and block")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import torch

    from ..core.case import PRECISION_DTYPES, Case
    from ..measure import runtimes
    from ..run.presets import check_precisions, get_preset, with_min_time, with_pose_error, with_threads
    from ..scenarios import METRIC_GROUPS, check_device, measure_case
    from .run import with_pose_settings

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
    precisions = check_precisions(getattr(args, "precision", None), case.dtype)
    runtimes.check(case.runtime, case.device, case.dtype)
    cases = [dataclasses.replace(case, precision=p, dtype=PRECISION_DTYPES[p]) for p in precisions]
    # The effort of the preset this case would belong to: tiny sizes are smoke tests.
    settings = with_threads(get_preset("smoke" if case.size == "tiny" else "paper").settings, args.threads)
    settings = with_min_time(settings, args.min_time)
    settings = dataclasses.replace(settings, save_onnx=args.save_onnx, onnx_exporter=args.onnx_exporter)
    settings = with_pose_settings(settings, args)  # --checkpoint: the profiled model's weights for pose_error
    default = [g for g in METRIC_GROUPS if g != "pose_error"]  # pose_error trains weights: with a precision only
    metrics = args.metrics if args.metrics is not None else ([] if args.trace else with_pose_error(default, cases))
    if args.trace:
        write_profile_trace(case, model, args.trace, settings)
        if not args.json:
            print(f"trace of {case.case_id} written to {args.trace} (open it in ui.perfetto.dev)", file=sys.stderr)
        if not metrics:
            return 0
    records: list[dict[str, Any]] = []
    for c in cases:
        if not args.json:
            print(f"profiling {c.case_id} ...", file=sys.stderr)
        # measure_case moves the model to the case's dtype: each precision gets the float model's copy
        mine = list(measure_case(c, metrics, "profile", settings=settings,
                                 model=copy.deepcopy(model) if len(cases) > 1 else model))  # fmt: skip
        records += mine
        if not args.json:
            print(format_records(c, mine))
    if args.json:
        print(json.dumps(records))
    warn_unstable(records)
    return 0



def write_profile_trace(case: Case, model: nn.Module, path: str, settings: Settings) -> None:
    """The case's trace (bench.measure.profiler.write_trace) under the preset's speed settings."""
    import torch

    from ..measure import profiler, timing
    from ..scenarios import example_inputs

    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as e:
        raise UsageError(f"--trace {path}: cannot write there ({e.strerror or e})") from None
    model = model.to(case.device, getattr(torch, case.dtype))
    x, _ = example_inputs(case, model)
    with timing.applied(settings.speed):
        profiler.write_trace(model, x, path, backbone=case.backbone, device=case.device)


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
    from tabulate import tabulate

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
