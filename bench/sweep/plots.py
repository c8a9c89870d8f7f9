"""The sweep's report: every schedule as a point, the Pareto front as a line, a heat map of cost.

- ``front``: cost (the first objective) against MPJPE, or against the second cost when no
  accuracy was measured; one colour per number of prune stages, one marker per variant, latencies
  with their 95 % CI; the front as a staircase drawn to the data's edges (the region it dominates
  lies above and to the right; a one-point front is a corner), its members ringed in their own
  marker; the registered defaults starred and named.
  Schedules that successive halving stopped early are hollow, at the MPJPE of their last rung
  (fewer training steps, so not comparable with the filled points).
- ``heatmap``: for the one-stage schedules, cost (and MPJPE, when measured) over the first prune
  block x keep, one panel per pruner + recoverer.

Drawn from ``schedules.csv``'s table alone; nothing here runs a model.
"""

from __future__ import annotations

import html
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
            ax.errorbar(h[x], h[y], xerr=_whiskers(h, x), yerr=_whiskers(h, y), fmt=marker(str(variant)), color=col,
                        markersize=5.5, alpha=0.8, elinewidth=0.8, capsize=2, label=label, zorder=3)  # fmt: skip
            label = "_"
        if y == "mpjpe_mm" and "mpjpe_partial_mm" in g:
            early = g[g[x].notna() & g[y].isna() & g["mpjpe_partial_mm"].notna()]
            ax.scatter(early[x], early["mpjpe_partial_mm"], s=24, facecolors="none", edgecolors=col, alpha=0.6,
                       label=f"{n} stage(s), stopped early" if len(early) else "_", zorder=2)  # fmt: skip
    on = table[table["on_front"]].sort_values([x, y])
    if len(on):
        many = len(obj_cols) > 2
        label = "Pareto front" + (f" (over {len(obj_cols)} objectives)" if many else "")
        if many:  # the front over more objectives than drawn: its members, joined in order of x
            ax.plot(on[x], on[y], color="black", lw=1.2, zorder=4, label=label)
        else:  # the staircase bounding the dominated region (above and to the right), to the data's edges
            top = max(_reach(table, y), float(on[y].max()))
            right = max(_reach(table, x), float(on[x].max()))
            ax.plot([on[x].iloc[0], *on[x], right], [top, *on[y], on[y].iloc[-1]], drawstyle="steps-post",
                    color="black", lw=1.2, zorder=4, label=label)  # fmt: skip
        for variant, h in on.groupby("variant"):  # rings in the member's own marker: a square stays a square
            ax.scatter(h[x], h[y], s=90, marker=marker(str(variant)), facecolors="none", edgecolors="black", lw=1.2,
                       zorder=5)  # fmt: skip
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


def _whiskers(rows: pd.DataFrame, col: str) -> Any:
    """The 95 % CI of ``col`` as error bars (latency: from its records; none where a timing has no interval)."""
    if col != "latency_ms" or "latency_ci_low_ms" not in rows:
        return None
    low = (rows[col] - rows["latency_ci_low_ms"]).clip(lower=0).fillna(0.0)
    high = (rows["latency_ci_high_ms"] - rows[col]).clip(lower=0).fillna(0.0)
    return np.vstack([low.to_numpy(float), high.to_numpy(float)]) if (low.any() or high.any()) else None


