"""Live video on a real clock: a camera delivers 2D poses at ``fps``, the model consumes windows as
its pipeline dictates, and every frame's arrival and the time its 3D pose is ready are recorded.

    plan = make_plan("seq2seq", window=243, fps=50, frames=1000, stride=125, emit="newest")
    log = run_stream([process], plan, device="cpu")   # process(j): the window ending at frame j, through the model
    frames = per_frame(log)                            # arrival, ready, delay, queue, compute of every frame
    fields = latency_fields(log, frames)               # median, p90, p99, CI, delay_ms, compute_ms ...

**The camera clock.** Frame i arrives at ``t0 + i / fps`` on ``time.perf_counter``; the consumer
runs on the same wall clock and sleeps until the frames a window needs have arrived, so a model
that is slower than the stream falls behind in real time (nothing here is a formula that never
waits). ``t0`` is when the stream starts; frame 0 arrives then.

**Windows.** A window of T frames ends at the frame whose arrival triggers it, and frames before the
stream's start are the first frame repeated (causal padding).

- seq2seq (stride S): window k ends at frame ``j_k = (k + 1) S - 1`` and emits S poses: ``newest``,
  frames ``j_k - S + 1 .. j_k`` (no look-ahead), or ``middle``, the S frames centred in the window
  (look-ahead ``L = T - S - (T - S) // 2`` frames, as in the training clips). A larger S costs less
  compute per frame and makes frames wait longer for their window.
- seq2frame: one window per frame (S = 1); the model's output is the window's centre frame
  ``(T - 1) // 2``, so every pose waits for ``L = T - 1 - (T - 1) // 2`` future frames.

A frame's **delay** is the algorithmic wait for the future frames its window needs
(``(j_k - i) / fps``), its **queue** the wait for the model once its window is complete (the model
still busy with an earlier window, and the scheduler's wake-up), its **compute** the window's time
in the model; latency = delay + queue + compute, exactly, per frame.

**Drop policy** (``skip_to_newest``, the ``method`` of stream_dropped): when the model becomes free
it takes the newest complete window, and the complete windows it passes over are skipped, as a
real-time system does; their frames get no pose. A frame is dropped when its pose is never
produced, or when it came after the next window's (its window started after the next one was
due); under this policy the second cannot happen, and the count says so.

**Real-time factor**: compute seconds per second of video, ``median window compute x fps / S``;
below 1 the model keeps up. A rate is **sustained** when no frame is dropped and the real-time
factor stays below 1 (so a backlog that grows too slowly to drop a window within a short stream
still counts as not keeping up): :func:`sustained`, which :mod:`bench.measure.stream_search` bisects.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.errors import UsageError
from . import timing

EMITS = ("newest", "middle")
POLICY = "skip_to_newest"
POLICY_TEXT = ("when the model becomes free it takes the newest complete window; complete windows it passes "
               "over are skipped and their frames get no pose")  # fmt: skip
AUTO_HEADROOM = 1.25  # stride auto: the model busy at most 80 % of the time at the calibrated cost


@dataclass(frozen=True)
class StreamSettings:
    """How the live streams are run (``--fps``, ``--seconds``, ``--stride``, ``--emit``).

    ``stride`` None is ``auto``: per camera rate, the smallest stride that keeps up with
    :data:`AUTO_HEADROOM` at the calibrated cost of a window. The max-fps search runs probe streams
    of at least ``probe_windows`` windows and ``min(probe_s, seconds)`` seconds each, at most
    ``max_probes`` of them, and stops when its bracket is within ``precision``.
    """

    fps: tuple[float, ...] = (30.0, 50.0)
    seconds: float = 10.0
    stride: int | None = None
    emit: str = "newest"
    probe_s: float = 2.0
    probe_windows: int = 4
    max_probes: int = 8
    precision: float = 0.05

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamSettings:
        d = dict(d)
        if "fps" in d:
            d["fps"] = tuple(float(f) for f in d["fps"])
        return cls(**d)


@dataclass(frozen=True)
class Plan:
    """How one stream is cut into windows (module docstring): ``frames`` frames at ``fps``."""

    fps: float
    frames: int  # N: the stream's length
    window: int  # T
    stride: int  # S
    lookahead: int  # L: frames of the window after the emitted ones
    emit: str

    def end_frame(self, k: int) -> int:
        """The frame whose arrival completes window k."""
        return (k + 1) * self.stride - 1

    def emitted(self, k: int) -> range:
        """The frames window k emits poses for (negative ones are padding)."""
        last = self.end_frame(k) - self.lookahead
        return range(last - self.stride + 1, last + 1)

    @property
    def first_window(self) -> int:
        """The first window that emits a real frame (earlier ones would emit only padding)."""
        return max(0, math.ceil((self.lookahead + 1) / self.stride) - 1)

    @property
    def windows(self) -> int:
        """One past the last window that is complete within the stream."""
        return self.frames // self.stride

    @property
    def delay_frames(self) -> int:
        """The most frames any pose waits for: the oldest emitted frame waits S - 1 + L."""
        return self.stride - 1 + self.lookahead

    def trigger_s(self, k: int) -> float:
        """When window k is complete, in seconds from the stream's start."""
        return self.end_frame(k) / self.fps

    def newest_complete(self, elapsed_s: float) -> int:
        """The newest window complete ``elapsed_s`` after the start (-1: none yet)."""
        arrived = math.floor(elapsed_s * self.fps + 1e-9)  # the newest frame that has arrived
        return (arrived + 1) // self.stride - 1


