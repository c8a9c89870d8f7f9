"""The ``stream`` group: the case's model following a live camera (bench.measure.stream), and the
records that makes, per camera rate of ``settings.stream.fps``:

- ``stream_latency`` (ms from a frame's arrival to its pose: median, ``p90``, ``p99``, a CI over
  windows, split into ``delay_ms``, ``queue_ms`` and ``compute_ms``; method ``wall_clock``),
- ``stream_rtf`` (compute seconds per second of video, median window; ``rtf_mean``, ``busy_share``),
- ``stream_dropped`` (share of frames without a pose; method ``skip_to_newest``, the drop policy);

then once per case ``stream_max_fps`` (method ``bisection``, bench.measure.stream_search; ``ci_low``
and ``ci_high`` are the bracket: the highest rate sustained and the lowest that was not), and, for a
pruned case, ``stream_speedup`` (method ``paired``): its own rectangle (bench.scenarios.speedup's
reference case) built here, and both models run on every window of one stream, in alternating
order, on the same clock; the value is the median over windows of rectangle ms / pruned ms, which
is the factor by which pruning divides the real-time factor and multiplies the sustainable rate at
a given stride. Every record carries ``fps_in`` (None for stream_max_fps, whose rate is the
result), ``stride``, ``window``, ``delay_frames``, ``lookahead_frames``, ``emit``, ``runtime`` and
``threads``.

The forward is the case's runtime's (bench.scenarios.latency.prepare): each window is copied into
the example input the prepared forward reads (ONNX Runtime on CPU reads that buffer; on CUDA its
input is the copy made when it was prepared: the cost of a forward does not depend on the values).
The camera's 2D poses are a synthetic motion sequence (bench.accuracy.data.synthetic), looped.
``--stride auto`` takes, per rate, the smallest stride that covers the calibrated cost of a window
with headroom; the max-fps search runs at the given stride, or with ``auto`` at the window's length
(the most the model can follow at all; seq2frame: 1), with the emission's look-ahead added to the
latency it reports at that rate (the probes emit the newest frames: the look-ahead costs no compute).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..core.case import Case
from ..core.errors import UsageError
from ..core.progress import report_progress
from ..core.results import record
from ..measure import load, stream, stream_search, timing
from .base import REFERENCE_VARIANT, Settings, failure_status, failure_with
from .latency import latency_env, prepare
from .speedup import reference_case

MAX_FPS_CAP = 1000.0  # frames/s: no camera rate above this is searched for (the record says ``capped``)
CALIBRATION_REPEATS = 3
SOURCE_FRAMES = 600  # the synthetic sequence the camera loops over
SOURCE_SEED = 26


def records(
    run_id: str, case: Case, model: nn.Module, x: torch.Tensor, settings: Settings
) -> Iterator[dict[str, Any]]:
    cfg = settings.stream
    m: Any = model
    pipeline, window = str(m.pipeline), int(case.frames or m.frames)
    try:
        stream.check(case.backbone, pipeline, window, cfg, stride_given=False)
    except UsageError as e:
        yield failure_with(run_id, case, "stream_latency", str(e), "skipped")
        return
    prepared = prepare(case, model, x, settings, save=False)
    if prepared.error:
        raise RuntimeError(prepared.error)  # the group fails with the runtime's reason
    source = pose_frames(int(m.in_channels), x)
    process = window_processor(prepared.forward, x, source, window)
    cost_s = calibrate(process, window, case.device, settings.warmup)
    env = latency_env(case, settings, prepared) | {r.metric: r.value for r in prepared.reports}
    env |= {"calibration_ms": round(1e3 * cost_s, 4), "stride_mode": "auto" if cfg.stride is None else "given"}
    strides: dict[float, int] = {}
    for fps in cfg.fps:
        report_progress(f"stream {fps:g} fps")
        frames = stream.stream_frames(cfg.seconds, fps)
        given = cfg.stride if cfg.stride is not None and pipeline == "seq2seq" else None
        stride = given or stream.auto_stride(pipeline, window, cost_s, fps, frames, cfg.emit)
        plan = stream.make_plan(pipeline, window=window, fps=fps, frames=frames, stride=stride, emit=cfg.emit)
        strides[fps] = plan.stride
        try:
            with load.Monitor(torch.get_num_threads()) as mon:
                log = stream.run_stream([process], plan, device=case.device)
            made = list(stream_records(run_id, case, log, mon.fields(), env))  # all three, or their failures
        except Exception as e:  # this rate fails; the others, the search and the pair go on
            made = [failure_with(run_id, case, metric, e, failure_status(e), **stream.plan_fields(plan))
                    for metric in ("stream_latency", "stream_rtf", "stream_dropped")]  # fmt: skip
        yield from made
    report_progress("stream max fps")
    try:
        yield max_fps_record(run_id, case, pipeline, window, process, cost_s, cfg, env)
    except Exception as e:
        yield failure_with(run_id, case, "stream_max_fps", e, failure_status(e), fps_in=None)
    if case.variant != REFERENCE_VARIANT:
        report_progress("stream pruned vs rectangle")
        fps = max(cfg.fps)
        try:
            yield paired_record(run_id, case, x, settings, process, source, pipeline, window, fps, strides[fps], env)
        except Exception as e:
            yield failure_with(run_id, case, "stream_speedup", e, failure_status(e), fps_in=fps)


def pose_frames(channels: int, like: torch.Tensor) -> torch.Tensor:
    """The camera's 2D poses (frames, 17, ``channels``): a synthetic motion sequence (x, y, confidence),
    zero-padded for a model that takes more channels; on ``like``'s device and dtype."""
    from ..accuracy.data.synthetic import generate

    seq = generate("test", 1, SOURCE_FRAMES, seed=SOURCE_SEED)[0].pose_sequence().inputs  # (F, 17, 3)
    a = seq[..., :channels]
    if channels > a.shape[-1]:
        a = np.concatenate([a, np.zeros((*a.shape[:-1], channels - a.shape[-1]), a.dtype)], axis=-1)
    return torch.from_numpy(np.ascontiguousarray(a)).to(like.device, like.dtype)


