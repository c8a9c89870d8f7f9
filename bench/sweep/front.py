"""The sweep's table and its Pareto front, and the best schedule within a budget.

:func:`sweep_table` gives one row per schedule: its case and grid labels, its costs from the sweep
directory's records (GFLOPs of each counter, latency with its 95 % CI, peak memory) and its MPJPE from the accuracy
search; ``vptbench sweep`` writes it as ``schedules.csv``. :func:`mark_front` ranks the rows over the
objectives (``pareto_rank``, ``on_front``), :func:`front` keeps exactly the non-dominated ones
(``pareto.csv``). A :class:`Budget` (``--budget-gflops X``, ``--budget-ms X``) picks the best row
within it (:func:`best_within`), printed as ready options (``--variant ... --schedule ... --pruner
... --recoverer ...``) by :func:`budget_line`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..analysis.pareto import front_ranks, pareto_mask
from ..core.numbers import has_interval
from .grid import Candidate

OBJECTIVES = ("flops", "latency", "memory", "mpjpe")
COUNTERS = ("paper", "fvcore", "torch")


# --------------------------------------------------------------------------- the table


def cost_columns(counter: str) -> dict[str, str]:
    """Objective name -> column of :func:`sweep_table`."""
    return {"flops": f"gflops_{counter}", "latency": "latency_ms", "memory": "peak_mem_mib", "mpjpe": "mpjpe_mm"}


def sweep_table(candidates: Sequence[Candidate], records: Sequence[dict[str, Any]],
                accuracy: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:  # fmt: skip
    """One row per candidate: its case, grid labels, costs from ``records`` and accuracy by case id.

    ``accuracy`` maps a candidate's case id to ``{"mpjpe": mm, "steps": n, "final": bool}``; only
    final (full-budget) values go to ``mpjpe_mm``, the others to ``mpjpe_partial_mm``.
    """
    latest: dict[tuple[str, str, str], float] = {}
    timed: dict[str, dict[str, Any]] = {}  # case id -> its latency record (CI, n, stability)
    for r in records:
        if r.get("status") != "ok" or r.get("value") is None:
            continue
        if r["metric"] in ("peak_rss", "peak_mem_alloc") and r.get("phase", "inference") != "inference":
            continue
        latest[(r["case_id"], r["metric"], r.get("method") or "")] = float(r["value"])  # a resumed case: the last counts
        if r["metric"] == "latency":
            timed[r["case_id"]] = r
    any_method = {(k, m): v for (k, m, _), v in latest.items()}
    rows = []
    for c in candidates:
        k = c.case.case_id
        stages = c.stages
        row: dict[str, Any] = {
            "case_id": k, "reference": c.reference, "variant": c.case.variant, "stages": len(stages),
            "first_block": stages[0][0] if stages else None, "first_keep": stages[0][1] if stages else None,
            "keep": ",".join(c.keeps), "schedule": c.case.schedule, "pruner": c.case.pruner,
            "stage_pruners": "+".join(c.pruner_plan),
            "recoverer": c.case.recoverer, "backbone": c.case.backbone, "frames": c.case.frames,
            "size": c.case.size, "batch": c.case.batch, "device": c.case.device, "precision": c.case.precision,
        }  # fmt: skip
        for counter in COUNTERS:
            row[f"gflops_{counter}"] = latest.get((k, "flops", counter), math.nan)
        row["latency_ms"] = any_method.get((k, "latency"), math.nan)
        lat = timed.get(k, {})
        interval = has_interval(lat.get("ci_low"), lat.get("ci_high"), lat.get("n"))
        row["latency_ci_low_ms"] = float(lat["ci_low"]) if interval else math.nan
        row["latency_ci_high_ms"] = float(lat["ci_high"]) if interval else math.nan
        row["latency_n"] = lat.get("n")
        row["latency_stable"] = lat.get("stable")
        row["peak_mem_mib"] = any_method.get((k, "peak_rss"), any_method.get((k, "peak_mem_alloc"), math.nan))
        row["pose_error_mm"] = any_method.get((k, "pose_error"), math.nan)  # --precision with --metrics pose_error
        row["precision_speedup"] = latest.get((k, "precision_speedup", "paired"), math.nan)
        acc = (accuracy or {}).get(k)
        final = bool(acc and acc.get("final"))
        row["mpjpe_mm"] = acc["mpjpe"] if acc and final else math.nan
        row["mpjpe_partial_mm"] = acc["mpjpe"] if acc and not final else math.nan
        row["train_steps"] = acc["steps"] if acc else None
        rows.append(row)
    return pd.DataFrame(rows)


def mark_front(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``table`` with ``pareto_rank`` (0 = on the front, -1 = an objective missing) and ``on_front``."""
    out = table.copy()
    ranks = front_ranks(out[list(columns)].to_numpy(dtype=float)) if len(out) else np.array([], dtype=int)
    out["pareto_rank"] = ranks
    out["on_front"] = ranks == 0
    return out


