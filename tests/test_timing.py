"""Timing functions driven by fake callables whose cost is known exactly (a hand-advanced clock).

No assertion here depends on how fast the machine is: the fake clock only moves when a fake
callable says it spent time.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import backbones
from bench import timing


class FakeClock:
    """A clock in seconds that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def spend(self, ms: float) -> None:
        self.now += ms / 1e3


def costing(clock: FakeClock, costs_ms: list[float]):
    """A callable whose i-th call costs costs_ms[i] on ``clock``."""
    calls = iter(costs_ms)

    def fn() -> None:
        clock.spend(next(calls))

    return fn


def test_every_timed_call_is_one_sample_and_warmup_is_not_timed():
    clock = FakeClock()
    costs = [100.0, 50.0, 5.0, 7.0, 6.0, 9.0]  # two slow warm-up calls, then the steady state
    samples = timing.measure_latency(costing(clock, costs), warmup=2, repeats=4, clock=clock)
    assert samples == pytest.approx([5.0, 7.0, 6.0, 9.0])


def test_min_time_adds_samples_for_cheap_calls_up_to_the_cap():
    clock = FakeClock()
    fn = costing(clock, [10.0] * 100)
    # 10 ms calls, at least 0.095 s of timed calls: 10 samples, though 2 repeats were asked for
    assert len(timing.measure_latency(fn, warmup=0, repeats=2, min_time_s=0.095, max_repeats=50, clock=clock)) == 10
    capped = timing.measure_latency(fn, warmup=0, repeats=2, min_time_s=10.0, max_repeats=5, clock=clock)
    assert len(capped) == 5
    # an expensive call gets no more than the repeats asked for
    slow = costing(clock, [3000.0] * 10)
    assert len(timing.measure_latency(slow, warmup=0, repeats=3, min_time_s=2.0, max_repeats=50, clock=clock)) == 3


def test_measure_latency_rejects_no_repeats():
    with pytest.raises(ValueError, match="repeats"):
        timing.measure_latency(lambda: None, warmup=0, repeats=0)


def test_latency_ratio_follows_cost_ratio():
    clock = FakeClock()
    cheap = timing.summarise(timing.measure_latency(costing(clock, [4.0] * 6), warmup=1, repeats=5, clock=clock))
    dear = timing.summarise(timing.measure_latency(costing(clock, [12.0] * 6), warmup=1, repeats=5, clock=clock))
    assert dear.median / cheap.median == pytest.approx(3.0)


def test_summarise_median_and_spread():
    s = timing.summarise([float(v) for v in range(1, 12)])  # 1..11
    assert (s.median, s.p10, s.p90, s.n) == (6.0, 2.0, 10.0, 11)
    assert timing.summarise([5.0]).p10 == timing.summarise([5.0]).p90 == 5.0
    with pytest.raises(ValueError):
        timing.summarise([])


@pytest.mark.parametrize(
    ("pipeline", "batch", "frames", "frames_per_forward"),
    [("seq2seq", 1, 243, 243), ("seq2seq", 4, 81, 324), ("seq2frame", 1, 351, 1), ("seq2frame", 8, 351, 8)],
)
def test_fps_counts_output_frames_and_clips(pipeline, batch, frames, frames_per_forward):
    fps, clips = timing.throughput(250.0, pipeline, batch, frames)  # four forwards per second
    assert fps == pytest.approx(4 * frames_per_forward)
    assert clips == pytest.approx(4 * batch)


def test_fps_rejects_bad_input():
    with pytest.raises(ValueError):
        timing.throughput(0.0, "seq2seq", 1, 243)
    with pytest.raises(ValueError, match="pipeline"):
        timing.output_frames("seq2many", 1, 243)


class _Costly(torch.autograd.Function):
    """Identity whose forward and backward each cost a known time on a fake clock."""

    @staticmethod
    def forward(ctx, x, clock, fwd_ms, bwd_ms):  # type: ignore[override]
        clock.spend(fwd_ms)
        ctx.clock, ctx.bwd_ms = clock, bwd_ms
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        ctx.clock.spend(ctx.bwd_ms)
        return grad, None, None, None


class FakeLifter(nn.Module):
    """(B, T, 17, 2) -> (B, T, 17, 3) with a forward costing 3 ms and a backward costing 7 ms."""

    def __init__(self, clock: FakeClock):
        super().__init__()
        self.clock = clock
        self.lin = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Costly.apply(self.lin(x), self.clock, 3.0, 7.0)


def test_train_step_time_is_forward_plus_backward():
    clock = FakeClock()
    model = FakeLifter(clock)
    x, y = torch.randn(2, 9, 17, 2), torch.randn(2, 9, 17, 3)
    step = timing.train_step_fn(model, x, y)
    samples = timing.measure_latency(step, warmup=1, repeats=3, clock=clock)
    assert samples == pytest.approx([10.0, 10.0, 10.0])
    assert model.training


def test_train_step_runs_adamw_on_the_mpjpe_loss():
    model = nn.Linear(2, 3)
    x = torch.randn(4, 9, 17, 2)
    y = model(x).detach() + torch.tensor([3.0, 4.0, 0.0])  # every joint 5 mm away
    before = [p.detach().clone() for p in model.parameters()]
    step = timing.train_step_fn(model, x, y, lr=1e-2)
    assert step().item() == pytest.approx(5.0, rel=1e-5)  # the loss before the first update
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    losses = [step().item() for _ in range(20)]
    assert losses[-1] < 5.0


def test_train_step_trains_a_real_tiny_backbone():
    torch.manual_seed(0)
    model = backbones.create("mixste", variant="hierarchical", frames=9, size="tiny")
    x, y = torch.randn(1, 9, 17, 2), torch.randn(1, 9, 17, 3)
    step = timing.train_step_fn(model, x, y, lr=1e-3)
    first = step().item()
    for _ in range(8):
        last = step().item()
    assert last < first


def test_settings_are_applied_and_restored():
    threads = torch.get_num_threads()
    benchmark = torch.backends.cudnn.benchmark
    with timing.applied(timing.SpeedSettings(threads=1, cudnn_benchmark=not benchmark)):
        assert torch.get_num_threads() == 1
        assert torch.backends.cudnn.benchmark is (not benchmark)
        described = timing.describe(timing.SpeedSettings(threads=1), "cpu", "float32")
        assert described["threads"] == 1
    assert torch.get_num_threads() == threads
    assert torch.backends.cudnn.benchmark is benchmark
    assert described["compile"] is False and described["dtype"] == "float32"


def test_timer_names():
    assert timing.timer_name("cpu") == "timeit"
    assert timing.timer_name("cuda:0") == "cuda_event"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_events_time_device_work():
    cycles = 10_000_000
    short = timing.summarise(timing.measure_latency(lambda: torch.cuda._sleep(cycles), warmup=1, repeats=5,
                                                    device="cuda"))  # fmt: skip
    long = timing.summarise(timing.measure_latency(lambda: torch.cuda._sleep(2 * cycles), warmup=1, repeats=5,
                                                   device="cuda"))  # fmt: skip
    # the host returns at once from _sleep; only device-side timing sees the sleep
    assert long.median / short.median == pytest.approx(2.0, rel=0.25)