def lookahead(pipeline: str, window: int, stride: int, emit: str) -> int:
    """L: frames after the emitted ones in a window (module docstring)."""
    if pipeline == "seq2frame":
        return window - 1 - (window - 1) // 2
    return 0 if emit == "newest" else window - stride - (window - stride) // 2


def emit_of(pipeline: str, emit: str) -> str:
    """The emission actually used: a seq2frame model always emits its window's centre frame."""
    return "middle" if pipeline == "seq2frame" else emit


def make_plan(pipeline: str, *, window: int, fps: float, frames: int, stride: int, emit: str) -> Plan:
    """The windows of a stream of ``frames`` frames (ValueError for what the options check first)."""
    if pipeline == "seq2frame":
        stride = 1
    if not 1 <= stride <= window:
        raise ValueError(f"stride {stride} outside 1..{window}")
    emit = emit_of(pipeline, emit)
    return Plan(fps, frames, window, stride, lookahead(pipeline, window, stride, emit), emit)


def min_frames(pipeline: str, window: int, stride: int, emit: str) -> int:
    """The shortest stream (frames) in which one window emits a real frame."""
    p = make_plan(pipeline, window=window, fps=1.0, frames=0, stride=stride, emit=emit)
    return p.end_frame(p.first_window) + 1


def check(
    name: str, pipeline: str, window: int, settings: StreamSettings, *, stride_given: bool = True
) -> None:
    """UsageError (one line) for stream options that ``name`` (a backbone, T = ``window``) cannot take.

    ``stride_given`` False: a --stride that seq2frame backbones ignore (``run`` over several backbones).
    """
    bad_fps = [f for f in settings.fps if not (math.isfinite(f) and f > 0)]
    if bad_fps or not settings.fps:
        raise UsageError(f"--fps {bad_fps[0] if bad_fps else ''}: a camera rate must be > 0 frames/s")
    if settings.emit not in EMITS:
        raise UsageError(f"--emit {settings.emit!r}: choose from {', '.join(EMITS)}")
    stride = settings.stride
    if stride is not None and pipeline == "seq2frame" and stride_given:
        raise UsageError(f"--stride {stride}: {name} is seq2frame (one forward per new frame, its pose the window's "
                         "centre); drop --stride")  # fmt: skip
    if stride is not None and pipeline == "seq2seq" and not 1 <= stride <= window:
        raise UsageError(f"--stride {stride}: must lie in 1..{window}, the window of {name} (T={window})")
    s = stride if stride is not None and pipeline == "seq2seq" else 1
    need = min_frames(pipeline, window, s, settings.emit)
    for fps in settings.fps:
        frames = stream_frames(settings.seconds, fps)
        if frames < need:
            emit = emit_of(pipeline, settings.emit)
            raise UsageError(
                f"--seconds {settings.seconds:g} is too short for one window of {name} (T={window}, stride {s}, "
                f"emit {emit}) at {fps:g} fps: it needs {need} frames, at least {math.ceil(need / fps * 100) / 100:g} s"
            )


