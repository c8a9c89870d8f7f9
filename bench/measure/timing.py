"""Wall-clock cost of a forward pass or a training step, and the settings that change it.

    samples = measure_latency(fn, warmup=2, repeats=10, device="cpu")   # ms per call, every sample
    stats = summarise(samples)                                          # median, p10, p90
    fields = stats_fields(samples, load=monitor.fields())               # n, CI, stable ... (below)
    ref_ms, new_ms = measure_paired(rect_fn, pruned_fn, warmup=1, repeats=6)   # alternated
    ms = measure_rounds([fp32_rect, fp32_case, int8_case], warmup=1, repeats=6)   # ms[i][k]: fn i, round k
    fps, clips = throughput(stats.median, "seq2seq", batch=1, frames=243)

Timers. On CPU every sample is one ``timeit.Timer.timeit(number=1)`` call of the standard
library (``time.perf_counter``, garbage collection off while timing). On CUDA every sample is a
pair of CUDA events around one call, read only once the minimum ``repeats`` are queued (then after
each further call, to decide whether to go on), so the host does not stall between the first ones. torch.utils.benchmark.Timer is not used for the samples themselves: its
``timeit`` runs two hidden warm-up calls before every measurement and ``blocked_autorange``
chooses its own number of samples, which would triple the cost of a 5-second forward on 2 CPU
cores and hide how many samples a median rests on.

Statistics (:func:`stats_fields`, on every timed record). ``ci_low``/``ci_high``: a 95 %
confidence interval of the median, by the method the sample size allows (``ci_method``):

- n >= 6: order statistics (``binomial_order_statistics``; distribution-free: the number of
  samples below the true median is Binomial(n, 1/2), so the k-th smallest and k-th largest samples
  bracket it with a probability that needs no assumption about the distribution);
- 2 <= n < 6: Student's t on the logarithms (``student_t_log``): exp(mean(log x) +- t(n-1) s/sqrt(n)),
  the interval of the geometric mean, which is the median when the log-times are symmetric.
  Timings and their ratios are positive and skewed to the right, and their logarithms are close to
  symmetric; with so few samples no distribution-free 95 % interval exists ([min, max] of 5 covers
  the median with 94 %, of 2 with 50 %). ``tests/benchmarks/coverage.py`` measures how often these
  intervals cover the median of many more samples of the same phase;
- n = 1: no interval (``ci_low``/``ci_high`` None, ``ci_method`` ``none``): one sample says nothing
  about its spread.

``mad_pct``: the median absolute deviation from the median, in % of the median. ``drift_pct``: the
median of the second half of the samples over that of the first half, minus 1, in %.

The stability rule (``stable``; ``unstable_reason`` says which part failed, "" when stable): a
figure is stable when (1) it has a 95 % CI from at least 3 samples whose half-width, the larger of
median - ci_low and ci_high - median, is at most 5 % of the median; (2) the two halves' medians differ by at most 10 %
(a load that came or went during the timing; judged from 4 samples on); (3) the machine was not
busy (bench.measure.load: busy = other processes used more than the cores the timing left free,
plus a quarter); (4) for a time (not a ratio of two alternated calls), the machine ran at its usual
speed: ``machine_slowdown`` (bench.measure.reference) at most 1.15. A ratio of paired calls keeps
its value when the machine slows both calls of a pair, so (4) does not apply to it.

Adaptive repetition (``measure_latency``, ``measure_paired``): after the warm-up, at least
``repeats`` samples and ``min_time_s`` of timed calls; then more, until the CI is tight by rule
(1) or ``max_time_s`` of timed calls or ``max_repeats`` samples are spent (the way pyperf and
timeit's autorange calibrate, with the CI as the goal).

FPS follows SPEC section 5: a seq2seq forward yields B x T output frames, a seq2frame forward B
(the centre frame of each clip); clips/s is B per forward in both cases.
"""

from __future__ import annotations

import contextlib
import math
import timeit
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn as nn

