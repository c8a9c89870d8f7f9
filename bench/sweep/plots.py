"""The sweep's report: every schedule as a point, the Pareto front as a line, a heat map of cost.

- ``front``: cost (the first objective) against MPJPE, or against the second cost when no
  accuracy was measured; one colour per number of prune stages, the front as a staircase (the
  region it dominates lies above and to the right), the registered defaults ringed and named.
  Schedules that successive halving stopped early are hollow, at the MPJPE of their last rung
  (fewer training steps, so not comparable with the filled points).
- ``heatmap``: for the one-stage schedules, cost (and MPJPE, when measured) over the first prune
  block x keep, one panel per pruner + recoverer.

Drawn from ``schedules.csv``'s table alone; nothing here runs a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from tabulate import tabulate

from ..analysis.plots import STYLE, marker, save  # importing plots selects the Agg backend first

STAGE_COLOURS = ["#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"]  # 0 (rectangle), 1, 2, ...
LABELS = {
    "gflops_paper": "GFLOPs (paper protocol)", "gflops_fvcore": "GFLOPs (fvcore)", "gflops_torch": "GFLOPs (torch)",
    "latency_ms": "latency (ms, median)", "peak_mem_mib": "peak memory (MiB)", "mpjpe_mm": "MPJPE (mm)",
}  # fmt: skip
REFERENCE_TITLES = {"rectangle": "rectangle", "hot": "HoT default", "h2ot": "H2OT-style default"}


def _axes(obj_cols: Sequence[str]) -> tuple[str, str]:
    """x: the first cost; y: MPJPE when it is an objective, else the second objective."""
    costs = [c for c in obj_cols if c != "mpjpe_mm"]
    x = costs[0] if costs else obj_cols[0]
    y = "mpjpe_mm" if "mpjpe_mm" in obj_cols else next(c for c in obj_cols if c != x)
    return x, y


def front_figure(table: pd.DataFrame, obj_cols: Sequence[str], title: str, budget: Any = None,
                 pick: pd.Series | None = None) -> Any:  # fmt: skip
    """Every schedule as a point, the front as a line, the defaults highlighted (see the module docstring)."""
    x, y = _axes(obj_cols)
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    for n, g in table.groupby("stages"):
        col = STAGE_COLOURS[min(int(n), len(STAGE_COLOURS) - 1)]
        label = "rectangle" if n == 0 else f"{n} stage{'s' if n > 1 else ''}"
        full = g[g[x].notna() & g[y].notna()]
        for variant, h in full.groupby("variant"):
            ax.scatter(h[x], h[y], s=28, color=col, marker=marker(str(variant)), alpha=0.8, label=label, zorder=3)
            label = "_"
        if y == "mpjpe_mm" and "mpjpe_partial_mm" in g:
            early = g[g[x].notna() & g[y].isna() & g["mpjpe_partial_mm"].notna()]
            ax.scatter(early[x], early["mpjpe_partial_mm"], s=24, facecolors="none", edgecolors=col, alpha=0.6,
                       label=f"{n} stage(s), stopped early" if len(early) else "_", zorder=2)  # fmt: skip
    on = table[table["on_front"]].sort_values([x, y])
    if len(on):
        many = len(obj_cols) > 2
        ax.plot(on[x], on[y], drawstyle="default" if many else "steps-post", color="black", lw=1.2, zorder=4,
                label="Pareto front" + (f" (over {len(obj_cols)} objectives)" if many else ""))  # fmt: skip
        ax.scatter(on[x], on[y], s=46, facecolors="none", edgecolors="black", lw=1.2, zorder=5)
    refs = table[(table["reference"].fillna("") != "") & table[x].notna() & table[y].notna()]
    for _, r in refs.iterrows():
        ax.scatter([r[x]], [r[y]], s=180, marker="*", color="gold", edgecolors="black", lw=0.8, zorder=6)
        ax.annotate(REFERENCE_TITLES.get(r["reference"], r["reference"]), (r[x], r[y]), textcoords="offset points",
                    xytext=(8, 6), fontsize=9, zorder=7)  # fmt: skip
    if budget is not None:
        for col, limit in budget.limits:
            if col == x:
                ax.axvline(limit, color="crimson", ls="--", lw=1, label=f"budget {limit:g}")
            elif col == y:
                ax.axhline(limit, color="crimson", ls="--", lw=1, label=f"budget {limit:g}")
    if pick is not None and not (math.isnan(pick[x]) or math.isnan(pick[y])):
        ax.scatter([pick[x]], [pick[y]], s=260, facecolors="none", edgecolors="crimson", lw=1.8, zorder=7,
                   label="best within budget")  # fmt: skip
    ax.set_xlabel(LABELS.get(x, x))
    ax.set_ylabel(LABELS.get(y, y))
    grid = int((table["keep"].fillna("") != "").sum())
    refs = len(table) - grid
    ax.set_title(f"{title}: {grid} schedules{f' + {refs} reference(s)' if refs else ''}, "
                 f"{int(table['on_front'].sum())} on the front", fontsize=11)  # fmt: skip
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def heatmap_figure(table: pd.DataFrame, cost_col: str, title: str) -> Any:
    """Cost (and MPJPE) of the one-stage schedules over first prune block x keep."""
    one = table[(table["stages"] == 1) & (table["keep"].fillna("") != "")]
    metrics = [cost_col] + (["mpjpe_mm"] if one["mpjpe_mm"].notna().any() else [])
    combos = sorted({(p, r) for p, r in zip(one["pruner"], one["recoverer"].fillna(""), strict=True)})
    fig, axes = plt.subplots(len(metrics), len(combos), figsize=(1.2 + 0.7 * one["first_block"].nunique() * len(combos),
                                                                  1.0 + 1.4 * len(metrics) * max(1, one["keep"].nunique()) / 2),
                             squeeze=False)  # fmt: skip
    keeps = list(one.sort_values("first_keep", ascending=False)["keep"].drop_duplicates())  # most tokens on top
    blocks = sorted(int(b) for b in one["first_block"].dropna().unique())
    for i, metric in enumerate(metrics):
        for j, (p, r) in enumerate(combos):
            ax = axes[i][j]
            g = one[(one["pruner"] == p) & (one["recoverer"].fillna("") == r)]
            grid = g.pivot_table(index="keep", columns="first_block", values=metric, aggfunc="min")
            grid = grid.reindex(index=keeps, columns=blocks)
            im = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap="viridis" if metric != "mpjpe_mm" else "magma_r")
            ax.set_xticks(range(len(blocks)), [str(b) for b in blocks])
            ax.set_yticks(range(len(keeps)), keeps)
            ax.set_xlabel("first prune block")
            ax.set_ylabel("keep")
            ax.grid(False)
            lo, hi = im.get_clim()
            for (yi, xi), v in np.ndenumerate(grid.to_numpy(dtype=float)):
                if not math.isnan(v):
                    light = hi > lo and (v - lo) / (hi - lo) > 0.6 if metric != "mpjpe_mm" else (hi - v) / max(hi - lo, 1e-12) > 0.6
                    ax.text(xi, yi, f"{v:.3g}", ha="center", va="center", fontsize=7, color="black" if light else "white")
            ax.set_title(f"{LABELS.get(metric, metric)}\n{p}+{r or '-'}", fontsize=9)
            fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"{title}: one-stage schedules", fontsize=10)
    fig.tight_layout()
    return fig


def write_sweep_report(table: pd.DataFrame, pareto: pd.DataFrame, obj_cols: Sequence[str], out: Path, *,
                       title: str, meta: dict[str, Any], budget: Any = None,
                       pick: tuple[pd.Series | None, str] | None = None, pick_options: str = "") -> Path:  # fmt: skip
    """``out/index.md`` with the front table and the figures (PNG + SVG); returns the index path.

    ``pick``: the budget's best row and why; ``pick_options``: the ``profile`` options that rebuild it.
    """
    out.mkdir(parents=True, exist_ok=True)
    row = pick[0] if pick else None
    figures = []
    with plt.rc_context(STYLE):  # type: ignore[arg-type]
        if table[list(_axes(obj_cols))].notna().all(axis=1).any():
            save(front_figure(table, obj_cols, title, budget, row), out, "front")
            figures.append(("front", "Every schedule; the Pareto front as a line; registered defaults starred."))
        one = table[(table["stages"] == 1) & (table["keep"].fillna("") != "")]
        cost = next(c for c in obj_cols if c != "mpjpe_mm") if any(c != "mpjpe_mm" for c in obj_cols) else "gflops_paper"
        if len(one) and one[cost].notna().any():
            save(heatmap_figure(table, cost, title), out, "heatmap")
            figures.append(("heatmap", "One-stage schedules: cost over first prune block x keep."))
    grid = meta.get("grid", {})
    lines = [
        f"# Schedule sweep: {title}", "",
        f"Grid: stages {grid.get('stages')}, blocks {grid.get('blocks')}, keep {grid.get('keep')}, "
        f"pruners {grid.get('pruners')}, recoverers {grid.get('recoverers')}: {meta.get('schedules')} schedules "
        f"(+ the registered defaults as references). Search: {meta.get('search')}"
        + (f", accuracy preset {meta.get('accuracy')} ({meta.get('steps')} steps, synthetic data)" if meta.get("accuracy") else "")
        + ".",
        "",
        f"Objectives (all minimised): {', '.join(obj_cols)}. The paper FLOPs protocol leaves out the attention "
        "matmuls and norms (as the papers' tables do).", "",
    ]  # fmt: skip
    if budget is not None and pick is not None:
        r, why = pick
        lines += [f"**Budget {budget.describe()}**: " + (f"`{pick_options}` ({why})" if r is not None else why), ""]
    lines += [f"## Pareto front ({len(pareto)} schedules)", ""]
    if len(pareto):
        cols = ["reference", "variant", "schedule", "keep", "pruner", "recoverer", *obj_cols]
        lines += [tabulate(pareto[cols].fillna(""), headers="keys", showindex=False, tablefmt="github", floatfmt=".4g"), ""]
    for name, caption in figures:
        lines += [f"![{name}]({name}.png)", "", caption, ""]
    path = out / "index.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path