def stream_frames(seconds: float, fps: float) -> int:
    """Frames of a ``seconds``-long stream at ``fps``."""
    return int(math.floor(seconds * fps + 1e-9))


def auto_stride(pipeline: str, window: int, compute_s: float, fps: float, frames: int, emit: str) -> int:
    """``--stride auto``: the smallest stride whose window time covers the compute with headroom,
    at most T, and short enough that the stream of ``frames`` frames holds a window."""
    if pipeline == "seq2frame":
        return 1
    s = min(window, max(1, math.ceil(AUTO_HEADROOM * compute_s * fps)))
    while s > 1 and min_frames(pipeline, window, s, emit) > frames:
        s -= 1
    return s


# --------------------------------------------------------------------------- the clocked stream


@dataclass(frozen=True)
class WindowLog:
    """One window: when it was complete, started and done (s from the stream's start), or skipped."""

    k: int
    trigger: float
    start: float | None
    end: float | None
    compute: tuple[float, ...] = ()  # seconds per processor, in the processors' order

    @property
    def skipped(self) -> bool:
        return self.start is None


@dataclass
class StreamLog:
    """What :func:`run_stream` saw: the plan, every window in order, the wall time of the stream."""

    plan: Plan
    windows: list[WindowLog] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def processed(self) -> list[WindowLog]:
        return [w for w in self.windows if not w.skipped]

    def compute_s(self, processor: int | None = None) -> list[float]:
        """Seconds in the model per processed window (one processor's, or the window's whole)."""
        return [w.compute[processor] if processor is not None else (w.end or 0.0) - (w.start or 0.0)
                for w in self.processed]  # fmt: skip


