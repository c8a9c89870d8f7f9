"""``vptbench profile BACKBONE``: measure one case and print it."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import textwrap
from typing import TYPE_CHECKING, Any

from ..core import numbers
from ..core.errors import UsageError
from . import options
from .common import warn_unstable, with_allocator

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
    p.add_argument("--pruner", default="", help="{pruners} (default '': the variant's)")
    p.add_argument("--recoverer", default="", help="{recoverers} (default '': the variant's)")
    p.add_argument("--metrics", type=options.metric_list, default=None,
                   help=f"comma list of {', '.join(options.METRIC_GROUPS)} (default: all but stream, which "
                        "vptbench stream runs; none with --trace)")
    p.add_argument("--runtime", default="eager", help="how the forward runs when timed: eager (default), compile, onnxruntime")
    options.precision_options(p, checkpoint=False)  # --checkpoint is below: it is the profiled model too
    p.add_argument("--save-onnx", default=None, metavar="DIR", help="onnxruntime: write the exported .onnx file into DIR")
    p.add_argument("--onnx-exporter", choices=("auto", "torchscript", "dynamo"), default="auto",
                   help="onnxruntime: the ONNX exporter (auto: torchscript, then dynamo if it fails)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: the preset's)")
    options.min_time_option(p)
    options.allocator_option(p)
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
    settings = with_allocator(settings, args.allocator, fresh_processes=False)
    settings = with_pose_settings(settings, args)  # --checkpoint: the profiled model's weights for pose_error
    # live streams take seconds each (vptbench stream); pose_error trains weights: with a precision only
    default = [g for g in METRIC_GROUPS if g not in ("stream", "pose_error")]
    metrics = args.metrics if args.metrics is not None else ([] if args.trace else with_pose_error(default, cases))
    if args.trace:
        write_profile_trace(case, model, args.trace, settings)
        if not args.json:
            print(f"trace of {case.case_id} written to {args.trace} (open it in ui.perfetto.dev)", file=sys.stderr)
        if not metrics:
            return 0
    # The per-part records fill a screen: as a table only when the breakdown was asked for by name.
    parts = bool(args.metrics and "breakdown" in args.metrics)
    records: list[dict[str, Any]] = []
    for c in cases:
        if not args.json and len(cases) > 1:
            print(f"profiling {c.case_id} ...", file=sys.stderr)
        # measure_case moves the model to the case's dtype: each precision gets the float model's copy
        mine = list(measure_case(c, metrics, "profile", settings=settings,
                                 model=copy.deepcopy(model) if len(cases) > 1 else model))  # fmt: skip
        records += mine
        if not args.json:
            print(format_records(c, mine, parts=parts))
    if args.json:
        print(json.dumps(records))
    elif not parts:  # folded: their stability is in the records (--json), not worth a warning here
        records = [r for r in records if r["metric"] not in PER_PART]
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


# Said in the note of the row they belong to, not as rows of their own.
FOLDED = {"latency_p10": "latency", "latency_p90": "latency", "clips_per_s": "fps"}
PER_PART = ("time_by_part", "mem_by_part")  # a record per part and block: folded unless asked for
TOP_PARTS = 3  # parts named in a folded breakdown line
WIDTH = 120  # the lines under the table are wrapped to this many columns


def _scaled(values: list[float], unit: str) -> tuple[list[str], str]:
    """``values`` in one unit that suits them all (3 significant digits)."""
    new_unit, factor = numbers.column_unit(values, unit)
    return [numbers.sig(v * factor) for v in values], new_unit


def _value_and_unit(r: dict[str, Any]) -> tuple[str, str]:
    """A record's value for people (counts with separators, units scaled, a CI where timed) and its unit."""
    value, unit = r["value"], str(r.get("unit") or "")
    if value is None:
        return "-", unit
    if unit == "count":
        return numbers.count(value), unit
    x, new_unit = numbers.scaled(float(value), unit)
    factor = x / float(value) if value else 1.0
    low, high, n = r.get("ci_low"), r.get("ci_high"), r.get("n")
    if numbers.finite(low) and numbers.finite(high):
        return numbers.with_ci(x, low * factor, high * factor, n=n), new_unit
    return numbers.with_ci(x, None, None, n=n), new_unit