TIMER_CPU = "timeit"  # the ``method`` of latency records measured on CPU
TIMER_CUDA = "cuda_event"
CI_METHOD = "binomial_order_statistics"
CI_METHOD_SMALL = "student_t_log"  # 2 <= n < MIN_CI_SAMPLES
CI_LEVEL = 0.95
MIN_CI_SAMPLES = 6  # the fewest samples whose [min, max] covers the median with >= 95 %
MIN_DRIFT_SAMPLES = 4  # rule (2) compares halves of at least 2 samples each
# Rule (1) also needs this many samples: an interval from 2 (t with 1 degree of freedom) covered the
# median of 48 pairs in only 69 % of the windows it called tight (tests/benchmarks/coverage.py), from 3 in 97 %.
MIN_STABLE_SAMPLES = 3
STABLE_CI_REL = 0.05  # rule (1): CI half-width <= 5 % of the median
STABLE_DRIFT_REL = 0.10  # rule (2): the halves' medians within 10 % of each other
STABLE_SLOWDOWN = 1.15  # rule (4): the reference workload at most 15 % slower than usual
# t(0.975, df) for df = 1..4: the small-sample interval's quantiles (scipy.stats.t.ppf(0.975, df))
T_975 = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305, 4: 2.776445105}


class Between(Protocol):
    """What a timer calls between its samples (bench.measure.reference.Interleaved)."""

    def after(self, sample_ms: float) -> None: ...


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


def median_ci(samples: Sequence[float], level: float = CI_LEVEL) -> tuple[float, float, float]:
    """(low, high, coverage): the order-statistics confidence interval of the median.

    The narrowest symmetric pair of order statistics x_(k), x_(n+1-k) whose coverage
    P(k <= Binomial(n, 1/2) <= n - k) reaches ``level``; with too few samples for that, [min, max]
    and its (lower) coverage.
    """
    if not samples:
        raise ValueError("no samples for a confidence interval")
    x = sorted(float(v) for v in samples)
    n = len(x)
    # x_(k) .. x_(n+1-k) (1-based) covers the median with 1 - 2 P(B <= k - 1), B ~ Binomial(n, 1/2):
    # take the largest k whose lower tail P(B <= k - 1) stays within (1 - level) / 2.
    k, tail = 1, _binomial_half_pmf(n, 0)  # tail = P(B <= k - 1)
    while k + 1 <= (n + 1) // 2:
        tail_next = tail + _binomial_half_pmf(n, k)
        if 1.0 - 2.0 * tail_next < level:
            break
        k, tail = k + 1, tail_next
    return x[k - 1], x[n - k], max(0.0, 1.0 - 2.0 * tail)


def _binomial_half_pmf(n: int, i: int) -> float:
    """P(B = i) for B ~ Binomial(n, 1/2), in log space so that large n does not overflow."""
    return math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2.0))


def log_t_ci(samples: Sequence[float]) -> tuple[float, float]:
    """Student's t 95 % interval on the logarithms of 2 to 5 positive samples (module docstring)."""
    n = len(samples)
    if not 2 <= n < MIN_CI_SAMPLES or min(samples) <= 0:
        raise ValueError(f"the small-sample interval takes 2-{MIN_CI_SAMPLES - 1} positive samples, got {n}")
    logs = np.log(np.asarray(samples, dtype=float))
    half = T_975[n - 1] * float(logs.std(ddof=1)) / math.sqrt(n)
    centre = float(logs.mean())
    return math.exp(centre - half), math.exp(centre + half)


def ci(samples: Sequence[float]) -> tuple[float | None, float | None, float | None, str]:
    """(low, high, level, method): the 95 % CI of the median the sample size allows (module docstring)."""
    n = len(samples)
    if n >= MIN_CI_SAMPLES:
        low, high, level = median_ci(samples)
        return low, high, level, CI_METHOD
    if n >= 2 and min(samples) > 0:
        low, high = log_t_ci(samples)
        return low, high, CI_LEVEL, CI_METHOD_SMALL
    return None, None, None, "none"


def _median(x: Sequence[float]) -> float:
    return float(np.median(np.asarray(x, dtype=float)))


def ci_tight(samples: Sequence[float], rel: float = STABLE_CI_REL) -> bool:
    """Rule (1) of the module docstring: a 95 % CI whose half-width is within ``rel`` of the median."""
    low, high, _, _ = ci(samples)
    med = _median(samples)
    if low is None or high is None or len(samples) < MIN_STABLE_SAMPLES:
        return False
    return med > 0 and max(med - low, high - med) <= rel * med


