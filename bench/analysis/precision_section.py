"""The report's "Reduced precision" section: what fp16, bf16 and int8 buy in speed and cost in pose error.

Built from the summary (one row per case) of a run with ``--precision`` or ``pose_error`` records.
One table, a row per case (backbone, variant, runtime, precision):

- speed-up over the fp32 case of the same variant (``precision_speedup``, paired, 95 % CI);
- speed-up over the fp32 rectangle (:func:`over_fp32_rectangle`): pruning and precision together,
  paired where it was measured in one process (``precision_speedup`` method ``paired_rectangle``
  for a pruned reduced-precision case, ``precision_speedup`` for a reduced-precision rectangle,
  ``speedup`` for a pruned fp32 case; the fp32 rectangle is 1 by definition);
- pose error (mm) against fp32 eager poses of the same weights, and ΔMPJPE (mm) against the clips'
  ground truth, with what the weights were.

The figure of the same numbers is :mod:`bench.analysis.plots.precision`.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
from tabulate import tabulate

from ..core import numbers

# Poses that move less than this around their mean pose (mm) carry hardly any motion: an error measured on
# them says little (real poses: 100-200 mm; the synthetic 30-step weights: 45-110 mm for most variants).
STILL_POSES_MM = 20.0


@dataclass
class Section:
    """The section's table: headers, rows, and the remarks under it."""

    headers: list[str]
    rows: list[list[str]]
    remarks: list[str]

    def markdown(self) -> str:
        out = ["## Reduced precision", "",
               tabulate(self.rows, headers=self.headers, tablefmt="github", disable_numparse=True), ""]  # fmt: skip
        return "\n".join(out + [*(f"{r}\n" for r in self.remarks)])

    def html(self) -> str:
        body = [[html.escape(c) for c in row] for row in self.rows]
        table = tabulate(body, headers=[html.escape(h) for h in self.headers], tablefmt="unsafehtml",
                         disable_numparse=True)  # fmt: skip
        remarks = "".join(f"<p class='remark'>{html.escape(r)}</p>" for r in self.remarks)
        return f"<h2 id='precision'>Reduced precision</h2>\n{table}\n{remarks}"


def _get(row: Any, col: str) -> float | None:
    v = row.get(col) if hasattr(row, "get") else None
    return float(v) if numbers.finite(v) else None


def over_fp32_rectangle(summary: pd.DataFrame) -> pd.DataFrame:
    """Per case: the speed-up over the fp32 rectangle of the same setting (``value``, ``low``, ``high``)
    and where it comes from (``how``); NaN where the run did not measure it."""
    rows: list[tuple[float | None, float | None, float | None, str]] = []
    for _, r in summary.iterrows():
        precision, rect = r.get("precision", "fp32"), r["variant"] == "rectangle"
        if precision == "fp32" and rect:
            rows.append((1.0, 1.0, 1.0, "reference"))
            continue
        col = ("speedup" if precision == "fp32" else "precision_speedup" if rect else "precision_speedup_rect")
        value = _get(r, col)
        low, high = _get(r, f"{col}_ci_low"), _get(r, f"{col}_ci_high")
        paired = col != "speedup" or r.get("speedup_method") == "paired"
        rows.append((value, low, high, ("paired" if paired else "ratio of medians") if value is not None else ""))
    out = pd.DataFrame(rows, columns=["value", "low", "high", "how"], index=summary.index)
    return out.astype({"value": float, "low": float, "high": float})


def _ratio(value: float | None, low: float | None, high: float | None) -> str:
    if value is None or math.isnan(value):
        return ""
    ci = f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None and not math.isnan(low) else ""
    return f"{value:.2f}{ci}"


def _mm(x: float | None) -> str:
    if x is None or math.isnan(x):
        return ""
    return "0" if x == 0 else f"{x:.2g}" if abs(x) < 0.1 else f"{x:.2f}"