def _note(rows: list[dict[str, Any]], folded: dict[str, dict[str, Any]], unit: str) -> str:
    """What a row's records say beyond their values: a failure, p10-p90, clips/s, why a timing is unstable."""
    from ..analysis.stability import cause_of

    bad = next((r for r in rows if r["status"] != "ok"), None)
    if bad is not None:
        text = f"{bad['status']}: {bad.get('error') or ''}".strip()
        return text if len(text) <= 60 else text[:57] + "..."
    r = rows[0]
    notes = []
    if r["metric"] == "latency" and "latency_p10" in folded and "latency_p90" in folded:
        values, _ = _scaled([folded["latency_p10"]["value"], folded["latency_p90"]["value"]], "ms")
        notes.append(f"p10-p90 {values[0]}-{values[1]}")
    if r["metric"] == "fps" and "clips_per_s" in folded:
        notes.append(f"{numbers.sig(folded['clips_per_s']['value'])} clips/s")
    causes = dict.fromkeys(cause_of(part).short for x in rows if x.get("stable") is False
                           for part in str(x.get("unstable_reason") or "").split("; ") if part)  # fmt: skip
    if causes:
        notes.append("unstable: " + ", ".join(causes))
    return "; ".join(notes)


def _headline_rows(records: list[dict[str, Any]]) -> list[list[str]]:
    """One row per (metric, phase): several methods of one metric (the FLOPs counters) share a row."""
    folded = {r["metric"]: r for r in records if r["metric"] in FOLDED and r["status"] == "ok"}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        if r["metric"] in FOLDED or r["metric"] in PER_PART or r["metric"] == "flops_block":
            continue
        groups.setdefault((r["metric"], str(r.get("phase") or "")), []).append(r)
    rows = []
    for (metric, phase), recs in groups.items():
        label = f"{metric} ({phase})" if phase else metric
        unit = str(recs[0].get("unit") or "")
        ok = [r for r in recs if r["status"] == "ok" and r["value"] is not None]
        if len(recs) == 1 or len(ok) != len(recs) or unit == "count":
            value, shown_unit = _value_and_unit(recs[0]) if ok else ("-", unit)
        else:  # one value per method, in one unit
            values, shown_unit = _scaled([float(r["value"]) for r in recs], unit)
            value = " / ".join(values)
        methods = "/".join(str(r.get("method") or "-") for r in recs)
        rows.append([label, value, shown_unit, methods, _note(recs, folded, shown_unit)])
    return rows


def _hourglass_line(blocks: list[dict[str, Any]]) -> str:
    """fvcore FLOPs per block as runs of equal blocks: 'blocks 0-1: 27 tokens, 10.2 MFLOPs each; 2-4: ...'."""
    texts, unit = _scaled([float(r["value"]) for r in blocks], "GFLOPs")
    runs: list[list[Any]] = []
    for r, text in zip(blocks, texts, strict=True):
        if runs and runs[-1][2] == r.get("tokens") and runs[-1][3] == text and runs[-1][1] == r["block"] - 1:
            runs[-1][1] = r["block"]
        else:
            runs.append([r["block"], r["block"], r.get("tokens"), text])
    parts = [f"{a}{f'-{b}' if b != a else ''} at {tokens} tokens {text}{' each' if b != a else ''}"
             for a, b, tokens, text in runs]  # fmt: skip
    return f"{unit} per block (fvcore): blocks " + ", ".join(parts)


