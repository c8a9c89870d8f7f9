"""Figures of what pruning buys: the measured speed-up against the FLOPs saving, and efficiency against accuracy.

- ``speedup_vs_flops``: every pruned case's speed-up over its rectangle against its FLOPs saving;
  on the diagonal, time falls as FLOPs do;
- ``efficiency_accuracy``: GFLOPs and FPS against MPJPE, arrows rectangle -> single -> hierarchical,
  measured points filled and the papers' reported ones hollow.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .base import PlotInputs, colour, marker, plain_log_axis, real, register, variant_rank

# --------------------------------------------------------------------------- speed-up vs FLOPs


def _speedup_points(summary: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Pruned cases with a speed-up and a FLOPs change: x = FLOPs saving (rectangle / pruned), y = speed-up."""
    counter = "fvcore" if "flops_change_fvcore_pct" in summary and summary["flops_change_fvcore_pct"].notna().any() else "paper"
    col = "flops_change_fvcore_pct" if counter == "fvcore" else "flops_change_pct"
    if "speedup" not in summary or col not in summary:
        return pd.DataFrame(), counter
    pts = summary[(summary["variant"] != "rectangle") & summary["speedup"].notna() & summary[col].notna()].copy()
    pts["flops_saving"] = 1.0 / (1.0 + pts[col] / 100.0)
    return pts, counter


@register("speedup_vs_flops", "Speed-up vs FLOPs saving",
          "no pruned case has both a speed-up (a rectangle timed beside it) and FLOPs; run --metrics latency,flops")  # fmt: skip
def _draw_speedup(data: PlotInputs) -> Figure | None:
    pts, _ = _speedup_points(data.summary)
    return speedup_vs_flops(data.summary) if not pts.empty else None