def _reach(table: pd.DataFrame, col: str) -> float:
    """The largest value drawn along ``col``, its CI included."""
    values = [table[col].max()]
    if col == "latency_ms" and "latency_ci_high_ms" in table:
        values.append(table["latency_ci_high_ms"].max())
    return float(np.nanmax(np.asarray(values, dtype=float)))


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
    """``out/index.html`` (one self-contained page, as the run report's) and ``out/index.md``: the grid, the
    budget's pick, the front table and the figures (PNG + SVG); returns the page's path.

    ``pick``: the budget's best row and why; ``pick_options``: the ``profile`` options that rebuild it.
    """
    from ..analysis.report import figure_html, html_page

    out.mkdir(parents=True, exist_ok=True)
    row = pick[0] if pick else None
    figures: list[tuple[str, list[Path], str]] = []
    with plt.rc_context(STYLE):  # type: ignore[arg-type]
        if table[list(_axes(obj_cols))].notna().all(axis=1).any():
            figures.append(("front", save(front_figure(table, obj_cols, title, budget, row), out, "front"),
                            "Every schedule (colour: stages, marker: variant; latencies with their 95 % CI); the "
                            "Pareto front as a staircase, its members ringed; registered defaults starred."))  # fmt: skip
        one = table[(table["stages"] == 1) & (table["keep"].fillna("") != "")]
        cost = next(c for c in obj_cols if c != "mpjpe_mm") if any(c != "mpjpe_mm" for c in obj_cols) else "gflops_paper"
        if len(one) and one[cost].notna().any():
            figures.append(("heatmap", save(heatmap_figure(table, cost, title), out, "heatmap"),
                            "One-stage schedules: cost over first prune block x keep."))  # fmt: skip
    grid = meta.get("grid", {})
    intro = [
        f"Grid: stages {grid.get('stages')}, blocks {grid.get('blocks')}, keep {grid.get('keep')}, "
        f"pruners {grid.get('pruners')}, recoverers {grid.get('recoverers')}: {meta.get('schedules')} schedules "
        f"(+ the registered defaults as references). Search: {meta.get('search')}"
        + (f", accuracy preset {meta.get('accuracy')} ({meta.get('steps')} steps, synthetic data)" if meta.get("accuracy") else "")
        + ".",
        f"Objectives (all minimised): {', '.join(obj_cols)}. The paper FLOPs protocol leaves out the attention "
        "matmuls and norms (as the papers' tables do).",
    ]  # fmt: skip
    budget_text = ""
    if budget is not None and pick is not None:
        r, why = pick
        budget_text = f"Budget {budget.describe()}: " + (f"`{pick_options}` ({why})" if r is not None else why)
    cols = ["reference", "variant", "schedule", "keep", "pruner", "recoverer", *obj_cols]
    shown = pareto[cols].fillna("") if len(pareto) else None
    heading = f"Pareto front ({len(pareto)} schedules)"

    lines = [f"# Schedule sweep: {title}", "", *(x for t in intro for x in (t, ""))]
    if budget_text:
        lines += [f"**{budget_text.replace(': ', '**: ', 1)}", ""]
    lines += [f"## {heading}", ""]
    if shown is not None:
        lines += [tabulate(shown, headers="keys", showindex=False, tablefmt="github", floatfmt=".4g"), ""]
    for name, _, caption in figures:
        lines += [f"![{name}]({name}.png)", "", caption, ""]
    (out / "index.md").write_text("\n".join(lines), encoding="utf-8")

    body = [f"<h1>Schedule sweep: {html.escape(title)}</h1>", *(f"<p>{html.escape(t)}</p>" for t in intro)]
    if budget_text:
        body.append(f"<p class='note'>{html.escape(budget_text)}</p>")
    body.append(f"<h2>{html.escape(heading)}</h2>")
    if shown is not None:
        cells = [[html.escape(v if isinstance(v, str) else f"{v:.4g}") for v in r] for r in shown.itertuples(index=False)]
        body.append(tabulate(cells, headers=[html.escape(c) for c in cols], tablefmt="unsafehtml", disable_numparse=True))
    body.append("<p>Every schedule with its costs: <code>schedules.csv</code> in the sweep directory; the front: "
                "<code>pareto.csv</code>. Text version: <a href='index.md'>index.md</a>.</p>")  # fmt: skip
    body += [figure_html(name, files, out, caption) for name, files, caption in figures]
    page = out / "index.html"
    page.write_text(html_page(f"vptbench sweep: {title}", body), encoding="utf-8")
    return page
