"""Figures of the blocks: the tokens each block sees (the hourglass) and the FLOPs each block costs.

Both draw from the per-block records (``flops_block``: fvcore GFLOPs and tokens per block), one
panel per backbone at one setting (its longest T, first size, smallest batch).
"""

from __future__ import annotations

from collections.abc import Iterable

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.colors import BoundaryNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .base import PlotInputs, fit_title, marker, panel_grid, real, register, short, variant_rank

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


def _cases_in_order(b: pd.DataFrame) -> Iterable[tuple[str, pd.DataFrame]]:
    order = b.drop_duplicates("case_id").assign(_r=lambda d: d["variant"].map(variant_rank))
    for cid in order.sort_values(["_r", "schedule"])["case_id"]:
        yield cid, b[b["case_id"] == cid].sort_values("block")


_NO_BLOCKS = "the run has no per-block FLOPs (flops_block records come with --metrics flops)"


@register("hourglass", "The token hourglass: tokens per block", _NO_BLOCKS)
def _draw_hourglass(data: PlotInputs) -> Figure | None:
    return hourglass(data.blocks) if not data.blocks.empty else None


def hourglass(blocks: pd.DataFrame) -> Figure:
    """Tokens seen by each block, one line per variant, one panel per backbone: the hourglass shape."""
    backbones = sorted(blocks["backbone"].unique())
    fig, axes = panel_grid(len(backbones))
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
    fig, axes = panel_grid(len(backbones), width=6.2, height=4.4)
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
            if real(total) and total > bottom:
                ax.bar(x, total - bottom, bottom=bottom, width=0.6, color="0.8", edgecolor="white", linewidth=0.4)
                bottom = total
            ax.annotate(short(bottom), (x, bottom), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=9)
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
