"""The report's figures, drawn from a run's summary (one row per case) and its per-block records.

Each figure is saved as PNG (embedded in the HTML page) and SVG (for papers). Conventions shared by
all of them: one colour per backbone family, one marker per variant (rectangle o, single s,
hierarchical ^), filled markers for values measured here and hollow ones for values reported in the
papers. Nothing here runs a model.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (CI, SLURM nodes)

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.axis import Axis  # noqa: E402
from matplotlib.colors import BoundaryNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator  # noqa: E402

from ..core.numbers import column_unit  # noqa: E402

VARIANT_ORDER = ("rectangle", "single", "hierarchical")
MARKERS = {"rectangle": "o", "single": "s", "hierarchical": "^"}
LINESTYLES: dict[str, Any] = {"rectangle": "-", "single": "--", "hierarchical": ":"}
# Fixed colours for the four shipped backbones so that every report reads the same way.
FAMILY_COLOURS = {"mixste": "#1f77b4", "motionbert": "#ff7f0e", "mhformer": "#2ca02c", "motionagformer": "#d62728"}
_EXTRA_COLOURS = ["#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]

STYLE: dict[str, Any] = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.fonttype": "none",  # text stays text in the SVG (searchable, editable)
}


def colour(backbone: str, known: list[str] | None = None) -> str:
    """The colour of a backbone family (user backbones get the next free colour)."""
    if backbone in FAMILY_COLOURS:
        return FAMILY_COLOURS[backbone]
    others = sorted(b for b in (known or [backbone]) if b not in FAMILY_COLOURS)
    i = others.index(backbone) if backbone in others else 0
    return _EXTRA_COLOURS[i % len(_EXTRA_COLOURS)]


def marker(variant: str) -> str:
    return MARKERS.get(variant, "D")


def _variant_rank(variant: str) -> int:
    return VARIANT_ORDER.index(variant) if variant in VARIANT_ORDER else len(VARIANT_ORDER)


def plain_log_axis(axis: Axis) -> None:
    """Log scale with plain tick labels at 1-2-5 steps (10, 20, 50, 100...), not bare powers of ten."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_locator(NullLocator())


def save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    """Write ``name``.png and ``name``.svg into ``out_dir``; closes the figure."""
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
    fig.savefig(paths[0], dpi=120)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


@dataclass(frozen=True)
class PlotInputs:
    """What a plot may draw from: the summary (one row per case), per-block records, reported accuracy."""

    summary: pd.DataFrame
    blocks: pd.DataFrame
    reported: pd.DataFrame | None
    parts: pd.DataFrame | None = None  # the ok time_by_part records (the breakdown group)
    breakdown: pd.DataFrame | None = None  # its other ok records: achieved_gflops, machine_peak_gflops, mem_by_part


@dataclass(frozen=True)
class Plot:
    """A registered figure: ``draw`` returns None when the run lacks its data (``why_missing`` says so)."""

    name: str
    title: str
    draw: Callable[[PlotInputs], Figure | None]
    why_missing: str


PLOTS: dict[str, Plot] = {}  # in drawing order


def register(name: str, title: str, why_missing: str) -> Callable[[Callable[[PlotInputs], Figure | None]], Callable]:
    """Add a figure to every report: ``@register("name", "Title", "why it can be absent")`` on a draw function."""

    def deco(draw: Callable[[PlotInputs], Figure | None]) -> Callable[[PlotInputs], Figure | None]:
        if name in PLOTS:
            raise ValueError(f"plot {name!r} is registered twice")
        PLOTS[name] = Plot(name, title, draw, why_missing)
        return draw

    return deco


def title(name: str) -> str:
    return PLOTS[name].title if name in PLOTS else name


def render_all(
    summary: pd.DataFrame, blocks: pd.DataFrame, reported: pd.DataFrame | None, out_dir: Path,
    parts: pd.DataFrame | None = None, breakdown: pd.DataFrame | None = None,
) -> dict[str, list[Path]]:
    """Every registered figure the data allows, name -> written files; :func:`missing` says why one is absent.

    An empty chart says nothing, so a figure without data is left out rather than drawn blank.
    ``parts``: the run's ok time_by_part records (the breakdown group); ``breakdown``: the group's
    other ok records (achieved_gflops, machine_peak_gflops, mem_by_part).
    """
    data = PlotInputs(summary, blocks, reported, parts, breakdown)
    out: dict[str, list[Path]] = {}
    with plt.rc_context(STYLE):  # type: ignore[arg-type]  # the stubs want Literal keys
        for plot in PLOTS.values():
            fig = plot.draw(data)
            if fig is not None:
                out[plot.name] = save(fig, out_dir, plot.name)
    return out


