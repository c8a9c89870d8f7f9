"""Why timings are unstable, and what to do about it: the causes behind ``unstable_reason``, counted.

bench.measure.timing's stability rule writes ``stable`` and ``unstable_reason`` into every timed
record; this module reads them back (from records only, as everything in bench.analysis does) and
groups them by cause with the advice that fits each: the end-of-run line of ``run``, ``profile``
and ``sweep`` (:func:`unstable_summary`), the report's notice (:func:`unstable_causes`) and the
short cause in a table's note column (:func:`cause_of`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Timed metrics with a record per part and block (bench.measure.profiler): counted apart in the end-of-run line.
PER_PART_METRICS = ("time_by_part",)


@dataclass(frozen=True)
class Cause:
    """Why a timing is unstable, read from its ``unstable_reason``, and what to do about it."""

    key: str  # the words of ``unstable_reason`` (stats_fields) that name this cause
    what: str  # said of the timings: "3 timings <what>"
    advice: str
    fault: bool = True  # a single sample is no fault of the machine or the timer: it has no interval
    short: str = ""  # a word or two for a table's note column


# In the order of what to fix first: a timing with several reasons counts under the first that matches.
CAUSES = (
    Cause("busy", "with the CPU busy with other processes", "rerun on a quieter machine", short="CPU busy"),
    Cause("machine slow", "on a machine running slower than usual", "rerun on a quieter machine",
          short="machine slow"),  # fmt: skip
    Cause("drift", "whose samples drifted while timed", "rerun on a quieter machine, or raise --min-time",
          short="drift"),  # fmt: skip
    Cause("CI half-width", "with too few samples for a CI within 5 % before the time cap", "raise --min-time",
          short="wide CI"),  # fmt: skip
    Cause("too few samples", "with too few samples for a stable figure", "raise --min-time", short="few samples"),
    Cause("one sample", "of a single sample (no interval)", "raise --min-time to get one", fault=False,
          short="1 sample"),  # fmt: skip
)
OTHER_CAUSE = Cause("", "for another reason", "see unstable_reason in the records", short="see unstable_reason")


def cause_of(reason: str) -> Cause:
    """The :data:`CAUSES` entry an ``unstable_reason`` counts under (the first that matches)."""
    return next((c for c in CAUSES if c.key in reason), OTHER_CAUSE)


def unstable_causes(records: Iterable[Mapping[str, Any]]) -> tuple[dict[Cause, list[Mapping[str, Any]]], dict[str, int]]:
    """The unstable ok records grouped by cause (CAUSES order), and the per-part records' counts by metric."""
    groups: dict[Cause, list[Mapping[str, Any]]] = {}
    parts: dict[str, int] = {}
    for r in records:
        if r.get("status") != "ok" or r.get("stable") is not False:
            continue
        metric = str(r.get("metric", ""))
        if metric in PER_PART_METRICS:
            parts[metric] = parts.get(metric, 0) + 1
            continue
        groups.setdefault(cause_of(str(r.get("unstable_reason", ""))), []).append(r)
    order = [*CAUSES, OTHER_CAUSE]
    return dict(sorted(groups.items(), key=lambda kv: order.index(kv[0]))), parts


def unstable_summary(records: Iterable[Mapping[str, Any]]) -> str | None:
    """One line saying how many timed records are unstable, grouped by cause with the advice for each; None if none.

    e.g. "3 timings unstable: 2 with the CPU busy with other processes: rerun on a quieter machine;
    1 with too few samples for a CI within 5 % before the time cap: raise --min-time" (one cause:
    "2 timings unstable with the CPU busy with other processes: rerun on a quieter machine"). Single
    samples are no fault and are said apart ("2 timings are single samples (no interval): raise
    --min-time to get one").
    The breakdown's per-part figures (a few profiled calls for each part of each block) are
    counted apart, at the end, so that hundreds of them do not bury the headline timings.
    """
    groups, parts = unstable_causes(records)
    faults = {c: len(rs) for c, rs in groups.items() if c.fault}
    singles = sum(len(rs) for c, rs in groups.items() if not c.fault)
    bits = []
    if faults:
        total = sum(faults.values())
        noun = f"{total} timing{'s' if total > 1 else ''} unstable"
        if len(faults) == 1:
            ((c, _),) = faults.items()
            bits.append(f"{noun} {c.what}: {c.advice}")
        else:
            bits.append(f"{noun}: " + "; ".join(f"{n} {c.what}: {c.advice}" for c, n in faults.items()))
    if singles:
        one = next(c for c in CAUSES if not c.fault)
        noun = "timing is a single sample" if singles == 1 else "timings are single samples"
        bits.append(f"{singles} {noun} (no interval): {one.advice}")
    if parts:
        counted = ", ".join(f"{n} {m} record{'s' if n > 1 else ''}" for m, n in parts.items())
        bits.append(f"{'also ' if bits else ''}{counted} unstable (a few profiled calls each)")
    return "; ".join(bits) if bits else None
