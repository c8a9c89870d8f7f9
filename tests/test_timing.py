"""Timing functions driven by fake callables whose cost is known exactly (a hand-advanced clock).

No assertion here depends on how fast the machine is: the fake clock only moves when a fake
callable says it spent time.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import backbones
from bench.analysis import stability
from bench.measure import timing


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


# --------------------------------------------------------------------------- statistics and stability


def test_median_ci_is_the_binomial_order_statistics_interval():
    # n = 10: P(2 <= Bin(10, 1/2) <= 8) = 0.979 >= 0.95 but P(3 <= B <= 7) = 0.891: x_(2), x_(9)
    low, high, level = timing.median_ci([float(v) for v in range(10, 0, -1)])
    assert (low, high) == (2.0, 9.0) and level == pytest.approx(1 - 2 * (1 + 10) / 1024)
    # n = 6 is the fewest with a 95 % interval: [min, max], coverage 1 - 2/64
    assert timing.median_ci([5.0, 1.0, 2.0, 3.0, 4.0, 6.0]) == (1.0, 6.0, pytest.approx(1 - 2 / 64))
    low, high, level = timing.median_ci([1.0, 2.0, 3.0])  # too few: [min, max] and its lower coverage
    assert (low, high, level) == (1.0, 3.0, pytest.approx(0.75))


def test_median_ci_narrows_with_more_samples_and_covers_the_median():
    rng = torch.Generator().manual_seed(0)
    widths = []
    for n in (10, 100, 1000):
        x = (100 + torch.randn(n, generator=rng)).tolist()
        low, high, level = timing.median_ci(x)
        assert low <= sorted(x)[n // 2] <= high and level >= 0.95
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]


def _seq(kind: str, n: int = 40) -> list[float]:
    """Sample sequences with a known character (ms), deterministic."""
    g = torch.Generator().manual_seed(1)
    noise = (torch.rand(n, generator=g) - 0.5).tolist()  # uniform in [-0.5, 0.5)
    if kind == "stable":  # 10 ms +- 1 %
        return [10.0 + 0.2 * e for e in noise]
    if kind == "drifting":  # a load arrives half-way: 30 % slower from then on
        return [(10.0 if i < n // 2 else 13.0) + 0.2 * e for i, e in enumerate(noise)]
    if kind == "bimodal":  # two states taken at random, e.g. a thread preempted or not
        return [(10.0 if e < 0 else 20.0) + 0.2 * e for e in noise]
    if kind == "heavy_tailed":  # steady, with rare huge outliers (a page fault, a context switch)
        return [100.0 if i % 10 == 3 else 10.0 + 0.2 * e for i, e in enumerate(noise)]
    raise ValueError(kind)


@pytest.mark.parametrize(
    ("kind", "stable", "reason"),
    [("stable", True, ""), ("drifting", False, "drift"), ("bimodal", False, "CI half-width"),
     ("heavy_tailed", True, "")],
)  # fmt: skip
def test_stability_rule_on_known_sequences(kind, stable, reason):
    samples = _seq(kind)
    f = timing.stats_fields(samples)
    assert f["stable"] is stable and reason in f["unstable_reason"]
    assert f["n"] == len(samples) and f["ci_method"] == "binomial_order_statistics" and f["ci_level"] >= 0.95
    assert f["ci_low"] <= timing.summarise(samples).median <= f["ci_high"]
    if kind == "heavy_tailed":  # the median and its CI ignore the 10 % of outliers
        assert f["ci_high"] < 10.2 and f["mad_pct"] < 1.0
    if kind == "drifting":
        assert f["drift_pct"] == pytest.approx(30.0, abs=2.0)


def test_a_busy_machine_is_unstable():
    busy = timing.stats_fields(_seq("stable"), load={"busy": True, "other_cores": 1.5, "load_1m": 3.0})
    assert busy["stable"] is False and "busy" in busy["unstable_reason"] and busy["other_cores"] == 1.5
    quiet = timing.stats_fields(_seq("stable"), load={"busy": False, "other_cores": 0.01})
    assert quiet["stable"] is True and quiet["busy"] is False


def test_small_samples_get_a_student_t_interval_on_the_logarithms():
    f = timing.stats_fields([10.0, 10.2, 9.8, 10.1])
    # exp(mean(log x) -+ t(0.975, 3) s / sqrt(4)), computed by hand
    assert f["ci_method"] == "student_t_log" and f["ci_level"] == 0.95 and f["n"] == 4
    assert f["ci_low"] == pytest.approx(9.754942, rel=1e-6) and f["ci_high"] == pytest.approx(10.300282, rel=1e-6)
    assert f["stable"] is True  # half-width 2.7 % of the median
    wide = timing.stats_fields([10.0, 12.0, 9.0, 11.0, 10.5])
    assert wide["ci_method"] == "student_t_log" and wide["stable"] is False
    assert "CI half-width" in wide["unstable_reason"] and "n = 5" in wide["unstable_reason"]
    # the t quantiles are scipy's
    stats = pytest.importorskip("scipy.stats")
    for df, q in timing.T_975.items():
        assert q == pytest.approx(stats.t.ppf(0.975, df), rel=1e-8)


def test_one_sample_has_no_interval():
    f = timing.stats_fields([8.07])
    assert f["ci_low"] is None and f["ci_high"] is None and f["ci_level"] is None and f["ci_method"] == "none"
    assert f["stable"] is False and f["unstable_reason"] == "one sample: no interval"
    assert stability.unstable_summary([{"status": "ok", "metric": "train_step", **f}]).startswith(
        "1 timing is a single sample (no interval): raise --min-time to get one")


def test_six_samples_and_more_keep_the_distribution_free_interval():
    f = timing.stats_fields([10.0, 10.1, 9.9, 10.2, 9.8, 10.0])
    assert f["ci_method"] == "binomial_order_statistics" and (f["ci_low"], f["ci_high"]) == (9.8, 10.2)


def test_the_small_sample_interval_covers_the_median_about_95_percent_of_log_normal_draws():
    # Its assumption holds here (log-times normal): 2,000 draws of n = 2..5 with a 5 % spread.
    g = torch.Generator().manual_seed(3)
    for n in (2, 3, 4, 5):
        draws = torch.exp(torch.randn(2000, n, generator=g) * 0.05).tolist()  # true median 1.0
        covered = 0
        for x in draws:
            low, high = timing.log_t_ci(x)
            covered += low <= 1.0 <= high
        assert 0.93 <= covered / len(draws) <= 0.97, (n, covered / len(draws))


def test_two_samples_get_an_interval_but_never_a_stable_figure():
    # Two equal samples have a zero-width interval; the coverage benchmark found two-sample intervals
    # called tight to miss the long phase's median in a third of the windows, so three are needed.
    two = timing.stats_fields([10.0, 10.0])
    assert two["ci_method"] == "student_t_log" and two["ci_low"] == pytest.approx(10.0) == two["ci_high"]
    assert two["stable"] is False and "too few samples for a stable figure (n = 2 < 3)" in two["unstable_reason"]
    assert not timing.ci_tight([10.0, 10.0])
    three = timing.stats_fields([10.0, 10.0, 10.0])
    assert three["stable"] is True and timing.ci_tight([10.0, 10.0, 10.0])


def test_a_slow_machine_makes_a_time_unstable_but_not_a_paired_ratio():
    slow = {"busy": False, "other_cores": 0.0, "machine_slowdown": 1.3}
    t = timing.stats_fields(_seq("stable"), load=slow)
    assert t["stable"] is False and "machine slow" in t["unstable_reason"] and t["machine_slowdown"] == 1.3
    assert timing.stats_fields(_seq("stable"), load=slow, ratio=True)["stable"] is True
    usual = timing.stats_fields(_seq("stable"), load=slow | {"machine_slowdown": 1.1})
    assert usual["stable"] is True


def test_adaptive_repetition_stops_when_the_ci_is_tight_or_the_budget_is_spent():
    clock = FakeClock()
    steady = timing.measure_latency(costing(clock, [10.0] * 200), warmup=0, repeats=3, min_time_s=0.0,
                                    max_time_s=10.0, max_repeats=200, clock=clock)  # fmt: skip
    # a tight CI as soon as one exists: the small-sample interval of 3 equal samples has no width
    assert len(steady) == 3
    noisy = [10.0, 20.0] * 100  # bimodal: the CI never gets tight, so the time budget ends it
    got = timing.measure_latency(costing(clock, noisy), warmup=0, repeats=3, min_time_s=0.0, max_time_s=0.3,
                                 max_repeats=200, clock=clock)  # fmt: skip
    assert sum(got) >= 300.0 and sum(got[:-1]) < 300.0
    assert not timing.ci_tight(got)
    # no max_time_s: min_time_s is the whole budget (the old behaviour)
    assert len(timing.measure_latency(costing(clock, noisy), warmup=0, repeats=3, min_time_s=0.05,
                                      clock=clock, max_repeats=100)) == 4  # fmt: skip


def test_paired_timing_alternates_and_its_ratios_survive_a_load_that_comes_and_goes():
    clock = FakeClock()
    calls: list[str] = []
    slow = {"factor": 1.0}

    def ref() -> None:
        calls.append("ref")
        clock.spend(30.0 * slow["factor"])

    def new() -> None:
        calls.append("new")
        clock.spend(10.0 * slow["factor"])
        if len(calls) >= 20:  # from the 10th pair on a hog slows both calls 3x
            slow["factor"] = 3.0

    ref_ms, new_ms = timing.measure_paired(ref, new, warmup=1, repeats=20, clock=clock)
    assert calls[:4] == ["ref", "new", "ref", "new"] and len(ref_ms) == len(new_ms) == 20
    ratios = [r / n for r, n in zip(ref_ms, new_ms, strict=True)]
    assert ratios == pytest.approx([3.0] * 20)  # every pair saw the same load on both sides
    assert timing.stats_fields(ratios)["stable"] is True
    assert timing.stats_fields(new_ms)["stable"] is False  # the pruned latency alone drifted 3x


def test_unstable_summary_counts_causes():
    recs = [
        {"status": "ok", "stable": False, "unstable_reason": "CPU busy with other processes (1.2 cores)"},
        {"status": "ok", "stable": False, "unstable_reason": "too few samples (1 < 6) for a 95 % CI"},
        {"status": "ok", "stable": True},
        {"status": "error", "stable": False},
        {"status": "ok"},
    ]
    line = stability.unstable_summary(recs)
    assert line is not None and line.startswith("2 timings unstable: 1 with the CPU busy with other processes")
    assert "raise --min-time" in line
    assert stability.unstable_summary(recs[2:]) is None
    assert stability.unstable_summary(recs[:1]) == ("1 timing unstable with the CPU busy with other processes: "
                                                 "rerun on a quieter machine")  # fmt: skip


def test_unstable_summary_groups_by_cause_with_the_advice_that_fits_each():
    """Load and a slow machine: a quieter machine; a wide CI: --min-time; one sample: no fault, --min-time buys one."""
    def unstable(reason: str, n: int) -> list[dict]:
        return [{"status": "ok", "stable": False, "metric": "latency", "unstable_reason": reason}] * n

    recs = (unstable("CI half-width 8.2% > 5% of the median (n = 60)", 5)
            + unstable("CPU busy with other processes (1.27 cores); CI half-width 9% > 5%", 2)
            + unstable("machine slow: the reference workload took 1.40x its usual time", 1)
            + unstable("one sample: no interval", 3))  # fmt: skip
    line = stability.unstable_summary(recs)
    assert line is not None
    assert line.startswith("8 timings unstable: 2 with the CPU busy with other processes: rerun on a quieter machine; "
                           "1 on a machine running slower than usual: rerun on a quieter machine; "
                           "5 with too few samples for a CI within 5 % before the time cap: raise --min-time; "
                           "3 timings are single samples (no interval): raise --min-time to get one")  # fmt: skip
    assert "quieter machine" not in stability.unstable_summary(recs[:5])  # a wide CI alone is not the machine's fault


def test_unstable_summary_counts_the_breakdown_parts_apart():
    part = {"status": "ok", "stable": False, "metric": "time_by_part", "unstable_reason": "too few samples (3 < 6)"}
    lat = {"status": "ok", "stable": False, "metric": "latency", "unstable_reason": "drift +12% between halves"}
    line = stability.unstable_summary([lat] + [part] * 197)
    assert line is not None and line.startswith("1 timing unstable whose samples drifted while timed:")
    assert "; also 197 time_by_part records unstable (a few profiled calls each)" in line
    assert stability.unstable_summary([part]).startswith("1 time_by_part record unstable (a few profiled calls each)")