def front(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Exactly the non-dominated rows of ``table`` over ``columns`` (all minimised), by the first column."""
    if table.empty:
        return table
    mask = pareto_mask(table[list(columns)].to_numpy(dtype=float))
    return table[mask].sort_values(list(columns)).reset_index(drop=True)


def front_text(pareto: pd.DataFrame, obj_cols: Sequence[str]) -> str:
    """The front as a plain table (what ``vptbench sweep`` prints)."""
    from tabulate import tabulate

    if pareto.empty:
        return "(empty front: no schedule has every objective measured)"
    cols = ["reference", "variant", "schedule", "pruner", "recoverer", *obj_cols]
    return tabulate(pareto[cols].fillna(""), headers="keys", showindex=False, floatfmt=".4g")


# --------------------------------------------------------------------------- budget


@dataclass(frozen=True)
class Budget:
    """Upper limits on cost columns (``gflops_paper`` <= 50, ``latency_ms`` <= 20)."""

    limits: tuple[tuple[str, float], ...]

    def within(self, table: pd.DataFrame) -> pd.Series:
        ok = pd.Series(True, index=table.index)
        for col, limit in self.limits:
            ok &= table[col].notna() & (table[col] <= limit)
        return ok

    def describe(self) -> str:
        unit = {"latency_ms": "ms"}
        return " and ".join(f"{col.removeprefix('gflops_') + ' ' if col.startswith('gflops_') else ''}"
                            f"{'GFLOPs' if col.startswith('gflops_') else unit.get(col, col)} <= {limit:g}"
                            for col, limit in self.limits)  # fmt: skip


def best_within(table: pd.DataFrame, budget: Budget, flops_col: str) -> tuple[pd.Series | None, str]:
    """The best row within ``budget`` and why it is the best.

    With accuracy, the lowest MPJPE trained for the full budget. Without, the row that keeps the
    most computation (highest FLOPs) within the budget, the one pruning least: fewer kept tokens
    cost accuracy in HoT's and H2OT's ablations, so it is the likely most accurate; say so.
    """
    inside = table[budget.within(table)]
    if inside.empty:
        return None, "no schedule is within the budget"
    scored = inside[inside["mpjpe_mm"].notna()]
    if not scored.empty:
        return scored.sort_values(["mpjpe_mm", flops_col]).iloc[0], "the lowest MPJPE within the budget"
    order = inside.sort_values([flops_col, "latency_ms"], ascending=[False, True])
    return order.iloc[0], "no accuracy measured: the schedule keeping the most computation within the budget"


def ready_options(row: pd.Series) -> str:
    """The options that rebuild ``row``'s model in ``vptbench profile`` (and ``backbones.create``)."""
    opts = [f"--variant {row['variant']}"]
    if row["schedule"]:
        opts.append(f"--schedule {row['schedule']}")
    if row["pruner"]:
        opts.append(f"--pruner {row['pruner']}")
    if row["recoverer"]:
        opts.append(f"--recoverer {row['recoverer']}")
    if row.get("precision", "fp32") not in ("fp32", None, ""):
        opts.append(f"--precision {row['precision']}")
    return " ".join(opts)


def budget_line(pick: tuple[pd.Series | None, str], budget: Budget, flops_col: str, backbone: str, size: str,
                frames: int) -> str:  # fmt: skip
    """``best within ...: --variant single --schedule 3:9 ...`` and a ready profile command."""
    row, why = pick
    if row is None:
        return f"budget {budget.describe()}: {why}"
    figures = [f"{row[flops_col]:.4g} GFLOPs ({flops_col.removeprefix('gflops_')})"]
    if not math.isnan(row["latency_ms"]):
        figures.append(f"{row['latency_ms']:.3g} ms")
    if not math.isnan(row["mpjpe_mm"]):
        figures.append(f"MPJPE {row['mpjpe_mm']:.1f} mm")
    return (f"best within {budget.describe()} ({why}): {ready_options(row)}\n  ({', '.join(figures)}; "
            f"vptbench profile {backbone} --size {size} --frames {frames} {ready_options(row)})")
