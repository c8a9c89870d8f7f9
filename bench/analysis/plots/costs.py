"""Figures of what a case costs: latency, training step and peak memory per variant, and their growth with T.

- ``cost_per_variant``: bars per variant for each measured cost, grouped by backbone setting;
- ``scaling``: GFLOPs, latency and peak memory against the sequence length, log-log.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from ...core.numbers import column_unit
from .base import (
    LINESTYLES,
    VARIANT_COLOURS,
    PlotInputs,
    colour,
    fit_title,
    marker,
    panel_grid,
    plain_log_axis,
    real,
    register,
    variant_rank,
)


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
    fig, axes = panel_grid(len(panels), width=6.4, height=3.9)
    groups = _groups(summary)
    variants = sorted(summary["variant"].unique(), key=variant_rank)
    width = 0.8 / max(1, len(variants))
    spread_labels: set[str] = set()
    for ax, (col, ci, label, unit) in zip(axes, panels, strict=True):
        shown_unit, factor = column_unit(summary[col].tolist(), unit)
        for k, v in enumerate(variants):
            xs, ys, lo_err, hi_err = [], [], [], []
            for gx, (_, g) in enumerate(groups):
                row = g[g["variant"] == v]
                if row.empty or not real(row[col].iloc[0]):
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
        if real(lo) and real(hi):
            labels.add("95 % CI of the median")
            return float(lo), float(hi)
    if col == "latency_ms" and real(row.get("latency_p10_ms")) and real(row.get("latency_p90_ms")):
        labels.add("p10-p90 of the latency samples")
        return float(row["latency_p10_ms"]), float(row["latency_p90_ms"])
    return None, None


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
        for v in sorted(data["variant"].unique(), key=variant_rank)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig
