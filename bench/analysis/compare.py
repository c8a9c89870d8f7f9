"""``vptbench compare RUN_A RUN_B [...]``: runs side by side, case by case, without a verdict.

Every (case, metric) measured in the first run and in another is one row: the value in each run
and the ratio of each later run to the first. Timing records that carry a 95 % CI of their median
(``ci_low``, ``ci_high``, SPEC section 9) give the ratio a conservative interval,
[low_B / high_A, high_B / low_A].

What a star means. Two runs of one code differ by more than either run's within-run CI (the
machine's state moves between runs: other processes, frequency, memory layout), so an interval that
merely leaves out 1 is no evidence of a change. A change is starred (``*``) when it is beyond noise
*and* beyond the metric's minimum relevant change (:data:`MIN_CHANGE`, the regression gate's default
tolerances where the gate has one): for a timing with CIs, the whole ratio interval lies outside
[1 / (1 + t), 1 + t]; for memory (no CI), the ratio itself does; for params and FLOPs
(deterministic), any change. A timing whose record in either run says ``stable: false`` (a busy or
slow machine, too few samples) cannot confirm a change: beyond the band it is marked ``?``, "rerun
both to confirm", never starred. A timing without CIs is never marked. ``pose_error`` is starred when it moves by more
than :data:`POSE_NOISE_MM` and 10 %. A case id names its precision (and runtime), so an int8 case is
compared with the int8 case of the other run. The gate (``vptbench gate``)
stays the pass/fail tool: ``compare`` always exits 0.
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
from .gate import DEFAULT_RULES

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
POSE_NOISE_MM = 0.05  # pose_error: fp32 runtimes' float noise, and int8's kernels from CPU to CPU
EXACT_NOISE = 1e-6
# How far the peak memory of one case moves between fresh processes (a few MiB): noise, not a change
# (bench.analysis.steps reads it; a star here also needs MIN_CHANGE).
MEMORY_NOISE = 0.05
# The smallest relative change worth a star, per metric: the gate's default tolerances (bench.analysis.gate),
# and for what the gate does not gate, the same 25 %. Absolute times move between two runs of one code
# by 10-20 % on a shared CPU (docs/reports.md has the figures), far beyond their within-run CIs.
MIN_CHANGE = {
    "latency": 0.25, "fps": 0.25, "train_step": 0.25,  # absolute times: the gate never gates them
    "speedup": DEFAULT_RULES["speedup"][1],
    "precision_speedup": DEFAULT_RULES["precision_speedup"][1],
    **{m: DEFAULT_RULES[m][1] for m in ("peak_rss", "peak_mem_alloc", "peak_mem_reserved", "peak_mem_device")},
    "peak_mem_activations": DEFAULT_RULES["peak_rss"][1],
}  # fmt: skip
CHANGED, UNCONFIRMED = "*", "?"  # the marks: beyond noise and relevant; so, but measured unstable


@dataclass(frozen=True)
class Row:
    """One (case, metric) across the runs; ``ratios[i]`` compares run i+1 with run 0."""

    case_id: str
    metric: str  # with its method or phase, e.g. "flops[paper]", "peak_rss[train]"
    unit: str
    values: list[dict[str, Any] | None]  # the record in each run (None: not measured there)
    ratios: list[tuple[float | None, float | None, float | None]]  # (ratio, low, high)
    marks: list[str]  # per later run: CHANGED, UNCONFIRMED or ""

    @property
    def beyond_noise(self) -> list[bool]:
        """Per later run: a change beyond noise and the minimum relevant change, confirmed by stable timings."""
        return [m == CHANGED for m in self.marks]


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
    intervals = numbers.has_interval(lo_a, hi_a, a.get("n")) and numbers.has_interval(lo_b, hi_b, b.get("n"))
    if intervals and lo_a > 0 and hi_a > 0:  # type: ignore[operator]
        return ratio, lo_b / hi_a, hi_b / lo_a  # type: ignore[operator]
    return ratio, None, None


def _mark(metric: str, kind: str, ratio: tuple[float | None, float | None, float | None],
          records: tuple[dict[str, Any], dict[str, Any]]) -> str:  # fmt: skip
    """CHANGED, UNCONFIRMED or "" for one ratio (the module docstring's rule)."""
    value, low, high = ratio
    if value is None:
        return ""
    if kind == "exact":
        return CHANGED if abs(value - 1) > EXACT_NOISE else ""
    band = 1.0 + MIN_CHANGE[metric]
    if kind == "memory":
        return CHANGED if value > band or value < 1 / band else ""
    if low is None or high is None or not (low > band or high < 1 / band):
        return ""
    return UNCONFIRMED if any(r.get("stable") is False for r in records) else CHANGED


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
        marks = [(CHANGED if _pose_beyond(first, v) else "") if kind == "pose"
                 else _mark(first["metric"], kind, r, (first, v)) if v is not None else ""
                 for r, v in zip(ratios, values[1:], strict=True)]  # fmt: skip
        rows.append(Row(key[0], key[1], str(first.get("unit") or ""), values, ratios, marks))
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
    if numbers.one_sample(r.get("n")):
        return f"{numbers.sig(x)} {unit} (1 sample)"
    text = numbers.with_ci(x, (r.get("ci_low") or math.nan) * factor, (r.get("ci_high") or math.nan) * factor)
    return f"{text} {unit}".strip()


def _ratio_text(ratio: tuple[float | None, float | None, float | None], mark: str, bold: bool) -> str:
    value, low, high = ratio
    if value is None:
        return "-"
    text = f"{value:.3f}×" + (f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else "")
    if bold and mark == CHANGED:
        return f"**{text}** {mark}"
    return f"{text} {mark}" if mark else text


def legend(style: str = "simple") -> str:
    """What the marks mean, printed under the table (and in the docs)."""
    tols = sorted(set(MIN_CHANGE.values()))
    band = " or ".join(f"[{1 / (1 + t):.2f}, {1 + t:.2f}]" for t in tols)
    bold = " (bold in Markdown)" if style == "github" else ""
    return (f"{CHANGED} changed{bold}: the ratio's interval from both runs' 95 % CIs lies wholly outside {band} "
            "(timings; memory: the ratio itself; params/FLOPs: any change).\n"
            f"{UNCONFIRMED} outside it, but a timing was unstable in a run: rerun both to confirm. "
            "Two runs of one code differ by more than their within-run CIs: hence the band.")


def format_rows(rows: list[Row], names: list[str], style: str) -> str:
    """The comparison as a plain-text, Markdown (``github``) or CSV table."""
    if style == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        head = ["case_id", "metric", "unit"] + [f"value_{n}" for n in names]
        head += [f"{k}_{n}" for n in names[1:] for k in ("ratio", "ratio_low", "ratio_high", "beyond_noise", "mark")]
        w.writerow(head)
        for r in rows:
            line: list[Any] = [r.case_id, r.metric, r.unit]
            line += ["" if v is None else (int(v["value"]) if r.unit == "count" else v["value"]) for v in r.values]
            for ratio, mark in zip(r.ratios, r.marks, strict=True):
                line += ["" if x is None else x for x in ratio] + [mark == CHANGED, mark]
            w.writerow(line)
        return buf.getvalue()
    body = []
    for r in rows:
        body.append([r.case_id, r.metric, *[_value_text(v) for v in r.values],
                     *[_ratio_text(x, m, style == "github") for x, m in zip(r.ratios, r.marks, strict=True)]])  # fmt: skip
    headers = ["case", "metric", *names, *[f"{n} / {names[0]}" for n in names[1:]]]
    return tabulate(body, headers=headers, tablefmt=style, disable_numparse=True)