def _first_failure(failures: str) -> str:
    """'metric: status: why; ...' -> 'status: why' of the first (a skipped case says the same for every metric)."""
    first = failures.split("; ")[0]
    return first.split(": ", 1)[-1][:200]


def section(summary: pd.DataFrame) -> Section | None:
    """The section, or None for a run with neither a reduced precision nor pose_error records."""
    if "precision" not in summary:
        return None
    has_pose = "pose_error_mm" in summary and summary["pose_error_mm"].notna().any()
    if set(summary["precision"]) == {"fp32"} and not has_pose:
        return None
    combined = over_fp32_rectangle(summary)
    rows, still = [], set()
    for idx, r in summary.iterrows():
        reduced = r["precision"] != "fp32"
        if not reduced and not numbers.finite(r.get("pose_error_mm")) and r["variant"] == "rectangle":
            continue  # an fp32 eager rectangle without pose error: nothing to say here
        how = "+".join(p for p in (r["pruner"], r["recoverer"]) if p)
        label = f"{r['backbone']} {r['variant']}" + (f" {r['schedule']} {how}" if r["variant"] != "rectangle" else "")
        c = combined.loc[idx]
        spread = _get(r, "pose_spread_mm")
        if spread is not None and spread < STILL_POSES_MM:
            still.add(label)
        own = _ratio(_get(r, "precision_speedup"), _get(r, "precision_speedup_ci_low"),
                     _get(r, "precision_speedup_ci_high")) if reduced else "—"  # fmt: skip
        status = "" if r.get("status") == "ok" else _first_failure(str(r.get("failures", "")))
        rows.append([label, str(r["runtime"]), str(r["precision"]), own,
                     "1 (reference)" if c["how"] == "reference" else _ratio(c["value"], c["low"], c["high"]),
                     _mm(_get(r, "pose_error_mm")), _mm(_get(r, "pose_mpjpe_delta_mm")), _spread(spread),
                     str(r.get("pose_weights") or ""), status])  # fmt: skip
    if not rows:
        return None
    headers = ["case", "runtime", "precision", "× fp32 (same variant)", "× fp32 rectangle", "pose error (mm)",
               "ΔMPJPE (mm)", "pose spread (mm)", "weights", "not ok"]  # fmt: skip
    if not any(row[-1] for row in rows):
        headers, rows = headers[:-1], [row[:-1] for row in rows]
    remarks = [
        "× fp32: the fp32 case's latency over this case's, both on the same runtime, alternated in one process "
        "(median [95 % CI] of the per-round ratios); × fp32 rectangle: the same against the fp32 rectangle "
        "(pruning and precision together; for fp32 pruned cases the pruning speed-up).",
        "Pose error: MPJPE between this case's poses and fp32 eager poses of the same weights on fixed synthetic "
        "test clips; ΔMPJPE: its MPJPE against the clips' ground truth minus the fp32 poses' (> 0: less accurate). "
        "Weights 'synthetic:N steps' are a short training that puts the outputs at the scale of real poses, not a "
        "trained model: the errors are those of int8/half arithmetic on such weights. Pose spread: how far the "
        "fp32 poses move around their mean pose, the scale to read an error against.",
    ]
    if still:
        remarks.append(f"Still poses: {', '.join(sorted(still))}: their fp32 poses move less than {STILL_POSES_MM:g} mm around "
                       "their mean pose, so their pose error is measured on outputs that carry hardly any motion "
                       "(the short training left them near the mean pose); measure them with a trained "
                       "checkpoint (--checkpoint) or more steps (--pose-steps).")  # fmt: skip
    return Section(headers, rows, remarks)


def _spread(x: float | None) -> str:
    """The pose spread, marked ``(still)`` below :data:`STILL_POSES_MM`."""
    if x is None or math.isnan(x):
        return ""
    return f"{x:.0f}" + (" (still)" if x < STILL_POSES_MM else "")
