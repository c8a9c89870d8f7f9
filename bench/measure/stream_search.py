"""The highest camera rate a model sustains live (stream_max_fps), found by bisection on short streams.

    found = max_fps(probe, estimate=120.0, cap=1000.0)   # probe(fps) -> StreamLog of a short stream
    found.fps, found.unsustained                          # the bracket: sustained, and the lowest rate that was not

Each probe is a real stream on the wall clock (bench.measure.stream.run_stream) and
:func:`bench.measure.stream.sustained` judges it: no frame dropped, real-time factor below 1. The
search starts just below ``estimate`` (the calibrated cost's rate), steps up or down by
:data:`STEP` until the rate is bracketed, then halves the bracket geometrically until its ends are
within ``precision`` of each other or ``max_probes`` streams have run. ``cap`` bounds the search
(a camera faster than that is not asked about; the result says ``capped``); a model that sustains
no rate down to ``estimate / STEP ** DOWN_STEPS`` gets 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .stream import StreamLog, rtf, sustained

STEP = 1.25  # bracketing steps, as a factor of the rate
DOWN_STEPS = 12  # 1.25 ** -12 = 0.07: how far below the estimate a rate is looked for
START = 0.9  # the first probe, as a share of the estimate (most models sustain it: one probe saved)


@dataclass
class MaxFps:
    """The search's outcome: ``fps`` the highest rate sustained (0: none), ``unsustained`` the lowest
    that was not (None when ``capped``), every probe, and the log of the best sustained one."""

    fps: float
    unsustained: float | None
    capped: bool
    probes: list[dict[str, Any]] = field(default_factory=list)
    best: StreamLog | None = None


def max_fps(
    probe: Callable[[float], StreamLog],
    *,
    estimate: float,
    cap: float,
    precision: float = 0.05,
    max_probes: int = 8,
) -> MaxFps:
    """Bisect the sustained camera rate (module docstring)."""
    if not (estimate > 0 and math.isfinite(estimate)):
        estimate = cap
    found = MaxFps(0.0, None, False)
    lo: float | None = None
    hi: float | None = None

    def run(fps: float) -> bool:
        log = probe(fps)
        ok = sustained(log)
        skipped = sum(w.skipped for w in log.windows)
        found.probes.append({"fps": round(fps, 4), "sustained": ok, "rtf": round(rtf(log), 4),
                             "windows": len(log.windows), "skipped": skipped})  # fmt: skip
        if ok and fps >= found.fps:
            found.fps, found.best = fps, log
        return ok

    f = min(cap, START * estimate)
    if run(f):
        lo = f
        while hi is None and len(found.probes) < max_probes:
            if lo >= cap:
                found.capped = True
                return found
            f = min(cap, lo * STEP)
            if run(f):
                lo = f
            else:
                hi = f
    else:
        hi = f
        for _ in range(DOWN_STEPS):
            f = hi / STEP
            if run(f):
                lo = f
                break
            hi = f
    if lo is None:
        found.unsustained = hi
        return found
    while hi is not None and hi / lo > 1 + precision and len(found.probes) < max_probes:
        mid = math.sqrt(lo * hi)
        if run(mid):
            lo = mid
        else:
            hi = mid
    found.unsustained = hi
    if hi is None and lo >= cap:
        found.capped = True
    return found


__all__ = ["MaxFps", "max_fps"]
