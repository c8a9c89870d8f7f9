"""Figures of reduced precision: ``precision_tradeoff``, speed-up against pose error.

One point per backbone x variant x precision (one panel per runtime): x = pose error (mm) against
fp32 eager poses of the same weights, y = speed-up over the fp32 rectangle with its 95 % CI
(bench.analysis.precision_section.over_fp32_rectangle). Colour = backbone, marker = variant; a
thin line joins a variant's fp32 point to its reduced-precision points, so whether quantizing the
pruned model buys as much, and costs as much, as quantizing the rectangle reads off the slopes.
The x axis is linear up to 0.1 mm and logarithmic above (fp32 points sit at 0 or at float noise).
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from ..precision_section import over_fp32_rectangle
from .base import PlotInputs, colour, fit_title, marker, panel_grid, real, register, variant_rank

LINEAR_BELOW_MM = 0.1


def _rows(data: PlotInputs) -> pd.DataFrame:
    """Every case of the run (all runtimes and precisions) with a pose error and a speed-up over the fp32 rectangle."""
    rows = data.all_cases if data.all_cases is not None else data.summary
    if "pose_error_mm" not in rows or "precision" not in rows:
        return rows.iloc[0:0]
    rows = rows.join(over_fp32_rectangle(rows).add_prefix("x_rect_"))
    return rows[rows["pose_error_mm"].map(real) & rows["x_rect_value"].map(real)]


@register("precision_tradeoff", "Speed-up over the fp32 rectangle against pose error, per precision",
          "the run has no pose_error with a speed-up over fp32 (vptbench run --precision fp32,int8 measures both)")  # fmt: skip
def _draw(data: PlotInputs) -> Figure | None:
    rows = _rows(data)
    if rows.empty or set(rows["precision"]) == {"fp32"}:
        return None
    return precision_tradeoff(rows)


def precision_tradeoff(rows: pd.DataFrame) -> Figure:
    """The figure of the module docstring, from summary rows with ``x_rect_*`` columns."""
    runtimes = sorted(rows["runtime"].unique(), key=lambda r: ("eager", "compile", "onnxruntime").index(r)
                      if r in ("eager", "compile", "onnxruntime") else 9)  # fmt: skip
    fig, axes = panel_grid(len(runtimes), width=6.6, height=4.6)
    known = sorted(rows["backbone"].unique())
    for ax, runtime in zip(axes, runtimes, strict=True):
        mine = rows[rows["runtime"] == runtime]
        for (backbone, variant, _t, _s), g in mine.groupby(["backbone", "variant", "frames", "schedule"], sort=False):
            g = g.sort_values("pose_error_mm")
            c = colour(backbone, known)
            ax.plot(g["pose_error_mm"], g["x_rect_value"], "-", color=c, alpha=0.35, lw=1)
            for _, r in g.iterrows():
                lo, hi = r["x_rect_low"], r["x_rect_high"]
                yerr = [[r["x_rect_value"] - lo], [hi - r["x_rect_value"]]] if real(lo) and real(hi) else None
                ax.errorbar(r["pose_error_mm"], r["x_rect_value"], yerr=yerr, fmt=marker(variant), color=c, ms=7,
                            capsize=3, lw=1)  # fmt: skip
                if r["precision"] != "fp32":
                    ax.annotate(r["precision"], (r["pose_error_mm"], r["x_rect_value"]), textcoords="offset points",
                                xytext=(5, 4), fontsize=8, color=c)  # fmt: skip
        ax.axhline(1.0, color="0.5", lw=0.8, ls="--")
        ax.set_xscale("symlog", linthresh=LINEAR_BELOW_MM, linscale=0.5)
        ax.set_xlim(left=-0.01)  # the fp32 points at 0 whole, not cut by the axis
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.set_xlabel("pose error vs fp32 eager (mm)")
        ax.set_ylabel("speed-up over the fp32 rectangle (×)")
        ax.set_title(runtime)
    handles = [Line2D([], [], color=colour(b, known), lw=3, label=b) for b in known]
    variants = sorted(rows["variant"].unique(), key=variant_rank)
    handles += [Line2D([], [], color="0.3", marker=marker(v), ls="", label=v) for v in variants]
    ncol = min(len(handles), 4 if len(runtimes) == 1 else 7)
    rows = -(-len(handles) // ncol)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, frameon=False)
    fit_title(fig, "Speed-up over the fp32 rectangle against pose error (whiskers: 95 % CI of the paired ratio)")
    fig.tight_layout(rect=(0, 0.05 * rows + 0.02, 1, 0.92))
    return fig