def missing(written: dict[str, list[Path]]) -> dict[str, str]:
    """Figures that :func:`render_all` left out, with the reason to show the reader."""
    return {name: p.why_missing for name, p in PLOTS.items() if name not in written}


def fit_title(fig: Figure, text: str, size: float | None = None) -> None:
    """A figure title wrapped to the figure's width, so that it is never clipped."""
    size = size or float(plt.rcParams["axes.titlesize"] if isinstance(plt.rcParams["axes.titlesize"], int | float) else 12)
    chars = max(20, int(fig.get_figwidth() * 72 / (size * 0.56)))
    fig.suptitle("\n".join(textwrap.wrap(text, chars)), fontsize=size)


VARIANT_COLOURS = {"rectangle": "0.55", "single": "#1f77b4", "hierarchical": "#d62728"}


def _groups(summary: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) per backbone setting: the backbone, plus T/batch/device where the run has several."""
    keys = ["backbone", "frames", "batch", "device", "dtype", "size"]
    varying = [k for k in keys[1:] if summary[k].nunique() > 1]
    out = []
    for vals, g in summary.groupby(keys, sort=True):
        d = dict(zip(keys, vals, strict=True))
        extra = " ".join({"frames": f"T={d['frames']}", "batch": f"B={d['batch']}"}.get(k, str(d[k])) for k in varying)
        out.append((f"{d['backbone']}{' ' + extra if extra else ''}", g))
    return out


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
        if _real(lo) and _real(hi):
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
                for v in sorted(pts["variant"].unique(), key=_variant_rank)]  # fmt: skip
    if paired.any():
        handles.append(Line2D([], [], color="0.35", marker="o", linestyle="", label="paired (95 % CI)"))
    if (~paired).any():
        handles.append(Line2D([], [], color="0.35", marker="o", markerfacecolor="white", linestyle="",
                              label="ratio of FPS medians (no CI)"))  # fmt: skip
    ax.legend(handles=handles, loc="upper left", frameon=False, fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- cost per variant


def _cost_panels(summary: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """(column, CI prefix, label, unit) of the per-variant costs this run measured."""
    cuda = summary["device"].astype(str).str.startswith("cuda").any()
    mem = "peak_mem_alloc" if cuda else "peak_rss"
    how = "CUDA alloc" if cuda else "CPU RSS"
    panels = [
        ("latency_ms", "latency", "Latency per forward", "ms"),
        ("train_step_ms", "train_step", "Training step", "ms"),
        (f"{mem}_inference_mib", "", f"Peak memory, inference ({how})", "MiB"),
        (f"{mem}_train_mib", "", f"Peak memory, training ({how})", "MiB"),
    ]
    return [p for p in panels if p[0] in summary and summary[p[0]].notna().any()]


@register("cost_per_variant", "Latency, training step and peak memory per variant",
          "the run measured no latency, training step or memory")  # fmt: skip
def _draw_costs(data: PlotInputs) -> Figure | None:
    return cost_per_variant(data.summary) if _cost_panels(data.summary) else None


def cost_per_variant(summary: pd.DataFrame) -> Figure:
    """Bars per variant for each measured cost, grouped by backbone; whiskers = 95 % CI of the median
    where the timing records carry one, else the p10-p90 spread of the latency samples."""
    panels = _cost_panels(summary)
    fig, axes = _panel_grid(len(panels), width=6.4, height=3.9)
    groups = _groups(summary)
    variants = sorted(summary["variant"].unique(), key=_variant_rank)
    width = 0.8 / max(1, len(variants))
    spread_labels: set[str] = set()
    for ax, (col, ci, label, unit) in zip(axes, panels, strict=True):
        shown_unit, factor = column_unit(summary[col].tolist(), unit)
        for k, v in enumerate(variants):
            xs, ys, lo_err, hi_err = [], [], [], []
            for gx, (_, g) in enumerate(groups):
                row = g[g["variant"] == v]
                if row.empty or not _real(row[col].iloc[0]):
                    continue
                y = float(row[col].iloc[0]) * factor
                lo, hi = _interval(row.iloc[0], col, ci, spread_labels)
                xs.append(gx + (k - (len(variants) - 1) / 2) * width)
                ys.append(y)
                lo_err.append(max(0.0, y - lo * factor) if lo is not None else 0.0)
                hi_err.append(max(0.0, hi * factor - y) if hi is not None else 0.0)
            if xs:
                ax.bar(xs, ys, width=width * 0.92, color=VARIANT_COLOURS.get(v, "0.3"), label=v,
                       yerr=[lo_err, hi_err] if any(lo_err) or any(hi_err) else None, capsize=2.5,
                       error_kw={"linewidth": 1, "ecolor": "0.15"})  # fmt: skip
        ax.set_xticks(range(len(groups)), [lab for lab, _ in groups], rotation=15 if len(groups) > 3 else 0)
        ax.set_ylabel(f"{shown_unit} (median)" if ci else shown_unit)
        ax.set_title(label)
        ax.grid(axis="x", visible=False)
    handles = [Line2D([], [], color=VARIANT_COLOURS.get(v, "0.3"), marker="s", linestyle="", markersize=10, label=v)
               for v in variants]  # fmt: skip
    note = " and ".join(sorted(spread_labels))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fit_title(fig, "Cost per variant" + (f" (whiskers: {note})" if note else ""))
    fig.tight_layout(rect=(0, 0.06 * 4.0 / fig.get_figheight(), 1, 1))
    return fig


def _interval(row: pd.Series, col: str, ci: str, labels: set[str]) -> tuple[float | None, float | None]:
    """The whisker of one bar: the record's 95 % CI, else p10-p90 for latency, else none."""
    if ci:
        suffix = "_ms" if col.endswith("_ms") else ""
        lo, hi = row.get(f"{ci}_ci_low{suffix}"), row.get(f"{ci}_ci_high{suffix}")
        if _real(lo) and _real(hi):
            labels.add("95 % CI of the median")
            return float(lo), float(hi)
    if col == "latency_ms" and _real(row.get("latency_p10_ms")) and _real(row.get("latency_p90_ms")):
        labels.add("p10-p90 of the latency samples")
        return float(row["latency_p10_ms"]), float(row["latency_p90_ms"])
    return None, None


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
            gflops = r.gflops_paper if _real(r.gflops_paper) else match["gflops_paper"].mean()
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


