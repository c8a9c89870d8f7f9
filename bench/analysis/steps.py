"""Change detection in a series of runs: where a figure stepped to a new level, and since which run.

The rule (one pass over the series, oldest run first; :func:`detect`). The *level* is what the
first runs since the last step (or since the first run) agree on, up to :data:`REFERENCE_RUNS`
(3) of them: the median of their values and, for timings, the median of their CI bounds (the
*band*). It stays put once set, so a slow drift is found once it has moved beyond the CIs, instead
of being followed run by run. A run is *off the level* when

- ``exact`` (params, FLOPs: deterministic): its value differs from the level at all (relative
  1e-6, float noise);
- ``ci`` (timings with a 95 % CI): its whole CI lies outside the band, on one side, and its
  median is more than :data:`MIN_CHANGE` (5 %) away from the level's. The first condition is
  "larger than the CIs allow"; the second keeps a tight CI on a quiet machine from calling a
  1 % wobble a step (asv's default regression threshold is 5 % too). A timing without a CI is
  never off its level (as in ``vptbench compare``);
- ``relative`` (memory and the rest): its value is more than :data:`RELATIVE_TOLERANCE` (5 %,
  ``compare``'s memory noise) away from the level's.

A step starts at run i when run i and the ``sustain - 1`` runs after it (default ``sustain = 2``:
run i and the next) are all off the level on the same side; the level restarts from those runs.
A run off the level that the next one does not follow is an outlier: it is skipped and the level
stands. A deterministic figure needs no confirmation (``sustain = 1``). Where the series ends
before a step could be confirmed (the latest runs are off the level, but fewer than ``sustain``
of them), the step is listed as *unconfirmed*: the next run will say. Runs that did not measure
the figure (failed, or another matrix) are left out of the series, not counted as a level.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from .compare import MEMORY_NOISE
from .series import Point

MIN_CHANGE = 0.05
REFERENCE_RUNS = 3
RELATIVE_TOLERANCE = MEMORY_NOISE
EXACT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Step:
    """A new level starting at ``points[index]``: from ``before`` to ``after`` (medians of the levels)."""

    index: int
    before: float
    after: float
    confirmed: bool

    @property
    def change(self) -> float | None:
        """after / before - 1 (None when ``before`` is 0)."""
        return self.after / self.before - 1 if self.before else None


def detect(points: Sequence[Point | None], kind: str, *, sustain: int = 2) -> list[Step]:
    """The steps of one series (``kind``: exact, ci or relative; see the module's docstring)."""
    if sustain < 1:
        raise ValueError(f"sustain must be >= 1, got {sustain}")
    need = 1 if kind == "exact" else sustain
    present = [(i, p) for i, p in enumerate(points) if p is not None]
    steps: list[Step] = []
    if not present:
        return steps
    level = [present[0][1]]
    j = 1
    while j < len(present):
        side = _off(level, present[j][1], kind)
        if side == 0:
            if len(level) < REFERENCE_RUNS:
                level.append(present[j][1])
            j += 1
            continue
        window = [p for _, p in present[j : j + need]]
        if all(_off(level, p, kind) == side for p in window):
            steps.append(Step(present[j][0], _median(level), _median(window), confirmed=len(window) == need))
            level = window
            j += len(window)
            continue
        j += 1  # an outlier the next run does not follow: the level stands
    return steps


def _median(pts: Sequence[Point]) -> float:
    return float(statistics.median(p.value for p in pts))


def _off(level: Sequence[Point], p: Point, kind: str) -> int:
    """+1 (above) or -1 (below) when ``p`` is off the level, else 0."""
    ref = _median(level)
    if kind == "exact":
        return _side(p.value, ref, EXACT_TOLERANCE)
    if kind == "relative":
        return _side(p.value, ref, RELATIVE_TOLERANCE)
    lows = [q.low for q in level if q.low is not None]
    highs = [q.high for q in level if q.high is not None]
    if p.low is None or p.high is None or not lows or not highs:
        return 0
    side = _side(p.value, ref, MIN_CHANGE)
    if side > 0 and p.low > statistics.median(highs):
        return 1
    if side < 0 and p.high < statistics.median(lows):
        return -1
    return 0


def _side(value: float, ref: float, tolerance: float) -> int:
    if ref == 0:
        return 0 if value == 0 else (1 if value > 0 else -1)
    change = value / ref - 1
    return 1 if change > tolerance else -1 if change < -tolerance else 0
