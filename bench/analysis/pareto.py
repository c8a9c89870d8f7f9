"""Pareto fronts: which points no other point beats on every objective (all objectives minimised).

    mask = pareto_mask([[gflops, mpjpe], ...])      # True where no other point dominates the row
    rank = front_ranks(values)                      # 0 the front, 1 the front once 0 is removed, ...

A point *dominates* another when it is no worse on every objective and better on at least one.
Identical points do not dominate each other, so duplicates of a front point are all on the front.
Rows with a missing (NaN) objective take no part: they are never on a front and never dominate.
Costs (GFLOPs, ms, MiB) and errors (MPJPE in mm) are all minimised, so there is no sense argument.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_array(values: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"expected a (points, objectives) array, got shape {a.shape}")
    return a


def dominates(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> bool:
    """Whether point ``a`` dominates ``b``: no worse on every objective, better on at least one."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return bool(np.all(x <= y) and np.any(x < y))


def pareto_mask(values: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (points x objectives, minimised).

    O(n^2) comparisons, one vectorised pass per point: a sweep has hundreds of points, not millions.
    """
    a = _as_array(values)
    valid = ~np.isnan(a).any(axis=1)
    mask = valid.copy()
    pts = a[valid]
    idx = np.flatnonzero(valid)
    for i, p in zip(idx, pts, strict=True):
        no_worse = (pts <= p).all(axis=1)
        better = (pts < p).any(axis=1)
        mask[i] = not bool((no_worse & better).any())
    return mask


def front_ranks(values: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Non-dominated sorting: 0 for the front, 1 for the front of the rest, ...; -1 for NaN rows.

    Successive halving keeps the best-ranked schedules, so the survivors spread along the
    trade-off instead of crowding at the most accurate (or the cheapest) end.
    """
    a = _as_array(values)
    ranks = np.full(len(a), -1, dtype=np.int64)
    left = np.flatnonzero(~np.isnan(a).any(axis=1))
    r = 0
    while left.size:
        on = pareto_mask(a[left])
        ranks[left[on]] = r
        left = left[~on]
        r += 1
    return ranks