def _real(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


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
        sorted(set(drawn["variant"]), key=_variant_rank),
        hollow=bool(drawn["hollow"].any()),
        filled=bool((~drawn["hollow"]).any()),
    )
    fig.tight_layout(rect=(0, 0, 1 - 2.3 / fig.get_figwidth(), 1))
    return fig


def _scatter_with_arrows(ax: Axes, pts: pd.DataFrame, xcol: str, backbones: list[str]) -> None:
    pts = pts.dropna(subset=[xcol, "mpjpe"])
    log = ax.get_xscale() == "log"
    for (backbone, _size, frames, hollow), g in pts.groupby(["backbone", "size", "frames", "hollow"]):
        g = g.assign(_r=g["variant"].map(_variant_rank)).sort_values("_r")
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


# --------------------------------------------------------------------------- scaling


def _scaling_slice(summary: pd.DataFrame) -> pd.DataFrame:
    """One batch, device and dtype per backbone (the smallest batch, the most common device), so
    that each line is a single quantity varying with T."""
    parts = []
    for _, g in summary.groupby("backbone"):
        g = g[g["batch"] == g["batch"].min()]
        dev = (g["device"].astype(str) + "|" + g["dtype"].astype(str)).mode().iloc[0]
        parts.append(g[(g["device"].astype(str) + "|" + g["dtype"].astype(str)) == dev])
    return pd.concat(parts) if parts else summary


@register("scaling", "Cost vs sequence length",
          "no backbone was measured at several sequence lengths; run several --frames to see costs scale")  # fmt: skip
def _draw_scaling(data: PlotInputs) -> Figure | None:
    if not (data.summary.groupby("backbone")["frames"].nunique() > 1).any():
        return None
    return scaling(data.summary)


