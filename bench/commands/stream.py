"""``vptbench stream BACKBONE``: can it follow a live camera? Per variant and runtime, the per-frame
latency (delay vs compute), real-time factor, dropped share and highest sustained rate on a real
clock, and the pruned variants' paired gain over the rectangle (bench.scenarios.stream).

Also the stream options of ``vptbench run --metrics stream`` (:func:`stream_options`, :func:`apply`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import TYPE_CHECKING, Any

from ..core.errors import UsageError
from . import options
from .common import warn_unstable

if TYPE_CHECKING:
    from ..core.case import Case
    from ..measure.stream import StreamSettings
    from ..scenarios import Settings

STREAM_OPTIONS = ("fps", "stride", "emit", "seconds")


def fps_list(text: str) -> list[float]:
    try:
        values = [float(t) for t in options.csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated camera rates (frames/s), got {text!r}") from None
    bad = [v for v in values if not v > 0 or v == float("inf")]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"a camera rate must be > 0 frames/s, got {text!r}")
    return values


def stride_value(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of frames or auto, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"a stride is at least 1 frame, got {text!r}")
    return value


def stream_options(p: argparse.ArgumentParser, *, in_run: bool = False) -> None:
    """--fps, --stride, --emit, --seconds (``in_run``: as ``vptbench run`` words them)."""
    g = p.add_argument_group("live stream" + (" (--metrics stream)" if in_run else ""))
    g.add_argument("--fps", type=fps_list, default=None, metavar="F,...",
                   help="camera rates in frames/s, one stream each (default: 30,50)")
    g.add_argument("--stride", type=stride_value, default=None, metavar="S|auto",
                   help="seq2seq: a forward every S new frames, emitting S poses (default auto: per rate, the "
                        "smallest that keeps up at the calibrated cost)"
                        + ("; seq2frame backbones take 1" if in_run else ""))
    g.add_argument("--emit", choices=("newest", "middle"), default=None,
                   help="seq2seq: pose the newest S frames (no look-ahead) or the S around the window's middle "
                        "(default: newest); seq2frame always poses the centre frame")
    g.add_argument("--seconds", type=options.seconds, default=None, metavar="N",
                   help="length of each stream (default: 10 s; 1 s in the smoke preset)")


def given(args: argparse.Namespace) -> list[str]:
    return [o for o in STREAM_OPTIONS if getattr(args, o, None) is not None]


def stream_settings(args: argparse.Namespace, base: StreamSettings) -> StreamSettings:
    """``base`` with the options given on the command line."""
    changes: dict[str, Any] = {}
    if args.fps is not None:
        changes["fps"] = tuple(args.fps)
    if args.seconds is not None:
        changes["seconds"] = args.seconds
    if args.emit is not None:
        changes["emit"] = args.emit
    if getattr(args, "stride", None) is not None:
        changes["stride"] = args.stride
    return dataclasses.replace(base, **changes)


def apply(args: argparse.Namespace, settings: Settings, metrics: list[str], cases: list[Case]) -> Settings:
    """``vptbench run``: the stream options into ``settings``, checked against every case (exit 2)."""
    from ..measure import stream

    options_given = given(args)
    if options_given and "stream" not in metrics:
        raise UsageError(f"--{options_given[0]} sets the live streams of --metrics stream; add stream to --metrics")
    if options_given and args.resume:
        raise UsageError(f"--{options_given[0]}: a resumed run keeps its own streams; drop the stream options")
    settings = dataclasses.replace(settings, stream=stream_settings(args, settings.stream))
    if "stream" in metrics:
        for case in cases:
            if case.frames is None:  # a case that cannot be resolved is recorded as skipped anyway
                continue
            stream.check(case.backbone, case.pipeline, case.frames, settings.stream, stride_given=False)
    return settings


def add_parser(sub: Any, **kw: Any) -> None:
    p = sub.add_parser("stream", **kw, help="follow a live camera: per-frame latency, real-time factor, drops, max fps")
    p.add_argument("backbone", help="a registered backbone (see vptbench list)")
    p.add_argument("--variant", type=options.csv_list, default=None, metavar="V,...",
                   help="comma list of rectangle, single, hierarchical (default: all three)")
    stream_options(p)
    p.add_argument("--runtime", type=options.csv_list, default=None, metavar="R,...",
                   help="comma list of eager (default), compile, onnxruntime")
    p.add_argument("--frames", type=int, default=None, help="window length T (default: the backbone's canonical T)")
    p.add_argument("--size", default=None, help="model size (default: the backbone's default)")
    p.add_argument("--pruner", default="", help="the pruned variants' pruner (default '': each variant's)")
    p.add_argument("--recoverer", default="", help="the pruned seq2seq variants' recoverer (default '': each variant's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: the preset's)")
    p.add_argument("--json", action="store_true", help="print the records as one JSON list, nothing else")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..analysis.stream_section import format_text
    from ..core.case import Case
    from ..measure import runtimes, stream
    from ..run.presets import get_preset, with_threads
    from ..scenarios import check_device, measure_case

    check_device(args.device)
    cases = []
    for runtime in dict.fromkeys(args.runtime or ["eager"]):
        for variant in dict.fromkeys(args.variant or ["rectangle", "single", "hierarchical"]):
            pruned = variant != "rectangle"
            cases.append(Case(
                backbone=args.backbone, variant=variant, frames=args.frames, device=args.device, size=args.size,
                pruner=args.pruner if pruned else "", recoverer=args.recoverer if pruned else "", runtime=runtime,
            ).resolve())  # fmt: skip
    for case in cases:
        runtimes.check(case.runtime, case.device, case.dtype)
    preset = get_preset("smoke" if cases[0].size == "tiny" else "paper")
    settings = with_threads(preset.settings, args.threads)
    settings = dataclasses.replace(settings, stream=stream_settings(args, settings.stream))
    for case in cases[:1]:  # the options depend only on the backbone and T
        stream.check(case.backbone, case.pipeline, int(case.frames or 0), settings.stream)
    records: list[dict[str, Any]] = []
    for case in cases:
        if not args.json:
            s = settings.stream
            print(f"streaming {case.case_id}: {len(s.fps)} stream(s) of {s.seconds:g} s, then the max-fps search"
                  + ("" if case.variant == "rectangle" else " and the paired stream with its rectangle") + " ...",
                  file=sys.stderr)  # fmt: skip
        records += measure_case(case, ["stream"], "stream", settings=settings)
    if args.json:
        print(json.dumps(records))
    else:
        print(format_text(records))
    warn_unstable(records)
    return 0