def run_stream(
    processors: Sequence[Callable[[int], Any]],
    plan: Plan,
    *,
    device: str = "cpu",
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> StreamLog:
    """Run the stream of ``plan`` on the wall clock; each processed window goes through every
    processor (``processor(j)``: the window ending at frame j), in alternating order when several
    (paired comparisons: window k runs them forwards, k + 1 backwards), each timed to its
    synchronised end (bench.measure.timing.synchronize on CUDA)."""
    log = StreamLog(plan)
    k = plan.first_window
    t0 = clock()
    while k < plan.windows:
        now = clock() - t0
        due = plan.trigger_s(k)
        if now < due:
            sleep(due - now)
            continue
        newest = min(plan.newest_complete(now), plan.windows - 1)
        log.windows += [WindowLog(s, plan.trigger_s(s), None, None) for s in range(k, newest)]
        k = newest
        order = list(range(len(processors)))
        if k % 2:
            order.reverse()
        times = [0.0] * len(processors)
        for i in order:
            a = clock()
            processors[i](plan.end_frame(k))
            timing.synchronize(device)
            times[i] = clock() - a
        log.windows.append(WindowLog(k, plan.trigger_s(k), now, clock() - t0, tuple(times)))
        k += 1
    log.wall_s = clock() - t0
    return log


# --------------------------------------------------------------------------- per frame


@dataclass(frozen=True)
class FrameTimes:
    """Every frame of the stream that a window emits (padding and frames past the end left out),
    in seconds; ``ready`` NaN where the frame was dropped."""

    index: np.ndarray
    arrival: np.ndarray
    ready: np.ndarray
    delay: np.ndarray
    queue: np.ndarray
    compute: np.ndarray
    late: int  # produced after the next window was due (0 under skip_to_newest, counted all the same)

    @property
    def produced(self) -> np.ndarray:
        return ~np.isnan(self.ready)

    @property
    def latency(self) -> np.ndarray:
        return (self.ready - self.arrival)[self.produced]

    @property
    def dropped(self) -> int:
        return int((~self.produced).sum()) + self.late


def per_frame(log: StreamLog) -> FrameTimes:
    """The frames of ``log`` with their arrival, ready time and latency parts (module docstring)."""
    p = log.plan
    cols: dict[str, list[float]] = {c: [] for c in ("index", "arrival", "ready", "delay", "queue", "compute")}
    late = 0
    for w in log.windows:
        for i in p.emitted(w.k):
            if not 0 <= i < p.frames:
                continue
            arrival = i / p.fps
            cols["index"].append(i)
            cols["arrival"].append(arrival)
            cols["delay"].append(w.trigger - arrival)
            if w.skipped:
                cols["ready"].append(math.nan)
                cols["queue"].append(math.nan)
                cols["compute"].append(math.nan)
                continue
            assert w.start is not None and w.end is not None
            late += int(w.k + 1 < p.windows and w.start > p.trigger_s(w.k + 1))  # the stream has no window K
            cols["ready"].append(w.end)
            cols["queue"].append(w.start - w.trigger)
            cols["compute"].append(w.end - w.start)
    a = {c: np.asarray(v, dtype=float) for c, v in cols.items()}
    return FrameTimes(a["index"].astype(int), a["arrival"], a["ready"], a["delay"], a["queue"], a["compute"], late)


def rtf(log: StreamLog) -> float:
    """Compute seconds per second of video: the median window's compute x windows per second."""
    c = log.compute_s()
    return float(np.median(c)) * log.plan.fps / log.plan.stride if c else math.inf


def sustained(log: StreamLog) -> bool:
    """Every window processed and the real-time factor below 1 (module docstring)."""
    return bool(log.processed) and not any(w.skipped for w in log.windows) and rtf(log) < 1.0


def _ms(x: float) -> float:
    return round(1e3 * x, 4)


def latency_fields(log: StreamLog, frames: FrameTimes, load: dict[str, Any] | None = None) -> dict[str, Any]:
    """stream_latency's value and fields (ms): median, p90, p99, delay_ms, queue_ms, compute_ms, CI.

    The CI: the per-frame latencies are not independent samples (the frames of one window share its
    queue and compute, and their delays are fixed by their position), so the CI of
    bench.measure.timing.stats_fields is taken over the windows' queue + compute (one sample per
    processed window) and shifted by the fixed delay part: ``ci_method`` says so. ``n`` is the
    number of windows, ``frames_posed`` the frames with a pose.
    """
    lat = frames.latency
    if not len(lat):
        raise RuntimeError("no frame got a pose: every window of the stream was skipped")
    value = float(np.median(lat))
    per_window = [(w.end or 0.0) - w.trigger for w in log.processed]  # queue + compute of each window
    stats = timing.stats_fields([1e3 * v for v in per_window], load=load)
    mid = 1e3 * float(np.median(per_window))
    if stats["ci_low"] is not None:  # one window: no interval
        stats.update(ci_low=round(1e3 * value - (mid - stats["ci_low"]), 4),
                     ci_high=round(1e3 * value + (stats["ci_high"] - mid), 4))  # fmt: skip
    stats["ci_method"] = f"{stats['ci_method']} over windows (queue + compute), shifted by the fixed delay"
    produced = frames.produced
    p90, p99 = np.percentile(lat, [90, 99])
    return {
        "value": _ms(value), "p90": _ms(float(p90)), "p99": _ms(float(p99)),
        "delay_ms": _ms(float(np.median(frames.delay[produced]))),
        "queue_ms": _ms(float(np.median(frames.queue[produced]))),
        "compute_ms": _ms(float(np.median(log.compute_s()))),
        "frames_posed": int(produced.sum()), "windows": len(log.windows), **stats,
    }  # fmt: skip


def plan_fields(plan: Plan) -> dict[str, Any]:
    """What every stream record carries about the stream's cut."""
    return {"fps_in": plan.fps, "stride": plan.stride, "window": plan.window, "delay_frames": plan.delay_frames,
            "lookahead_frames": plan.lookahead, "emit": plan.emit}  # fmt: skip


__all__ = [
    "EMITS", "POLICY", "FrameTimes", "Plan", "StreamLog", "StreamSettings", "WindowLog", "auto_stride", "check",
    "latency_fields", "make_plan", "min_frames", "per_frame", "plan_fields", "rtf", "run_stream", "stream_frames",
    "sustained",
]
