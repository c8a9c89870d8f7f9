"""Pareto fronts: the front is exactly the non-dominated points; ranks peel fronts off in order."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bench.analysis.pareto import dominates, front_ranks, pareto_mask


def _dom(a, b) -> bool:
    """Domination written out element by element (independent of the vectorised code under test)."""
    no_worse = all(x <= y for x, y in zip(a, b))
    better = any(x < y for x, y in zip(a, b))
    return no_worse and better


def _valid(row) -> bool:
    return not any(math.isnan(v) for v in row)


# Small integers make ties and duplicates common; NaN stands for an objective that was not measured.
points = st.integers(1, 4).flatmap(
    lambda k: arrays(np.float64, st.tuples(st.integers(0, 25), st.just(k)),
                     elements=st.one_of(st.integers(0, 5).map(float), st.just(math.nan)))  # fmt: skip
)


@settings(max_examples=200, deadline=None)
@given(points)
def test_no_front_point_is_dominated_and_every_other_point_is(values):
    mask = pareto_mask(values)
    rows = [list(r) for r in values]
    valid = [i for i, r in enumerate(rows) if _valid(r)]
    for i, r in enumerate(rows):
        if not _valid(r):
            assert not mask[i]  # a point missing an objective is never on the front
        elif mask[i]:
            assert not any(_dom(rows[j], r) for j in valid)
        else:
            assert any(_dom(rows[j], r) for j in valid)


@settings(max_examples=100, deadline=None)
@given(points)
def test_ranks_peel_the_fronts_in_order(values):
    ranks = front_ranks(values)
    rows = [list(r) for r in values]
    assert list(ranks == 0) == list(pareto_mask(values))
    for i, r in enumerate(rows):
        if not _valid(r):
            assert ranks[i] == -1
            continue
        # not dominated by any point of its own rank or worse, dominated by one of the rank before
        assert not any(_dom(rows[j], r) for j in range(len(rows)) if ranks[j] >= ranks[i])
        if ranks[i] > 0:
            assert any(_dom(rows[j], r) for j in range(len(rows)) if ranks[j] == ranks[i] - 1)


def test_examples():
    pts = [[1, 5], [2, 3], [3, 3], [4, 1], [2, 3], [5, 5]]
    assert pareto_mask(pts).tolist() == [True, True, False, True, True, False]  # duplicates stay together
    assert front_ranks(pts).tolist() == [0, 0, 1, 0, 0, 2]
    assert dominates([1, 1], [1, 2]) and not dominates([1, 2], [1, 2]) and not dominates([0, 3], [1, 2])
    assert pareto_mask(np.zeros((0, 2))).tolist() == []
    with pytest.raises(ValueError, match="shape"):
        pareto_mask([1.0, 2.0])