def scaling(summary: pd.DataFrame) -> Figure:
    """GFLOPs, latency and peak inference memory against the sequence length T, log-log.

    One line per (backbone, variant, size, pruner, recoverer): schedules given as ratios resolve to
    other token counts at each T, so the schedule text is not what ties the points of a line
    together. Where a line would hold two cases at one T (a sweep of custom schedules), the first
    is drawn. Panels of metrics the run did not measure are left out.
    """
    data = _scaling_slice(summary)
    cuda = data["device"].astype(str).str.startswith("cuda").any()
    mem_col = "peak_mem_alloc_inference_mib" if cuda else "peak_rss_inference_mib"
    mem_label = "Peak memory, inference (MiB, CUDA alloc)" if cuda else "Peak memory, inference (MiB, CPU RSS)"
    flops_col = "gflops_paper" if data["gflops_paper"].notna().any() else "gflops_fvcore"
    panels = [
        (col, label)
        for col, label in (
            (flops_col, f"GFLOPs per clip ({flops_col.split('_')[1]})"),
            ("latency_ms", "Latency per forward (ms, median)"),
            (mem_col, mem_label),
        )
        if col in data and data[col].notna().any()
    ] or [(flops_col, "GFLOPs per clip")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.6), squeeze=False)
    backbones = sorted(data["backbone"].unique())
    keys = ["backbone", "variant", "size", "pruner", "recoverer"]
    for ax, (col, ylabel) in zip(axes[0], panels, strict=True):
        for (backbone, variant, *_), g in data.groupby(keys):
            g = g.dropna(subset=[col]).drop_duplicates("frames").sort_values("frames")
            if g.empty:
                continue
            ax.plot(
                g["frames"],
                g[col],
                color=colour(str(backbone), backbones),
                marker=marker(str(variant)),
                linestyle=LINESTYLES.get(str(variant), "-."),
                linewidth=1.6,
                markersize=5,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain_log_axis(ax.yaxis)
        ticks = sorted(data["frames"].unique())  # the measured lengths themselves, not powers of ten
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("sequence length T (frames)")
        ax.set_ylabel(ylabel)
    batches = sorted(data["batch"].unique())
    devices = sorted(set(data["device"].astype(str)))
    fit_title(fig, f"Cost vs sequence length (batch {'/'.join(map(str, batches))}, {', '.join(devices)})")
    handles = [Line2D([], [], color=colour(b, backbones), linewidth=2.5, label=b) for b in backbones]
    handles += [
        Line2D([], [], color="0.3", marker=marker(v), linestyle=LINESTYLES.get(v, "-."), label=v)
        for v in sorted(data["variant"].unique(), key=_variant_rank)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


# --------------------------------------------------------------------------- per-block views


def _block_slice(blocks: pd.DataFrame, backbone: str) -> pd.DataFrame:
    """The per-block records of one backbone at one setting: its longest T, first size, smallest batch."""
    b = blocks[blocks["backbone"] == backbone]
    b = b[b["frames"] == b["frames"].max()]
    b = b[b["size"] == sorted(b["size"].astype(str))[0]]
    return b[b["batch"] == b["batch"].min()]


def _case_label(g: pd.DataFrame, many: bool) -> str:
    r = g.iloc[0]
    return f"{r['variant']} {r['schedule']}" if many and r["schedule"] else str(r["variant"])


def _panel_grid(n: int, width: float = 6.2, height: float = 3.9) -> tuple[Figure, list[Axes]]:
    ncols = 1 if n == 1 else 2
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _cases_in_order(b: pd.DataFrame) -> Iterable[tuple[str, pd.DataFrame]]:
    order = b.drop_duplicates("case_id").assign(_r=lambda d: d["variant"].map(_variant_rank))
    for cid in order.sort_values(["_r", "schedule"])["case_id"]:
        yield cid, b[b["case_id"] == cid].sort_values("block")


_NO_BLOCKS = "the run has no per-block FLOPs (flops_block records come with --metrics flops)"


@register("hourglass", "The token hourglass: tokens per block", _NO_BLOCKS)
def _draw_hourglass(data: PlotInputs) -> Figure | None:
    return hourglass(data.blocks) if not data.blocks.empty else None


def hourglass(blocks: pd.DataFrame) -> Figure:
    """Tokens seen by each block, one line per variant, one panel per backbone: the hourglass shape."""
    backbones = sorted(blocks["backbone"].unique())
    fig, axes = _panel_grid(len(backbones))
    seen: dict[str, Line2D] = {}
    for ax, backbone in zip(axes, backbones, strict=True):
        b = _block_slice(blocks, backbone)
        many = b.drop_duplicates("case_id")["variant"].duplicated().any()
        widths = {"rectangle": 5.0, "single": 2.6, "hierarchical": 1.6}
        for _, g in _cases_in_order(b):
            v = str(g["variant"].iloc[0])
            ax.step(
                g["block"],
                g["tokens"],
                where="mid",
                marker=marker(v),
                markersize=5,
                label=_case_label(g, many),
                linewidth=widths.get(v, 1.6),
                alpha=0.45 if v == "rectangle" else 0.95,
                color={"rectangle": "0.55", "single": "#1f77b4", "hierarchical": "#d62728"}.get(v),
            )
        t = int(b["frames"].iloc[0])
        ax.set_title(f"{backbone} (T={t}, size {b['size'].iloc[0]})")
        ax.set_xlabel("block index")
        ax.set_ylabel("temporal tokens seen by the block")
        ax.set_ylim(0, t * 1.08)
        nblocks = int(b["block"].max()) + 1
        ax.set_xticks(range(0, nblocks, 1 if nblocks <= 16 else 2))
        for line in ax.get_lines():
            seen.setdefault(str(line.get_label()), line)
    fit_title(fig, "The token hourglass: tokens per block")
    # One legend for all panels, below them, so that it never hides a line.
    fig.legend(handles=list(seen.values()), loc="lower center", ncol=min(len(seen), 4), frameon=False)
    fig.tight_layout(rect=(0, 0.05 * (4.0 / fig.get_figheight()) * 2, 1, 1))
    return fig


@register("flops_per_block", "FLOPs per block (fvcore)", _NO_BLOCKS)
def _draw_flops_per_block(data: PlotInputs) -> Figure | None:
    return flops_per_block(data.blocks, data.summary) if not data.blocks.empty else None


def flops_per_block(blocks: pd.DataFrame, summary: pd.DataFrame) -> Figure:
    """fvcore GFLOPs per block stacked into one bar per variant; grey on top = outside the blocks
    (embedding, head, recoverer): the fvcore total minus the blocks' sum."""
    backbones = sorted(blocks["backbone"].unique())
    fig, axes = _panel_grid(len(backbones), width=6.2, height=4.4)
    cmap = plt.get_cmap("viridis")
    totals = summary.set_index("case_id")["gflops_fvcore"] if "gflops_fvcore" in summary else pd.Series(dtype=float)
    for ax, backbone in zip(axes, backbones, strict=True):
        b = _block_slice(blocks, backbone)
        many = b.drop_duplicates("case_id")["variant"].duplicated().any()
        nblocks = int(b["block"].max()) + 1
        # One colour per block (discrete, integer ticks): a block is a thing, not a continuous quantity.
        norm = BoundaryNorm([i - 0.5 for i in range(nblocks + 1)], cmap.N)
        labels = []
        for x, (cid, g) in enumerate(_cases_in_order(b)):
            bottom = 0.0
            for blk, val in zip(g["block"], g["value"], strict=True):
                ax.bar(x, val, bottom=bottom, width=0.6, color=cmap(norm(blk)), edgecolor="white", linewidth=0.4)
                bottom += val
            total = totals.get(cid, float("nan"))
            if _real(total) and total > bottom:
                ax.bar(x, total - bottom, bottom=bottom, width=0.6, color="0.8", edgecolor="white", linewidth=0.4)
                bottom = total
            ax.annotate(_short(bottom), (x, bottom), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=9)
            labels.append(_case_label(g, many))
        ax.set_xticks(range(len(labels)), labels, rotation=0 if not many else 20)
        ax.set_ylabel("GFLOPs per clip (fvcore)")
        ax.set_title(f"{backbone} (T={int(b['frames'].iloc[0])}, size {b['size'].iloc[0]})")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.08)
        ax.grid(axis="x", visible=False)
        cb = fig.colorbar(plt.cm.ScalarMappable(cmap=cmap, norm=norm), ax=ax, pad=0.02)
        cb.set_label("block index")
        cb.ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(nblocks, 9)))
        cb.ax.minorticks_off()
    fit_title(fig, "FLOPs per block (fvcore); grey = outside the blocks (embedding, head, recoverer)")
    fig.tight_layout()
    return fig