def stats_fields(
    samples: Sequence[float], *, load: Mapping[str, Any] | None = None, ratio: bool = False
) -> dict[str, Any]:
    """The statistics every timed record carries (module docstring), with ``load``'s fields merged.

    ``samples`` in the record's unit (ms, or x for ratios). ``load`` is what
    :meth:`bench.measure.load.Monitor.fields` measured while they were taken (its ``busy`` makes the
    figure unstable), with the reference workload's ``machine_slowdown`` where it ran; ``ratio``:
    the samples are ratios of paired calls, which rule (4) leaves alone. Metrics added later call
    this too, so that every timing reads the same way.
    """
    if not samples:
        raise ValueError("no samples to summarise")
    n = len(samples)
    med = _median(samples)
    low, high, level, method = ci(samples)
    mad = _median([abs(v - med) for v in samples])
    half = n // 2
    drift = 0.0
    if n >= MIN_DRIFT_SAMPLES and _median(samples[:half]):
        drift = _median(samples[n - half:]) / _median(samples[:half]) - 1.0
    reasons = []
    if low is None or high is None:
        reasons.append("one sample: no interval")
    elif n < MIN_STABLE_SAMPLES:
        reasons.append(f"too few samples for a stable figure (n = {n} < {MIN_STABLE_SAMPLES})")
    elif not med > 0 or max(med - low, high - med) > STABLE_CI_REL * med:
        width = max(med - low, high - med) / med if med else math.inf
        reasons.append(f"CI half-width {width:.1%} > {STABLE_CI_REL:.0%} of the median (n = {n})")
    if abs(drift) > STABLE_DRIFT_REL:
        reasons.append(f"drift {drift:+.1%} between the first and second half")
    load = dict(load or {})
    if load.get("busy"):
        reasons.append(f"CPU busy with other processes ({load.get('other_cores', 0):.2f} cores)")
    slow = load.get("machine_slowdown")
    if not ratio and slow is not None and slow > STABLE_SLOWDOWN:
        reasons.append(f"machine slow: the reference workload took {slow:.2f}x its usual time")
    return {
        "n": n, "ci_low": low, "ci_high": high, "ci_level": None if level is None else round(level, 4),
        "ci_method": method, "mad_pct": round(100 * mad / med, 3) if med else None,
        "drift_pct": round(100 * drift, 3), "stable": not reasons, "unstable_reason": "; ".join(reasons), **load,
    }  # fmt: skip


def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


@dataclass(frozen=True)
class Budget:
    """When adaptive repetition stops (module docstring): sample counts and timed seconds."""

    repeats: int
    min_time_s: float = 0.0
    max_time_s: float | None = None  # None: min_time_s (no extension to tighten the CI)
    max_repeats: int | None = None

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"need repeats >= 1, got repeats={self.repeats}")

    def more(self, values: Sequence[float], spent_ms: float) -> bool:
        """Whether to take another sample, given the ``values`` so far and the timed ms spent."""
        n = len(values)
        cap = max(self.repeats, self.max_repeats if self.max_repeats is not None else self.repeats)
        if n >= cap:
            return False
        if n < self.repeats or spent_ms < self.min_time_s * 1e3:
            return True
        limit = max(self.min_time_s, self.max_time_s if self.max_time_s is not None else self.min_time_s)
        return spent_ms < limit * 1e3 and not ci_tight(values)


