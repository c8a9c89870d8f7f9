"""Wall-clock cost of a forward pass or a training step, and the settings that change it.

    samples = measure_latency(fn, warmup=2, repeats=10, device="cpu")   # ms per call, every sample
    stats = summarise(samples)                                          # median, p10, p90
    fps, clips = throughput(stats.median, "seq2seq", batch=1, frames=243)

Timers. On CPU every sample is one ``timeit.Timer.timeit(number=1)`` call of the standard
library (``time.perf_counter``, garbage collection off while timing). On CUDA every sample is a
pair of CUDA events around one call, read after one synchronisation at the end, so the host never
stalls between samples. torch.utils.benchmark.Timer is not used for the samples themselves: its
``timeit`` runs two hidden warm-up calls before every measurement and ``blocked_autorange``
chooses its own number of samples, which would triple the cost of a 5-second forward on 2 CPU
cores and hide how many samples a median rests on.

FPS follows SPEC section 5: a seq2seq forward yields B x T output frames, a seq2frame forward B
(the centre frame of each clip); clips/s is B per forward in both cases.
"""

from __future__ import annotations

import contextlib
import timeit
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

TIMER_CPU = "timeit"  # the ``method`` of latency records measured on CPU
TIMER_CUDA = "cuda_event"


@dataclass(frozen=True)
class SpeedSettings:
    """The knobs that change speed; all of them are recorded next to every timing.

    ``threads`` None keeps torch's default (one per core). ``compile`` wraps the model in
    torch.compile; off by default because compilation takes minutes and changes what is measured.
    ``tf32`` lets CUDA matmuls and convolutions use TensorFloat-32 (torch's default is off for
    matmuls); ``cudnn_benchmark`` lets cuDNN pick its fastest algorithms per shape.
    """

    threads: int | None = None
    cudnn_benchmark: bool = False
    tf32: bool = False
    compile: bool = False


@dataclass(frozen=True)
class Summary:
    """Median and spread of a list of samples (ms)."""

    median: float
    p10: float
    p90: float
    n: int


def summarise(samples: list[float]) -> Summary:
    """Median, 10th and 90th percentile (linear interpolation) of ``samples``."""
    if not samples:
        raise ValueError("no samples to summarise")
    a = np.asarray(samples, dtype=float)
    p10, med, p90 = np.percentile(a, [10, 50, 90])
    return Summary(median=float(med), p10=float(p10), p90=float(p90), n=len(samples))


def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def measure_latency(
    fn: Callable[[], Any],
    *,
    warmup: int,
    repeats: int,
    device: str | torch.device = "cpu",
    min_time_s: float = 0.0,
    max_repeats: int | None = None,
    clock: Callable[[], float] | None = None,
) -> list[float]:
    """Milliseconds per call of ``fn``, one entry per timed call (every sample is kept).

    ``fn`` runs ``warmup`` times untimed, then at least ``repeats`` timed times and, while the
    timed total is below ``min_time_s``, more (up to ``max_repeats``): cheap calls get enough
    samples for a stable median, expensive ones no more than ``repeats``. ``clock`` replaces
    ``time.perf_counter`` on CPU (tests drive it by hand); CUDA uses events and ignores it.
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    cap = max(repeats, max_repeats if max_repeats is not None else repeats)
    dev = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(dev)
    if dev.type == "cuda":
        return _cuda_samples(fn, repeats, cap, min_time_s)
    timer = timeit.Timer(fn, timer=clock or timeit.default_timer)
    samples: list[float] = []
    while len(samples) < repeats or (sum(samples) < min_time_s * 1e3 and len(samples) < cap):
        samples.append(timer.timeit(number=1) * 1e3)
    return samples


def _cuda_samples(fn: Callable[[], Any], repeats: int, cap: int, min_time_s: float) -> list[float]:
    pairs: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
    spent_ms = 0.0
    while len(pairs) < repeats or (spent_ms < min_time_s * 1e3 and len(pairs) < cap):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        pairs.append((start, end))
        if len(pairs) >= repeats:  # only then is it worth a sync to see whether to go on
            end.synchronize()
            spent_ms = sum(s.elapsed_time(e) for s, e in pairs)
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in pairs]


def timer_name(device: str | torch.device) -> str:
    """The ``method`` of a latency record measured on ``device``."""
    return TIMER_CUDA if torch.device(device).type == "cuda" else TIMER_CPU


def output_frames(pipeline: str, batch: int, frames: int) -> int:
    """Output frames of one forward: B x T for seq2seq, B for seq2frame (SPEC section 5)."""
    if pipeline == "seq2seq":
        return batch * frames
    if pipeline == "seq2frame":
        return batch
    raise ValueError(f"unknown pipeline {pipeline!r}; expected seq2seq or seq2frame")


def throughput(latency_ms: float, pipeline: str, batch: int, frames: int) -> tuple[float, float]:
    """(frames/s, clips/s) of a forward taking ``latency_ms``."""
    if latency_ms <= 0:
        raise ValueError(f"latency must be positive, got {latency_ms} ms")
    per_s = 1e3 / latency_ms
    return output_frames(pipeline, batch, frames) * per_s, batch * per_s


def mpjpe_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-joint position error: the mean Euclidean distance over joints and frames."""
    return (pred - target).norm(dim=-1).mean()


def train_step_fn(
    model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, *, lr: float = 1e-4
) -> Callable[[], torch.Tensor]:
    """One training step as a callable: forward, MPJPE loss, backward, AdamW step.

    The optimizer is created once, so its state tensors exist from the second call on, as they do
    in real training; time the steady state by warming up at least once. Each call returns the
    (detached) loss of the step. The model is put in training mode (dropout, drop path on).
    """
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = mpjpe_loss(model(inputs), target)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def describe(settings: SpeedSettings, device: str | torch.device, dtype: str) -> dict[str, Any]:
    """The speed settings as recorded next to a timing (``threads`` is the count actually used)."""
    d = asdict(settings)
    d.update(threads=torch.get_num_threads(), dtype=dtype, autocast=False)
    if torch.device(device).type != "cuda":
        d.update(cudnn_benchmark=False, tf32=False)  # CUDA-only switches: say they did nothing
    return d


@contextlib.contextmanager
def applied(settings: SpeedSettings) -> Iterator[None]:
    """Apply ``settings`` to torch's global switches for the block and restore them afterwards."""
    saved = (
        torch.get_num_threads(),
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )
    try:
        if settings.threads:
            torch.set_num_threads(settings.threads)
        torch.backends.cudnn.benchmark = settings.cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = settings.tf32
        torch.backends.cudnn.allow_tf32 = settings.tf32
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.backends.cudnn.benchmark = saved[1]
        torch.backends.cuda.matmul.allow_tf32 = saved[2]
        torch.backends.cudnn.allow_tf32 = saved[3]