def _short(x: float) -> str:
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}" if x >= 1 else f"{x:.3g}"


# --------------------------------------------------------------------------- time by part

PART_COLOURS = {
    "embed": "#8c564b", "spatial_attention": "#1f77b4", "temporal_attention": "#aec7e8", "mlp": "#ff7f0e",
    "graph": "#d62728", "norm": "#bcbd22", "prune": "#2ca02c", "recover": "#98df8a", "head": "#9467bd",
    "other": "#c7c7c7",
}  # fmt: skip


@register("time_by_part", "Where the time goes: time by part, FLOPs share beside it",
          "the run has no time by part (time_by_part records come with --metrics breakdown)")  # fmt: skip
def _draw_time_by_part(data: PlotInputs) -> Figure | None:
    parts = data.parts
    if parts is None or parts[parts["phase"] == "inference"].empty:
        return None
    return time_by_part(parts, data.summary)


def time_by_part(parts: pd.DataFrame, summary: pd.DataFrame) -> Figure:
    """Per case, a stacked bar of inference ms by part and, beside it, each part's share of the FLOPs.

    Time is the profiled pass (bench.measure.breakdown), FLOPs the torch counter per part (``flops_g``);
    one row of bars per case, grouped by backbone in the summary's order.
    """
    inf = parts[parts["phase"] == "inference"]
    order = [c for c in summary["case_id"] if c in set(inf["case_id"])]
    names = list(PART_COLOURS)
    ms = inf.groupby(["case_id", "part"])["value"].sum().unstack().reindex(index=order, columns=names).fillna(0.0)
    has_flops = "flops_g" in inf and inf["flops_g"].notna().any()
    share = pd.DataFrame(0.0, index=order, columns=names)
    if has_flops:
        g = inf.groupby(["case_id", "part"])["flops_g"].sum().unstack().reindex(index=order, columns=names).fillna(0.0)
        share = 100 * g.div(g.sum(axis=1).where(g.sum(axis=1) > 0), axis=0).fillna(0.0)
    label = summary.set_index("case_id")
    ticks = [f"{label.at[c, 'backbone']} {label.at[c, 'variant']} T{label.at[c, 'frames']}" for c in order]
    fig, (ax_t, ax_f) = plt.subplots(1, 2, figsize=(12.5, 1.0 + 0.45 * len(order)), sharey=True,
                                     gridspec_kw={"width_ratios": (3, 2)})  # fmt: skip
    y = list(range(len(order)))
    left_t = [0.0] * len(order)
    left_f = [0.0] * len(order)
    for part in names:
        if not ms[part].any() and not share[part].any():
            continue
        ax_t.barh(y, ms[part], left=left_t, color=PART_COLOURS[part], label=part.replace("_", " "))
        ax_f.barh(y, share[part], left=left_f, color=PART_COLOURS[part])
        left_t = [a + b for a, b in zip(left_t, ms[part], strict=True)]
        left_f = [a + b for a, b in zip(left_f, share[part], strict=True)]
    ax_t.set_yticks(y, ticks)
    ax_t.invert_yaxis()
    ax_t.set_xlabel("ms per forward (profiled)")
    ax_f.set_xlabel("share of FLOPs, % (torch counter)" if has_flops else "no FLOPs by part in this run")
    ax_f.set_xlim(0, 100)
    ax_t.legend(loc="lower center", bbox_to_anchor=(0.8, 1.0), ncol=5, frameon=False, fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- achieved FLOP/s

ROOFLINE_COUNTERS = ("fvcore", "torch", "paper")  # the figure uses the first counter the run has


def _of_metric(data: PlotInputs, metric: str) -> pd.DataFrame:
    """The breakdown records of ``metric`` for the cases the summary shows."""
    recs = data.breakdown
    if recs is None or recs.empty or "metric" not in recs:
        return pd.DataFrame()
    return recs[(recs["metric"] == metric) & recs["case_id"].isin(data.summary["case_id"])]


def _roofline_points(data: PlotInputs) -> tuple[pd.DataFrame, str, bool]:
    """(points, counter, all tokens from per-block records): one row per case with an achieved_gflops record.

    x is the temporal tokens of one forward: batch x the mean over blocks of the tokens each block
    sees (flops_block's ``tokens``), or batch x frames for a case without per-block records (for
    a pruned case that overstates its tokens, and the axis label says so).
    """
    achieved = _of_metric(data, "achieved_gflops")
    if achieved.empty:
        return pd.DataFrame(), "", True
    have = set(achieved["method"])
    counter = next((c for c in ROOFLINE_COUNTERS if c in have), sorted(have)[0])
    by_case = achieved[achieved["method"] == counter].groupby("case_id").last()
    pts = data.summary[data.summary["case_id"].isin(by_case.index)].copy()
    pts["achieved"] = pts["case_id"].map(by_case["value"]).astype(float)
    for col in ("ci_low", "ci_high"):
        vals = by_case[col] if col in by_case else pd.Series(dtype=float)
        pts[f"achieved_{col}"] = pd.to_numeric(pts["case_id"].map(vals), errors="coerce")
    blocks = data.blocks
    mean_tokens = pd.Series(dtype=float)
    if not blocks.empty and "tokens" in blocks:
        mean_tokens = pd.to_numeric(blocks["tokens"], errors="coerce").groupby(blocks["case_id"]).mean().dropna()
    per_block = pts["case_id"].map(mean_tokens)
    pts["tokens"] = pts["batch"].astype(float) * per_block.fillna(pts["frames"].astype(float))
    return pts, counter, bool(per_block.notna().all())


def _peaks(data: PlotInputs) -> list[tuple[str, float]]:
    """(label, GFLOP/s) of the GEMM peak per device, dtype and thread count of the cases shown."""
    recs = _of_metric(data, "machine_peak_gflops")
    if recs.empty:
        return []
    threads = recs["threads"] if "threads" in recs else pd.Series("?", index=recs.index)
    dtype = recs["dtype"] if "dtype" in recs else pd.Series("", index=recs.index)
    keys = recs["device"].astype(str) + " " + dtype.astype(str) + ", " + threads.map(_threads_text)
    return [(k, float(v)) for k, v in recs.groupby(keys)["value"].max().sort_values(ascending=False).items()]


def _threads_text(n: object) -> str:
    if not isinstance(n, int | float) or not _real(n):
        return "threads unknown"
    return f"{int(n)} thread{'s' if int(n) != 1 else ''}"


@register("roofline", "Achieved FLOP/s against the machine's GEMM peak",
          "no breakdown records: run with --metrics ...,breakdown")  # fmt: skip
def _draw_roofline(data: PlotInputs) -> Figure | None:
    pts, _, _ = _roofline_points(data)
    return roofline(data) if not pts.empty else None


def roofline(data: PlotInputs) -> Figure:
    """Achieved GFLOP/s of every case (FLOPs / median latency) against the tokens of one forward,
    with this machine's GEMM peak (dashed) for each device, dtype and thread count.

    A roofline in spirit, not in axes: the run records no bytes moved, so x is the work's size
    (tokens) rather than arithmetic intensity. Small token counts leave the matmuls small, and a
    pruned model's achieved rate falls as its tokens do: the gap to the peak is what pruning cannot
    turn into speed. Whiskers: the 95 % CI of the latency's median, carried over.
    """
    pts, counter, from_blocks = _roofline_points(data)
    peaks = _peaks(data)
    fig, ax = plt.subplots(figsize=(7.8, 5.4))
    backbones = sorted(pts["backbone"].unique())
    for r in pts.itertuples(index=False):
        c = colour(str(r.backbone), backbones)
        lo, hi = r.achieved_ci_low, r.achieved_ci_high
        yerr = [[max(0.0, r.achieved - lo)], [max(0.0, hi - r.achieved)]] if _real(lo) and _real(hi) else None
        ax.errorbar(r.tokens, r.achieved, yerr=yerr, fmt=marker(str(r.variant)), color=c, markersize=8.5,
                    capsize=3, linewidth=1.1, zorder=3)  # fmt: skip
    shades = ("0.25", "0.45", "0.6", "0.7")
    for i, (key, value) in enumerate(peaks):
        shade = shades[min(i, len(shades) - 1)]
        ax.axhline(value, linestyle="--", color=shade, linewidth=1.3, zorder=1)
        ax.annotate(f"GEMM peak, {key}: {_short(value)} GFLOP/s", xy=(0.99, value), xycoords=("axes fraction", "data"),
                    ha="right", va="bottom", fontsize=9, color=shade, xytext=(0, 2), textcoords="offset points")  # fmt: skip
    ys = [*pts["achieved"], *pd.to_numeric(pts["achieved_ci_low"], errors="coerce").dropna(), *(v for _, v in peaks)]
    ys = [y for y in ys if y > 0]
    ax.set_yscale("log")
    ax.set_ylim(min(ys) / 1.6, max(ys) * 1.6)
    plain_log_axis(ax.yaxis)
    xs = pts["tokens"]
    if xs.min() > 0 and xs.max() / xs.min() > 4:
        ax.set_xscale("log")
        plain_log_axis(ax.xaxis)
    else:
        pad = max(1.0, 0.1 * (xs.max() - xs.min()))
        ax.set_xlim(max(0.0, xs.min() - pad), xs.max() + pad)
    how = "batch × mean temporal tokens per block"
    if not from_blocks:
        how += "; batch × frames where the run has no per-block records"
    ax.set_xlabel(f"tokens per forward ({how})")
    ax.set_ylabel(f"achieved GFLOP/s ({counter} FLOPs / median latency)")
    ax.set_title("Achieved FLOP/s against this machine's GEMM peak")
    handles = [Line2D([], [], color=colour(b, backbones), marker="o", linestyle="", label=b) for b in backbones]
    handles += [Line2D([], [], color="0.35", marker=marker(v), linestyle="", label=v)
                for v in sorted(pts["variant"].unique(), key=_variant_rank)]  # fmt: skip
    if peaks:
        handles.append(Line2D([], [], color="0.35", linestyle="--", label="GEMM peak (machine_peak_gflops)"))
    ax.legend(handles=handles, loc="best", frameon=False, fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- memory by part

MEM_PHASES = {"inference": "MiB allocated per forward",
              "train": "MiB allocated per training step (AdamW's step in other)"}  # fmt: skip


@register("mem_by_part", "Where the memory goes: MiB allocated by part",
          "the run has no memory by part (mem_by_part records come with --metrics breakdown)")  # fmt: skip
def _draw_mem_by_part(data: PlotInputs) -> Figure | None:
    recs = _of_metric(data, "mem_by_part")
    return mem_by_part(recs, data.summary) if not recs.empty else None


def mem_by_part(recs: pd.DataFrame, summary: pd.DataFrame) -> Figure:
    """Per case, a stacked bar of the MiB each part allocated in one profiled forward (and training step).

    Allocations (what the part's ops allocated, summed over blocks), not a peak: memory freed
    along the way is counted when it was allocated, so a bar can exceed the peak, which is
    peak_mem_activations. In a training step the backward's allocations go to the part of the
    forward op that made them and the optimizer's to other.
    """
    phases = [p for p in MEM_PHASES if (recs["phase"] == p).any()]
    order = [c for c in summary["case_id"] if c in set(recs["case_id"])]
    names = list(PART_COLOURS)
    label = summary.set_index("case_id")
    ticks = [f"{label.at[c, 'backbone']} {label.at[c, 'variant']} T{label.at[c, 'frames']}" for c in order]
    fig, axes = plt.subplots(1, len(phases), figsize=(6.2 * len(phases) + 1.0, 1.9 + 0.45 * len(order)), sharey=True,
                             squeeze=False)  # fmt: skip
    y = list(range(len(order)))
    drawn: set[str] = set()
    for ax, phase in zip(axes[0], phases, strict=True):
        sub = recs[recs["phase"] == phase]
        mib = sub.groupby(["case_id", "part"])["value"].sum().unstack().reindex(index=order, columns=names).fillna(0.0)
        left = [0.0] * len(order)
        for part in names:
            if not mib[part].any():
                continue
            ax.barh(y, mib[part], left=left, color=PART_COLOURS[part])
            left = [a + b for a, b in zip(left, mib[part], strict=True)]
            drawn.add(part)
        for yi, total in zip(y, left, strict=True):
            if total > 0:
                ax.annotate(_short(total), (total, yi), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8.5)
        ax.set_xlim(0, max(left, default=0.0) * 1.15 or 1.0)
        ax.set_xlabel(MEM_PHASES[phase])
        ax.grid(axis="y", visible=False)
    axes[0][0].set_yticks(y, ticks)
    axes[0][0].invert_yaxis()
    handles = [Line2D([], [], color=PART_COLOURS[p], marker="s", linestyle="", markersize=9, label=p.replace("_", " "))
               for p in names if p in drawn]  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=5, frameon=False, fontsize=9)
    fit_title(fig, "Where the memory goes: MiB allocated by part (allocations, not a peak: the peak is "
              "peak_mem_activations)")  # fmt: skip
    legend_in = 0.25 * math.ceil(len(handles) / 5) + 0.1
    fig.tight_layout(rect=(0, legend_in / fig.get_figheight(), 1, 1))
    return fig