def _parts_line(recs: list[dict[str, Any]], title: str, unit: str) -> str:
    """The top parts of one phase (summed over blocks and steps) and the prune + recover share, in one line."""
    by_part: dict[str, float] = {}
    for r in recs:
        by_part[r["part"]] = by_part.get(r["part"], 0.0) + float(r["value"])
    total = sum(by_part.values())
    if not total:
        return f"{title}: nothing measured"
    top = sorted(by_part.items(), key=lambda kv: -kv[1])[:TOP_PARTS]
    text = ", ".join(f"{part} {100 * v / total:.0f} %" for part, v in top)
    overhead = by_part.get("prune", 0.0) + by_part.get("recover", 0.0)
    return f"{title} ({numbers.sig(total)} {unit}): {text}; prune + recover {100 * overhead / total:.1f} %"


def _breakdown_lines(records: list[dict[str, Any]]) -> list[str]:
    """The breakdown's hundreds of per-part records folded into a line per phase and quantity."""
    lines = []
    for metric, unit, what in (("time_by_part", "ms", "time"), ("mem_by_part", "MiB", "allocated")):
        for phase, per in (("inference", "forward"), ("train", "train step")):
            recs = [r for r in records if r["metric"] == metric and r.get("phase") == phase and r["status"] == "ok"]
            if recs:
                lines.append(_parts_line(recs, f"{what} by part, {per}", unit))
    if lines:
        lines.append("(every part and block, with its CI: --metrics breakdown, or --json)")
    return lines


def _parts_table(records: list[dict[str, Any]]) -> str:
    """Every part and block of the breakdown: time (median [95 % CI]) and MiB allocated, side by side."""
    from tabulate import tabulate

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return r.get("phase"), r.get("step"), r.get("part"), r.get("block")

    mem = {key(r): r for r in records if r["metric"] == "mem_by_part" and r["status"] == "ok"}
    rows = []
    for r in records:
        if r["metric"] != "time_by_part" or r["status"] != "ok":
            continue
        m = mem.get(key(r))
        rows.append([r.get("phase") or "", r.get("step") or "", r["part"], "" if r.get("block") is None else r["block"],
                     _value_and_unit(r)[0], numbers.sig(m["value"]) if m else "",
                     "unstable" if r.get("stable") is False else ""])  # fmt: skip
    headers = ["phase", "step", "part", "block", "ms [95 % CI]", "MiB allocated", "note"]
    return tabulate(rows, headers=headers, disable_numparse=True, colalign=("left", "left", "left", "right", "right"))


def format_records(case: Case, records: list[dict[str, Any]], *, parts: bool = False) -> str:
    """What ``profile`` prints: one short table of the headline metrics; the per-block FLOPs and the breakdown's
    per-part records folded into a few lines (``parts``: the per-part records as a table of their own)."""
    from tabulate import tabulate

    headers = ["metric", "value [95 % CI]", "unit", "method", "note"]
    rows = _headline_rows(records)
    table = tabulate(rows, headers=headers, disable_numparse=True, colalign=("left", "right"))
    excess = max(len(line) for line in table.splitlines()) - WIDTH
    if excess > 0:  # the notes give way, so that the table keeps to a terminal's width
        room = max(12, max(len(r[-1]) for r in rows) - excess)
        rows = [[*r[:-1], r[-1] if len(r[-1]) <= room else r[-1][: room - 3] + "..."] for r in rows]
        table = tabulate(rows, headers=headers, disable_numparse=True, colalign=("left", "right"))
    text = [case.case_id, "", table]
    lines = []
    blocks = [r for r in records if r["metric"] == "flops_block" and r["status"] == "ok"]
    if blocks:
        lines.append(_hourglass_line(blocks))
    unsupported = next((r.get("unsupported") for r in records if r["metric"] == "flops" and r["method"] == "fvcore"), None)
    if unsupported:
        lines.append("fvcore could not count: " + ", ".join(f"{k} x{v}" for k, v in unsupported.items()))
    table = parts and any(r["metric"] in PER_PART for r in records)
    lines += [] if table else _breakdown_lines(records)
    if lines:  # wrapped to a terminal's width, so that what it shows is what was counted
        text += ["", *(textwrap.fill(line, WIDTH, subsequent_indent="    ") for line in lines)]
    if table:
        text += ["", _parts_table(records)]
    return "\n".join(text)