def window_processor(
    forward: Callable[[], Any], x: torch.Tensor, source: torch.Tensor, window: int
) -> Callable[[int], Any]:
    """``process(j)``: the window ending at frame j (frames before 0 are frame 0, the causal padding)
    copied into ``x``, the buffer the prepared ``forward`` reads, then the forward."""
    offsets = torch.arange(-window + 1, 1, device=source.device)
    n = source.shape[0]

    def process(j: int) -> Any:
        idx = (offsets + j).clamp(min=0) % n  # the camera loops over its sequence
        x.copy_(source.index_select(0, idx).expand_as(x))
        return forward()

    return process


def calibrate(process: Callable[[int], Any], window: int, device: str, warmup: int) -> float:
    """Seconds per window, the median of a few timed ones after a warm-up: what ``auto`` and the
    max-fps search start from."""
    samples = timing.measure_latency(lambda: process(window - 1), warmup=max(1, warmup),
                                     repeats=CALIBRATION_REPEATS, device=device)  # fmt: skip
    return float(np.median(samples)) / 1e3


def stream_records(
    run_id: str, case: Case, log: stream.StreamLog, load_fields: dict[str, Any], env: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """stream_latency, stream_rtf and stream_dropped of one stream."""
    plan = log.plan
    where = stream.plan_fields(plan)
    frames = stream.per_frame(log)
    if len(frames.latency):
        lat = stream.latency_fields(log, frames, load_fields)
        value = lat.pop("value")
        yield record(run_id, case, "stream_latency", value, method="wall_clock", **where, **lat, **env)
    else:
        yield failure_with(run_id, case, "stream_latency", "no frame got a pose: every window was skipped (the "
                           "model is far slower than the stream)", "error", **where)  # fmt: skip
    compute_ms = [1e3 * c for c in log.compute_s()]
    per_ms = plan.fps / plan.stride / 1e3  # window ms -> s of compute per s of video
    stats = timing.stats_fields(compute_ms, load=load_fields)
    if stats["ci_low"] is not None:  # one window: no interval
        stats.update(ci_low=stats["ci_low"] * per_ms, ci_high=stats["ci_high"] * per_ms)
    busy = sum(log.compute_s()) / log.wall_s if log.wall_s > 0 else None
    yield record(run_id, case, "stream_rtf", stream.rtf(log), method="wall_clock", **where, **stats,
                 rtf_mean=float(np.mean(compute_ms)) * per_ms, busy_share=busy, window_ms=compute_ms,
                 **env)  # fmt: skip
    n = len(frames.index)
    skipped = sum(w.skipped for w in log.windows)
    yield record(run_id, case, "stream_dropped", frames.dropped / n if n else None, method=stream.POLICY,
                 policy=stream.POLICY_TEXT, frames_measured=n, dropped_frames=frames.dropped, late_frames=frames.late,
                 windows=len(log.windows), skipped_windows=skipped, **where, **env)  # fmt: skip


def max_fps_record(
    run_id: str, case: Case, pipeline: str, window: int, process: Callable[[int], Any], cost_s: float,
    cfg: stream.StreamSettings, env: dict[str, Any],
) -> dict[str, Any]:
    """stream_max_fps: the bisection's result, at the given stride or (auto) the window's length."""
    stride = window if pipeline == "seq2seq" else 1
    if cfg.stride is not None and pipeline == "seq2seq":
        stride = cfg.stride

    def probe(fps: float) -> stream.StreamLog:
        frames = max(cfg.probe_windows * stride, stream.stream_frames(min(cfg.probe_s, cfg.seconds), fps))
        plan = stream.Plan(fps, frames, window, stride, 0, "newest")  # the look-ahead costs no compute
        return stream.run_stream([process], plan, device=case.device)

    with load.Monitor(torch.get_num_threads()) as mon:
        found = stream_search.max_fps(probe, estimate=stride / cost_s, cap=MAX_FPS_CAP, precision=cfg.precision,
                                      max_probes=cfg.max_probes)  # fmt: skip
    load_fields = mon.fields()
    real = stream.make_plan(pipeline, window=window, fps=found.fps or 1.0, frames=0, stride=stride, emit=cfg.emit)
    at: dict[str, Any] = {}
    if found.best is not None:
        lat = stream.latency_fields(found.best, stream.per_frame(found.best))
        ahead_ms = 1e3 * real.lookahead / found.fps
        at = {"latency_ms": lat["value"] + ahead_ms, "p99_ms": lat["p99"] + ahead_ms,
              "delay_ms": lat["delay_ms"] + ahead_ms, "compute_ms": lat["compute_ms"]}  # fmt: skip
    busy = bool(load_fields.get("busy"))
    where = stream.plan_fields(real) | {"fps_in": None}  # the rate is the result
    return record(
        run_id, case, "stream_max_fps", found.fps, method="bisection", **where, **at, ci_low=found.fps,
        ci_high=found.unsustained, ci_method="bisection_bracket", capped=found.capped, cap=MAX_FPS_CAP,
        probes=found.probes, stable=not busy, unstable_reason="CPU busy with other processes" if busy else "",
        **load_fields, **env,
    )


def paired_record(
    run_id: str, case: Case, x: torch.Tensor, settings: Settings, process: Callable[[int], Any],
    source: torch.Tensor, pipeline: str, window: int, fps: float, stride: int, env: dict[str, Any],
) -> dict[str, Any]:
    """stream_speedup: the rectangle and the case on every window of one stream (module docstring)."""
    ref_case = reference_case(case)
    torch.manual_seed(0)  # the rectangle's weights as its own case would have them
    ref_model = ref_case.build().to(case.device, getattr(torch, case.dtype)).eval()
    ref = prepare(ref_case, ref_model, x, settings, save=False)
    if ref.error:
        raise RuntimeError(f"the rectangle {ref_case.case_id} cannot run on {case.runtime}: {ref.error}")
    process_ref = window_processor(ref.forward, x, source, window)
    for _ in range(max(1, settings.warmup)):
        process_ref(window - 1)
    cfg = settings.stream
    frames = stream.stream_frames(cfg.seconds, fps)
    plan = stream.make_plan(pipeline, window=window, fps=fps, frames=frames, stride=stride, emit=cfg.emit)
    paired = stream.Plan(fps, frames, window, plan.stride, 0, "newest")  # no wait for look-ahead: all pairs
    with load.Monitor(torch.get_num_threads()) as mon:
        log = stream.run_stream([process_ref, process], paired, device=case.device)
    ref_ms = [1e3 * c for c in log.compute_s(0)]
    new_ms = [1e3 * c for c in log.compute_s(1)]
    ratios = [r / n for r, n in zip(ref_ms, new_ms, strict=True)]
    if not ratios:
        raise RuntimeError("the paired stream processed no window")
    return record(
        run_id, case, "stream_speedup", float(np.median(ratios)), method="paired", reference=ref_case.case_id,
        samples=ratios, samples_rectangle=ref_ms, samples_pruned=new_ms,
        compute_rectangle_ms=float(np.median(ref_ms)), compute_pruned_ms=float(np.median(new_ms)),
        **timing.stats_fields(ratios, load=mon.fields()), **stream.plan_fields(plan), **env,
    )


__all__ = ["records"]