def speedup_vs_flops(summary: pd.DataFrame) -> Figure:
    """Measured speed-up of every pruned case against its FLOPs saving; on the diagonal, time falls as FLOPs do.

    Error bars are the 95 % CI of the paired speed-up where the run measured it; a speed-up taken as
    the ratio of two FPS medians has none, and the legend says so.
    """
    pts, counter = _speedup_points(summary)
    fig, ax = plt.subplots(figsize=(7.6, 5.4))
    backbones = sorted(pts["backbone"].unique())
    multi_t = pts.groupby("backbone")["frames"].nunique().max() > 1
    paired = pts.get("speedup_method", pd.Series("", index=pts.index)) == "paired"
    for r, is_paired in zip(pts.itertuples(index=False), paired, strict=True):
        c = colour(str(r.backbone), backbones)
        lo, hi = getattr(r, "speedup_ci_low", None), getattr(r, "speedup_ci_high", None)
        yerr = None
        if real(lo) and real(hi):
            yerr = [[max(0.0, r.speedup - lo)], [max(0.0, hi - r.speedup)]]
        ax.errorbar(r.flops_saving, r.speedup, yerr=yerr, fmt=marker(str(r.variant)), color=c, markersize=9,
                    markerfacecolor=c if is_paired else "white", capsize=3, linewidth=1.2, zorder=3)  # fmt: skip
        if multi_t:
            ax.annotate(f"T={r.frames}", (r.flops_saving, r.speedup), xytext=(6, -3), textcoords="offset points",
                        fontsize=8.5, color=c)  # fmt: skip
    top = max(float(pts["flops_saving"].max()), float(pts["speedup"].max()),
              float(pd.to_numeric(pts.get("speedup_ci_high"), errors="coerce").max() or 0), 1.0) * 1.12  # fmt: skip
    bottom = min(float(pts["speedup"].min()), float(pd.to_numeric(pts.get("speedup_ci_low"), errors="coerce").min() or 1), 1.0)
    bottom = min(bottom * 0.9, 0.9)
    ax.plot([bottom, top], [bottom, top], linestyle="--", color="0.4", linewidth=1.2, zorder=1)
    ax.annotate("realised = FLOPs", xy=(top * 0.97, top * 0.97), ha="right", va="bottom", rotation=0, color="0.35",
                fontsize=9.5, xytext=(0, 4), textcoords="offset points")  # fmt: skip
    ax.axhline(1.0, color="0.6", linewidth=1, linestyle=":", zorder=1)
    ax.annotate("no speed-up", xy=(top, 1.0), ha="right", va="top", color="0.45", fontsize=9, xytext=(-2, -3),
                textcoords="offset points")  # fmt: skip
    ax.set_xlim(min(bottom, 0.9), top)
    ax.set_ylim(bottom, top)
    ax.set_xlabel(f"FLOPs saving, rectangle / pruned ({counter} counter, ×)")
    ax.set_ylabel("measured speed-up over the rectangle (×)")
    ax.set_title("Speed-up vs FLOPs saving: below the diagonal, time falls less than FLOPs")
    handles = [Line2D([], [], color=colour(b, backbones), marker="o", linestyle="", label=b) for b in backbones]
    handles += [Line2D([], [], color="0.35", marker=marker(v), linestyle="", label=v)
                for v in sorted(pts["variant"].unique(), key=variant_rank)]  # fmt: skip
    if paired.any():
        handles.append(Line2D([], [], color="0.35", marker="o", linestyle="", label="paired (95 % CI)"))
    if (~paired).any():
        handles.append(Line2D([], [], color="0.35", marker="o", markerfacecolor="white", linestyle="",
                              label="ratio of FPS medians (no CI)"))  # fmt: skip
    ax.legend(handles=handles, loc="upper left", frameon=False, fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- efficiency vs accuracy


def _accuracy_points(summary: pd.DataFrame, reported: pd.DataFrame | None) -> pd.DataFrame:
    """Points (backbone, variant, frames, size, kind, gflops, fps, mpjpe, hollow) to plot.

    Measured MPJPE (synthetic, h36m) pairs with this run's paper-protocol GFLOPs and FPS. Reported
    MPJPE is plotted hollow: against the paper's own GFLOPs when the table gives them (the paper's
    figure, point for point), and against this run's FPS (papers' FPS came from other hardware).
    """
    cols = ["backbone", "variant", "frames", "size", "kind", "gflops", "fps", "mpjpe", "hollow"]
    pts: list[dict] = []
    for method in ("h36m", "synthetic"):
        col = f"mpjpe_{method}"
        if col not in summary:
            continue
        for r in summary[summary[col].notna()].itertuples(index=False):
            pts.append(
                {
                    "backbone": r.backbone,
                    "variant": r.variant,
                    "frames": r.frames,
                    "size": r.size,
                    "kind": "synthetic" if method == "synthetic" else "h36m",
                    "gflops": r.gflops_paper,
                    "fps": r.fps,
                    "mpjpe": getattr(r, col),
                    "hollow": False,
                }
            )
    if reported is not None and not reported.empty:
        rep = reported[(reported["metric"] == "mpjpe") & reported["value"].notna()]
        for r in rep.itertuples(index=False):
            match = summary[
                (summary["backbone"] == r.backbone)
                & (summary["variant"] == r.variant)
                & (summary["frames"] == r.frames)
                & ((summary["size"] == r.size) | (r.size == ""))
            ]
            if match.empty:
                continue  # the report is about this run: papers' points only where the run has the case
            gflops = r.gflops_paper if real(r.gflops_paper) else match["gflops_paper"].mean()
            pts.append(
                {
                    "backbone": r.backbone,
                    "variant": r.variant,
                    "frames": r.frames,
                    "size": r.size or match["size"].iloc[0],
                    "kind": "h36m",
                    "gflops": gflops,
                    "fps": match["fps"].mean(),
                    "mpjpe": r.value,
                    "hollow": True,
                }
            )
    return pd.DataFrame(pts, columns=cols)


@register("efficiency_accuracy", "Efficiency vs accuracy",
          "no accuracy value matches a case of this run (pass --accuracy reported for the papers' values at "
          "their canonical T and size, or the run directory of `vptbench accuracy`)")  # fmt: skip
def _draw_efficiency_accuracy(data: PlotInputs) -> Figure | None:
    if _accuracy_points(data.summary, data.reported).empty:
        return None
    return efficiency_accuracy(data.summary, data.reported)


MIN_MPJPE_SPAN_MM = 4.0  # an accuracy axis never spans less: 0.1 mm must not look like a cliff


def efficiency_accuracy(summary: pd.DataFrame, reported: pd.DataFrame | None) -> Figure:
    """GFLOPs (paper) vs MPJPE and FPS vs MPJPE, arrows rectangle -> single -> hierarchical.

    Human3.6M numbers (measured or reported) and synthetic-data numbers are on different scales, so
    each gets its own row of panels.
    """
    pts = _accuracy_points(summary, reported)
    kinds = [k for k in ("h36m", "synthetic") if (pts["kind"] == k).any()]
    nrows = max(1, len(kinds))
    panels = tuple(
        (col, label)
        for col, label in (
            ("gflops", "GFLOPs per clip, paper protocol (lower is cheaper)"),
            ("fps", "FPS, output frames/s in this run (higher is faster)"),
        )
        if pts.dropna(subset=[col, "mpjpe"]).shape[0] or pts.empty
    ) or (("gflops", "GFLOPs per clip, paper protocol (lower is cheaper)"),)
    fig, axes = plt.subplots(nrows, len(panels), figsize=(6.5 * len(panels) + 1.5, 4.8 * nrows), squeeze=False)
    drawn = pts.dropna(subset=["mpjpe"])
    backbones = sorted(set(drawn["backbone"])) or sorted(set(summary["backbone"]))
    if not kinds:
        for ax, (_, xlabel) in zip(axes[0], panels, strict=True):
            ax.text(
                0.5,
                0.5,
                "no accuracy values to plot:\npass --accuracy reported, or the run dir of `vptbench accuracy`",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
            ax.set_xlabel(xlabel)
            ax.set_ylabel("MPJPE (mm)")
    for row, kind in zip(axes, kinds, strict=False):
        sub = pts[pts["kind"] == kind]
        data_name = "Human3.6M, protocol 1" if kind == "h36m" else "synthetic motion"
        for ax, (xcol, xlabel) in zip(row, panels, strict=True):
            xs = sub[xcol].dropna()
            if len(xs) and xs.min() > 0 and xs.max() / xs.min() > 10:
                ax.set_xscale("log")  # MHFormer's ~10 GFLOPs and MixSTE's ~300 on one axis
                plain_log_axis(ax.xaxis)
            _scatter_with_arrows(ax, sub, xcol, backbones)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("MPJPE (mm, lower is better)")
            ax.set_title(f"{'Cost' if xcol == 'gflops' else 'Speed'} vs accuracy: {data_name}")
            if xs.empty:
                ax.text(
                    0.5,
                    0.5,
                    f"no {'GFLOPs' if xcol == 'gflops' else 'FPS'} measured for these cases",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                )
    _legend(  # only what is drawn: a variant without MPJPE has no point, so no legend entry
        fig,
        backbones,
        sorted(set(drawn["variant"]), key=variant_rank),
        hollow=bool(drawn["hollow"].any()),
        filled=bool((~drawn["hollow"]).any()),
    )
    fig.tight_layout(rect=(0, 0, 1 - 2.3 / fig.get_figwidth(), 1))
    return fig


def _scatter_with_arrows(ax: Axes, pts: pd.DataFrame, xcol: str, backbones: list[str]) -> None:
    pts = pts.dropna(subset=[xcol, "mpjpe"])
    log = ax.get_xscale() == "log"
    for (backbone, _size, frames, hollow), g in pts.groupby(["backbone", "size", "frames", "hollow"]):
        g = g.assign(_r=g["variant"].map(variant_rank)).sort_values("_r")
        c = colour(str(backbone), backbones)
        for r in g.itertuples(index=False):
            ax.scatter(
                getattr(r, xcol),
                r.mpjpe,
                s=80,
                marker=marker(r.variant),
                zorder=3,
                linewidths=1.8,
                facecolors="white" if hollow else c,
                edgecolors=c,
            )
        xy = list(zip(g[xcol], g["mpjpe"], strict=True))
        for a, b in zip(xy, xy[1:], strict=False):
            ax.annotate(
                "",
                xy=b,
                xytext=a,
                zorder=2,
                arrowprops={
                    "arrowstyle": "-|>",
                    "color": c,
                    "lw": 1.4,
                    "alpha": 0.85,
                    "mutation_scale": 14,
                    "linestyle": "--" if hollow else "-",
                    "shrinkA": 7,
                    "shrinkB": 7,
                },
            )
        if hollow and (~pts["hollow"] & (pts["backbone"] == backbone)).any():
            continue  # the filled twin already carries the name
        # Name the family above or below its first point, away from where its arrow heads, so that
        # name and arrow never cross (beside the point, names ran into the axis at the edges).
        multi_t = pts[pts["backbone"] == backbone]["frames"].nunique() > 1
        label = f"{backbone}" + (f" T={frames}" if multi_t else "")
        below = len(xy) > 1 and xy[1][1] > xy[0][1]
        ax.annotate(
            label,
            xy=xy[0],
            xytext=(0, -11 if below else 11),
            textcoords="offset points",
            ha="center",
            va="top" if below else "bottom",
            fontsize=9.5,
            color=c,
            fontweight="bold",
        )
    # Room for the names around the outermost points.
    lo, hi = ax.get_xlim()
    if log:
        ax.set_xlim(lo / 1.5, hi * 1.5)
    else:
        pad = 0.1 * (hi - lo)
        ax.set_xlim(lo - pad, hi + pad)
    lo, hi = ax.get_ylim()
    lo, hi = lo - 0.06 * (hi - lo), hi + 0.06 * (hi - lo)
    if hi - lo < MIN_MPJPE_SPAN_MM:
        mid = (lo + hi) / 2
        lo, hi = mid - MIN_MPJPE_SPAN_MM / 2, mid + MIN_MPJPE_SPAN_MM / 2
    ax.set_ylim(lo, hi)


def _source_handle(face: str, label: str) -> Line2D:
    """A legend marker for where an MPJPE came from: filled (measured) or hollow (reported)."""
    return Line2D([], [], color="0.35", marker="o", markerfacecolor=face, linestyle="", markersize=8, label=label)


def _legend(fig: Figure, backbones: list[str], variants: list[str], hollow: bool, filled: bool) -> None:
    """Three legend blocks at the right: colour = backbone, marker = variant, fill = where MPJPE came from."""
    fam = [Line2D([], [], color=colour(b, backbones), marker="o", linestyle="-", label=b) for b in backbones]
    var = [Line2D([], [], color="0.35", marker=marker(v), linestyle="", markersize=8, label=v) for v in variants]
    src = [_source_handle(face, label) for face, label, shown in
           (("0.35", "measured here", filled), ("white", "reported in paper", hollow)) if shown]  # fmt: skip
    y = 0.95
    for title, handles in (("backbone", fam), ("variant", var), ("MPJPE", src)):
        if not handles:
            continue
        leg = fig.legend(
            handles=handles, title=title, loc="upper left", bbox_to_anchor=(1 - 2.2 / fig.get_figwidth(), y), frameon=False, alignment="left"
        )
        fig.add_artist(leg)
        y -= (0.45 + 0.24 * len(handles)) / fig.get_figheight()  # title + entries, in inches