def measure_latency(
    fn: Callable[[], Any],
    *,
    warmup: int,
    repeats: int,
    device: str | torch.device = "cpu",
    min_time_s: float = 0.0,
    max_repeats: int | None = None,
    max_time_s: float | None = None,
    clock: Callable[[], float] | None = None,
    reference: Between | None = None,
) -> list[float]:
    """Milliseconds per call of ``fn``, one entry per timed call (every sample is kept).

    ``fn`` runs ``warmup`` times untimed, then at least ``repeats`` timed times and ``min_time_s``
    of timed calls, then more while the median's CI is wider than the stability rule allows and
    the timed total is below ``max_time_s`` (at most ``max_repeats`` samples): cheap calls get
    enough samples for a tight CI, expensive ones no more than their budget. ``clock`` replaces
    ``time.perf_counter`` on CPU (tests drive it by hand); CUDA uses events and ignores it.
    ``reference`` is told every sample (``after(ms)``) and may run its own workload between samples
    (bench.measure.reference.Interleaved), untimed here; CPU only.
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    budget = Budget(repeats, min_time_s, max_time_s, max_repeats)
    dev = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(dev)
    if dev.type == "cuda":
        return _cuda_samples([fn], budget, lambda t: t[0])[0]
    timer = timeit.Timer(fn, timer=clock or timeit.default_timer)
    samples: list[float] = []
    while budget.more(samples, sum(samples)):
        samples.append(timer.timeit(number=1) * 1e3)
        if reference is not None:
            reference.after(samples[-1])
    return samples


def measure_paired(
    fn_ref: Callable[[], Any],
    fn_new: Callable[[], Any],
    *,
    warmup: int,
    repeats: int,
    device: str | torch.device = "cpu",
    min_time_s: float = 0.0,
    max_repeats: int | None = None,
    max_time_s: float | None = None,
    clock: Callable[[], float] | None = None,
    reference: Between | None = None,
) -> tuple[list[float], list[float]]:
    """(ref ms, new ms) of calls alternated ref, new, ref, new ...; pair i is (ref[i], new[i]).

    Both warm up first (``warmup`` calls each, alternated). Pairs are added under the same budget
    as :func:`measure_latency`, the CI goal applying to the per-pair ratios ref / new (the
    speed-up of ``new``): a load that slows the machine for a while slows both calls of a pair,
    and their ratio keeps its value where two medians taken at different times would not.
    :func:`measure_rounds` with two functions.
    """
    ref, new = measure_rounds([fn_ref, fn_new], warmup=warmup, repeats=repeats, device=device,
                              min_time_s=min_time_s, max_repeats=max_repeats, max_time_s=max_time_s,
                              clock=clock, reference=reference)  # fmt: skip
    return ref, new


def measure_rounds(
    fns: Sequence[Callable[[], Any]],
    *,
    warmup: int,
    repeats: int,
    device: str | torch.device = "cpu",
    min_time_s: float = 0.0,
    max_repeats: int | None = None,
    max_time_s: float | None = None,
    clock: Callable[[], float] | None = None,
    reference: Between | None = None,
) -> list[list[float]]:
    """Milliseconds of every call, per function: ``out[i][k]`` is function i in round k.

    :func:`measure_paired` for more than two forwards (the precision speed-ups compare a
    reduced-precision case with its fp32 case and the fp32 rectangle in one process). One round
    calls every function once, in order, so a load that comes and goes slows the whole round and a
    ratio of two functions within a round keeps its value. Every function warms up ``warmup`` times
    (alternated). The budget is measure_paired's with the time limits per *pair* of calls, so each
    function is timed as long as in a pair; the CI goal applies to every ratio of the other
    functions over the last one (the widest decides; on CUDA the first). ``reference`` is told the
    ms of every round.
    """
    if len(fns) < 2:
        raise ValueError(f"need two or more functions to alternate, got {len(fns)}")
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    scale = len(fns) / 2
    budget = Budget(repeats, min_time_s * scale, None if max_time_s is None else max_time_s * scale, max_repeats)
    dev = torch.device(device)
    for _ in range(warmup):
        for fn in fns:
            fn()
    synchronize(dev)
    if dev.type == "cuda":
        return _cuda_samples(list(fns), budget, lambda t: t[0] / t[-1])
    timers = [timeit.Timer(fn, timer=clock or timeit.default_timer) for fn in fns]
    out: list[list[float]] = [[] for _ in fns]

    def more() -> bool:  # one more round while any ratio's CI is still wide
        spent = sum(sum(s) for s in out)
        return any(budget.more([a / b for a, b in zip(s, out[-1], strict=True)], spent) for s in out[:-1])

    while more():
        for timer, samples in zip(timers, out, strict=True):
            samples.append(timer.timeit(number=1) * 1e3)
        if reference is not None:
            reference.after(sum(s[-1] for s in out))
    return out


def _cuda_samples(
    fns: Sequence[Callable[[], Any]], budget: Budget, value: Callable[[tuple[float, ...]], float]
) -> list[list[float]]:
    """Per function, the ms of each round of calls (one call of each ``fns`` per round, in order)."""
    rounds: list[list[tuple[torch.cuda.Event, torch.cuda.Event]]] = []
    while True:
        if len(rounds) >= budget.repeats:  # only then is it worth a sync to see whether to go on
            rounds[-1][-1][1].synchronize()
            times = [tuple(s.elapsed_time(e) for s, e in r) for r in rounds]
            if not budget.more([value(t) for t in times], sum(sum(t) for t in times)):
                break
        events = []
        for fn in fns:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            events.append((start, end))
        rounds.append(events)
    torch.cuda.synchronize()
    return [[s.elapsed_time(e) for s, e in (r[i] for r in rounds)] for i in range(len(fns))]


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
