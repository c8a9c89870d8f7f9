"""``vptbench compare RUN_A RUN_B [...]``: runs side by side, case by case, without a verdict.

Every (case, metric) measured in the first run and in another is one row: the value in each run
and the ratio of each later run to the first. Timing records that carry a 95 % CI of their median
(``ci_low``, ``ci_high``, SPEC section 9) give the ratio a conservative interval,
[low_B / high_A, high_B / low_A]; a change is *beyond noise* when that interval leaves out 1.
Deterministic counts (params, FLOPs) change beyond noise when they change at all; memory when it
moves by more than :data:`MEMORY_NOISE`; ``pose_error`` when it moves by more than :data:`POSE_NOISE_MM`
and 10 %; a timing without CIs is shown but never called a change. A case id names its precision
(and runtime), so an int8 case is compared with the int8 case of the other run.
The gate (``vptbench gate``) stays the pass/fail tool: ``compare`` always exits 0.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from ..core import numbers

# metric -> how a change is judged: "exact" (deterministic), "ci" (timed, needs CIs), "memory"
METRICS = {
    "params": "exact",
    "flops": "exact",
    "latency": "ci",
    "fps": "ci",
    "train_step": "ci",
    "speedup": "ci",
    "precision_speedup": "ci",
    "pose_error": "pose",
    "peak_rss": "memory",
    "peak_mem_alloc": "memory",
    "peak_mem_reserved": "memory",
    "peak_mem_device": "memory",
    "peak_mem_activations": "memory",
}
MEMORY_NOISE = 0.05  # peak memory of one case moves by a few MiB between fresh processes
POSE_NOISE_MM = 0.05  # pose_error: fp32 runtimes' float noise, and int8's kernels from CPU to CPU
EXACT_NOISE = 1e-6


@dataclass(frozen=True)
class Row:
    """One (case, metric) across the runs; ``ratios[i]`` compares run i+1 with run 0."""

    case_id: str
    metric: str  # with its method or phase, e.g. "flops[paper]", "peak_rss[train]"
    unit: str
    values: list[dict[str, Any] | None]  # the record in each run (None: not measured there)
    ratios: list[tuple[float | None, float | None, float | None]]  # (ratio, low, high)
    beyond_noise: list[bool]


def _label(r: dict[str, Any]) -> str:
    detail = [str(r[k]) for k in ("method", "phase") if r.get(k) not in (None, "", "-")]
    if r["metric"] in ("latency", "train_step", "fps"):
        detail = [d for d in detail if d not in ("timeit", "cuda_event", "inference")]
    return r["metric"] + (f"[{','.join(detail)}]" if detail else "")


def _ok(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(case_id, label) -> the last ok record of each comparable metric."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        if r.get("metric") in METRICS and r.get("status") == "ok" and numbers.finite(r.get("value")):
            out[(r["case_id"], _label(r))] = r
    return out


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    if not a["value"]:
        return None, None, None
    ratio = b["value"] / a["value"]
    lo_a, hi_a, lo_b, hi_b = (x.get(k) for x in (a, b) for k in ("ci_low", "ci_high"))
    if all(numbers.finite(x) for x in (lo_a, hi_a, lo_b, hi_b)) and lo_a > 0 and hi_a > 0:  # type: ignore[operator]
        return ratio, lo_b / hi_a, hi_b / lo_a  # type: ignore[operator]
    return ratio, None, None


def _beyond(kind: str, ratio: float | None, low: float | None, high: float | None) -> bool:
    if ratio is None:
        return False
    if kind == "exact":
        return abs(ratio - 1) > EXACT_NOISE
    if kind == "memory":
        return abs(ratio - 1) > MEMORY_NOISE
    return low is not None and high is not None and (low > 1 or high < 1)


def _pose_beyond(a: dict[str, Any], b: dict[str, Any] | None) -> bool:
    """A pose error moved beyond noise: by more than :data:`POSE_NOISE_MM` and 10 %."""
    if b is None:
        return False
    diff = abs(float(b["value"]) - float(a["value"]))
    return diff > POSE_NOISE_MM and diff > 0.1 * abs(float(a["value"]))


def compare_runs(runs: Sequence[list[dict[str, Any]]]) -> tuple[list[Row], list[set[str]]]:
    """Rows for every (case, metric) of the first run found in at least one other; and per run the
    cases that only it has (index 0: the first run's cases no other run has)."""
    tables = [_ok(r) for r in runs]
    rows = []
    for key, first in tables[0].items():
        values = [t.get(key) for t in tables]
        if all(v is None for v in values[1:]):
            continue
        ratios = [_ratio(first, v) if v is not None else (None, None, None) for v in values[1:]]
        kind = METRICS[first["metric"]]
        rows.append(Row(key[0], key[1], str(first.get("unit") or ""), values, ratios,
                        [_beyond(kind, *r) if kind != "pose" else _pose_beyond(first, v)
                         for r, v in zip(ratios, values[1:], strict=True)]))  # fmt: skip
    cases = [{r["case_id"] for r in recs} for recs in runs]
    only = [c - set().union(*(o for j, o in enumerate(cases) if j != i)) for i, c in enumerate(cases)]
    return rows, only


def _value_text(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    if r.get("unit") == "count":
        return numbers.count(r["value"])
    x, unit = numbers.scaled(float(r["value"]), str(r.get("unit") or ""))
    factor = x / r["value"] if r["value"] else 1.0
    text = numbers.with_ci(x, (r.get("ci_low") or math.nan) * factor, (r.get("ci_high") or math.nan) * factor)
    return f"{text} {unit}".strip()


def _ratio_text(ratio: tuple[float | None, float | None, float | None], beyond: bool, mark: str) -> str:
    value, low, high = ratio
    if value is None:
        return "-"
    text = f"{value:.3f}×" + (f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else "")
    return f"{mark}{text}{mark}" if beyond and mark else text + (" *" if beyond else "")


def format_rows(rows: list[Row], names: list[str], style: str) -> str:
    """The comparison as a plain-text, Markdown (``github``) or CSV table."""
    if style == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        head = ["case_id", "metric", "unit"] + [f"value_{n}" for n in names]
        head += [f"{k}_{n}" for n in names[1:] for k in ("ratio", "ratio_low", "ratio_high", "beyond_noise")]
        w.writerow(head)
        for r in rows:
            line: list[Any] = [r.case_id, r.metric, r.unit]
            line += ["" if v is None else (int(v["value"]) if r.unit == "count" else v["value"]) for v in r.values]
            for ratio, beyond in zip(r.ratios, r.beyond_noise, strict=True):
                line += ["" if x is None else x for x in ratio] + [beyond]
            w.writerow(line)
        return buf.getvalue()
    mark = "**" if style == "github" else ""
    body = []
    for r in rows:
        body.append([r.case_id, r.metric, *[_value_text(v) for v in r.values],
                     *[_ratio_text(x, b, mark) for x, b in zip(r.ratios, r.beyond_noise, strict=True)]])  # fmt: skip
    headers = ["case", "metric", *names, *[f"{n} / {names[0]}" for n in names[1:]]]
    return tabulate(body, headers=headers, tablefmt=style, disable_numparse=True)
