"""Rounds of alternated calls: :func:`bench.measure.timing.measure_paired` for more than two forwards.

    ms = measure_rounds([fp32_rect, fp32_case, int8_case], warmup=1, repeats=6)   # ms[i][k]: fn i, round k
    ratios = [a / b for a, b in zip(ms[0], ms[2])]                               # per-round speed-up

One round calls every function once, in order; round k of every function was taken within the
same second or so, so a load that comes and goes slows the whole round, and a ratio of two
functions within a round keeps its value (the reason measure_paired alternates). Used by the
precision speed-ups (bench.scenarios.precision), which compare a reduced-precision case with its
fp32 case and with the fp32 rectangle in one process.

The budget is measure_paired's with the time limits scaled to the functions: ``min_time_s`` and
``max_time_s`` are per *pair* of calls, so each function is timed as long as in a pair, and the
CI goal applies to every ratio of the last function against the others (the widest decides).
"""

from __future__ import annotations

import timeit
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .timing import Budget, _cuda_samples, synchronize


def measure_rounds(
    fns: Sequence[Callable[[], Any]],
    *,
    warmup: int,
    repeats: int,
    device: str | torch.device = "cpu",
    min_time_s: float = 0.0,
    max_repeats: int | None = None,
    max_time_s: float | None = None,
) -> list[list[float]]:
    """Milliseconds of every call, per function: ``out[i][k]`` is function i in round k.

    Every function warms up ``warmup`` times (alternated), then rounds are added until the
    budget (module docstring) says stop.
    """
    if len(fns) < 2:
        raise ValueError(f"need two or more functions to alternate, got {len(fns)}")
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    scale = len(fns) / 2
    budget = _RoundBudget(repeats, min_time_s * scale, None if max_time_s is None else max_time_s * scale, max_repeats)
    dev = torch.device(device)
    for _ in range(warmup):
        for fn in fns:
            fn()
    synchronize(dev)
    if dev.type == "cuda":
        return _cuda_samples(list(fns), budget, lambda t: t[0] / t[-1])  # there the CI goal is the first ratio
    timers = [timeit.Timer(fn) for fn in fns]
    out: list[list[float]] = [[] for _ in fns]
    while budget.more_rounds(out):
        for timer, samples in zip(timers, out, strict=True):
            samples.append(timer.timeit(number=1) * 1e3)
    return out


class _RoundBudget(Budget):
    """:class:`Budget` whose CI goal is every ratio of the last function against the others."""

    def more_rounds(self, ms: list[list[float]]) -> bool:
        spent = sum(sum(s) for s in ms)
        ratios = [[a / b for a, b in zip(ref, ms[-1], strict=True)] for ref in ms[:-1]]
        return any(self.more(r, spent) for r in ratios)  # one more while any ratio's CI is still wide
