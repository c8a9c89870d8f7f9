"""Figures of the breakdown group (``--metrics breakdown``): where the time and the memory go, and how
close the achieved FLOP/s come to the machine's peak.

- ``time_by_part``: inference ms by part per case, each part's share of the FLOPs beside it;
- ``roofline``: achieved GFLOP/s against the tokens of one forward, with the GEMM peak;
- ``mem_by_part``: MiB allocated by part in a forward and a training step.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .base import PlotInputs, colour, fit_title, marker, plain_log_axis, real, register, short, variant_rank

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

    Time is the profiled pass (bench.measure.profiler), FLOPs the torch counter per part (``flops_g``);
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
    if not isinstance(n, int | float) or not real(n):
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
        yerr = [[max(0.0, r.achieved - lo)], [max(0.0, hi - r.achieved)]] if real(lo) and real(hi) else None
        ax.errorbar(r.tokens, r.achieved, yerr=yerr, fmt=marker(str(r.variant)), color=c, markersize=8.5,
                    capsize=3, linewidth=1.1, zorder=3)  # fmt: skip
    shades = ("0.25", "0.45", "0.6", "0.7")
    for i, (key, value) in enumerate(peaks):
        shade = shades[min(i, len(shades) - 1)]
        ax.axhline(value, linestyle="--", color=shade, linewidth=1.3, zorder=1)
        ax.annotate(f"GEMM peak, {key}: {short(value)} GFLOP/s", xy=(0.99, value), xycoords=("axes fraction", "data"),
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
                for v in sorted(pts["variant"].unique(), key=variant_rank)]  # fmt: skip
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
                ax.annotate(short(total), (total, yi), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8.5)
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
