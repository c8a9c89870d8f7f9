"""The summary of a run: its records as one row per case (``summary.csv``, the tables' and plots' input).

Every metric becomes a column in SPEC units, with the timing records' CIs and stability flags
beside their medians, the changes against the rectangle of the same setting, and each case's
worst status and failures. Accuracy is joined by (backbone, variant, frames, size) and kept apart
per method: synthetic-data MPJPE and Human3.6M MPJPE are on different scales, so they get separate
columns and never stand in for one another. A value nobody measured or reported stays blank.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from backbones.registry import VARIANTS

from .sources import ACCURACY_METRICS, JOIN_KEYS

CASE_COLUMNS = [
    "case_id", "backbone", "variant", "pipeline", "frames", "batch", "device", "dtype", "size",
    "schedule", "pruner", "recoverer", "runtime", "precision",
]  # fmt: skip
# The rectangle a pruned case is compared with: same everything but the variant (and its schedule).
REFERENCE_KEYS = ["backbone", "frames", "batch", "device", "dtype", "size", "runtime", "precision"]
PRECISION_ORDER = ("fp32", "fp16", "bf16", "int8")  # bench.core.case.PRECISIONS; analysis reads records only
MEMORY_METRICS = ("peak_mem_alloc", "peak_mem_reserved", "peak_mem_device", "peak_rss", "peak_mem_activations")


def summarize(recs: pd.DataFrame, accuracy: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per case: every metric as a column (SPEC units), the changes vs the rectangle, accuracy.

    Column names: ``params``, ``gflops_{paper,fvcore,torch}``, ``latency_ms`` (+ ``_p10``/``_p90``),
    ``fps``, ``clips_per_s``, ``train_step_ms``, ``{peak_metric}_{phase}_mib``, ``flops_change_pct``
    (paper counter) and ``flops_change_fvcore_pct``, ``speedup`` (FPS / rectangle FPS),
    ``{metric}_{method}`` for accuracy (mean over its records) and ``{metric}_{method}_change`` (mm vs
    the rectangle), ``status`` (worst of the case) and ``failures`` (``metric: status: error; ...``).
    Precision: ``pose_error_mm`` (with ``pose_mpjpe_delta_mm`` and ``pose_weights``), ``precision_speedup``
    (over the fp32 case) and ``precision_speedup_rect`` (over the fp32 rectangle), each with its CI.
    """
    cases = recs.drop_duplicates("case_id")[["run_id", *CASE_COLUMNS]].copy()
    cases = cases.set_index("case_id", drop=False)
    ok = recs[(recs["status"] == "ok") & recs["value"].notna()]

    def put(col: str, mask: pd.Series) -> None:
        vals = ok[mask].groupby("case_id")["value"].last()
        cases[col] = vals.reindex(cases.index).astype(float)

    put("params", ok["metric"] == "params")
    for counter in ("paper", "fvcore", "torch"):
        put(f"gflops_{counter}", (ok["metric"] == "flops") & (ok["method"] == counter))
    def put_timed(col: str, metric: str, method: str | None = None) -> None:
        """The median and, where the record has them, its 95 % CI, n and stability flag."""
        mask = (ok["metric"] == metric) & ((ok["method"] == method) if method else True)
        put(col, mask)
        base = col.removesuffix("_ms")
        unit = "_ms" if col.endswith("_ms") else ""
        rows = ok[mask].groupby("case_id").last()
        fields = (("ci_low", f"{base}_ci_low{unit}"), ("ci_high", f"{base}_ci_high{unit}"), ("n", f"{base}_n"),
                  ("mad_pct", f"{base}_mad_pct"))  # fmt: skip
        for field_, name in fields:
            vals = rows[field_] if field_ in rows else pd.Series(dtype=float)
            cases[name] = pd.to_numeric(vals.reindex(cases.index), errors="coerce").astype(float)
        stable = rows["stable"] if "stable" in rows else pd.Series(dtype=object)
        cases[f"{base}_stable"] = stable.reindex(cases.index).map(lambda x: x if isinstance(x, bool) else None)
        why = rows["unstable_reason"] if "unstable_reason" in rows else pd.Series(dtype=object)
        cases[f"{base}_unstable_reason"] = why.reindex(cases.index).map(lambda x: x if isinstance(x, str) else "")

    put_timed("latency_ms", "latency")
    put("latency_p10_ms", ok["metric"] == "latency_p10")
    put("latency_p90_ms", ok["metric"] == "latency_p90")
    put("fps", ok["metric"] == "fps")
    put("clips_per_s", ok["metric"] == "clips_per_s")
    put_timed("train_step_ms", "train_step")
    put_timed("speedup_paired", "speedup")
    put("stream_max_fps", ok["metric"] == "stream_max_fps")  # the rest of the stream group: bench.analysis.stream_section
    put_timed("stream_speedup", "stream_speedup")
    put_timed("precision_speedup", "precision_speedup", "paired")
    put_timed("precision_speedup_rect", "precision_speedup", "paired_rectangle")
    _put_pose_error(cases, ok)
    for m in MEMORY_METRICS:
        for phase in ("inference", "train"):
            put(f"{m}_{phase}_mib", (ok["metric"] == m) & (ok["phase"] == phase))
    _put_breakdown(cases, ok)
    unsupported = ok[(ok["metric"] == "flops") & (ok["method"] == "fvcore")].groupby("case_id")["unsupported"].last()
    cases["fvcore_unsupported"] = unsupported.reindex(cases.index).map(_unsupported_text)

    cases["status"] = recs.groupby("case_id")["status"].agg(_case_status).reindex(cases.index)
    bad = recs[recs["status"] != "ok"]
    fails = bad.groupby("case_id").apply(
        lambda g: "; ".join(f"{m}: {s}: {e}" for m, s, e in zip(g["metric"], g["status"], g["error"], strict=True)),
        include_groups=False,
    )
    cases["failures"] = fails.reindex(cases.index).fillna("") if len(fails) else ""

    cases = _join_accuracy(cases, accuracy)
    cases = _changes(cases)
    order = {v: i for i, v in enumerate(VARIANTS)}
    cases["_v"] = cases["variant"].map(lambda v: order.get(v, len(order)))
    cases["_p"] = cases["precision"].map(lambda p: PRECISION_ORDER.index(p) if p in PRECISION_ORDER else 9)
    cases = cases.sort_values(
        ["backbone", "size", "frames", "batch", "device", "runtime", "_p", "_v", "schedule"], kind="stable"
    )
    return cases.drop(columns=["_v", "_p"]).reset_index(drop=True)


def _put_pose_error(cases: pd.DataFrame, ok: pd.DataFrame) -> None:
    """``pose_error_mm``, ``pose_mpjpe_delta_mm``, ``pose_spread_mm`` (how far the fp32 poses move around
    their mean pose) and ``pose_weights`` (what the weights were) of the pose_error records."""
    rows = ok[ok["metric"] == "pose_error"].groupby("case_id").last()
    cases["pose_error_mm"] = rows["value"].reindex(cases.index).astype(float) if len(rows) else float("nan")
    fields = (("mpjpe_delta", "pose_mpjpe_delta_mm"), ("pose_spread", "pose_spread_mm"), ("weights", "pose_weights"))
    for field_, col in fields:
        vals = rows[field_] if field_ in rows else pd.Series(dtype=object)
        cases[col] = vals.reindex(cases.index)
    for col in ("pose_mpjpe_delta_mm", "pose_spread_mm"):
        cases[col] = pd.to_numeric(cases[col], errors="coerce").astype(float)
    cases["pose_weights"] = cases["pose_weights"].map(lambda x: x if isinstance(x, str) else "")


PART_NAMES = ("embed", "spatial_attention", "temporal_attention", "mlp", "graph", "norm", "prune", "recover", "head",
              "other")  # bench.measure.profiler.PARTS, without importing torch.profiler here  # fmt: skip


def _put_breakdown(cases: pd.DataFrame, ok: pd.DataFrame) -> None:
    """Columns of the breakdown group: ``part_{part}_ms`` (inference, summed over blocks),
    ``prune_recover_pct`` (of the parts' sum), ``achieved_gflops`` and ``of_peak_pct`` (torch
    counter), ``machine_peak_gflops`` and ``flops_train``."""
    parts = ok[(ok["metric"] == "time_by_part") & (ok["phase"] == "inference")]
    by_part = parts.groupby(["case_id", "part"])["value"].sum().unstack()
    for part in PART_NAMES:
        col = by_part[part] if part in by_part else pd.Series(dtype=float)
        cases[f"part_{part}_ms"] = col.reindex(cases.index).astype(float)
    total = by_part.sum(axis=1).reindex(cases.index) if not by_part.empty else pd.Series(float("nan"), cases.index)
    overhead = cases["part_prune_ms"].fillna(0) + cases["part_recover_ms"].fillna(0)
    cases["prune_recover_pct"] = (100 * overhead / total).where(total > 0)
    achieved = ok[(ok["metric"] == "achieved_gflops") & (ok["method"] == "torch")].groupby("case_id")["value"].last()
    peak = ok[ok["metric"] == "machine_peak_gflops"].groupby("case_id")["value"].last()
    cases["achieved_gflops"] = achieved.reindex(cases.index).astype(float)
    cases["machine_peak_gflops"] = peak.reindex(cases.index).astype(float)
    cases["of_peak_pct"] = 100 * cases["achieved_gflops"] / cases["machine_peak_gflops"]
    train = ok[ok["metric"] == "flops_train"].groupby("case_id")["value"].last()
    cases["flops_train"] = train.reindex(cases.index).astype(float)


def _case_status(statuses: pd.Series) -> str:
    """error or oom if any record failed so; skipped only when nothing was measured (a skipped
    NVML reading on an otherwise measured case does not make the case skipped)."""
    seen = set(statuses)
    for s in ("error", "oom", "ok", "skipped"):
        if s in seen:
            return s
    return "error"


def _unsupported_text(x: Any) -> str:
    if isinstance(x, dict) and x:
        return ", ".join(f"{k} x{v}" for k, v in sorted(x.items()))
    return ""


def _join_accuracy(cases: pd.DataFrame, accuracy: pd.DataFrame | None) -> pd.DataFrame:
    """Mean accuracy per (join key, metric, method) as wide columns; a reported row without size matches any size."""
    if accuracy is None or accuracy.empty:
        return cases
    acc = accuracy[accuracy["status"] == "ok"].dropna(subset=["value"]).copy()
    acc["frames"] = acc["frames"].astype(int)
    acc["size"] = acc["size"].fillna("").astype(str)
    acc["col"] = acc["metric"] + "_" + acc["method"]
    out = cases
    for sized in (True, False):
        part = acc[(acc["size"] != "") == sized]
        if part.empty:
            continue
        keys = JOIN_KEYS if sized else JOIN_KEYS[:-1]
        wide = part.pivot_table(index=keys, columns="col", values="value", aggfunc="mean").reset_index()
        src = part[part["method"] == "reported"].groupby(keys)["source"].agg(lambda s: "; ".join(sorted(set(s))))
        if len(src):
            wide = wide.merge(src.rename("reported_source").reset_index(), on=keys, how="left")
        merged = out.merge(wide, on=keys, how="left", suffixes=("", "_new"))
        merged.index = out.index
        for col in wide.columns:
            if col in keys:
                continue
            if f"{col}_new" in merged:  # already filled by the sized rows: those win
                merged[col] = merged[col].combine_first(merged.pop(f"{col}_new"))
        out = merged
    return out


def _changes(cases: pd.DataFrame) -> pd.DataFrame:
    """Differences vs the rectangle of the same (backbone, frames, batch, device, dtype, size)."""
    acc_cols = accuracy_cols(cases.columns)
    value_cols = ["gflops_paper", "gflops_fvcore", "fps", *acc_cols]
    rect = cases[cases["variant"] == "rectangle"].drop_duplicates(REFERENCE_KEYS)
    ref = rect[REFERENCE_KEYS + value_cols].rename(columns={c: f"{c}_ref" for c in value_cols})
    merged = cases.merge(ref, on=REFERENCE_KEYS, how="left")
    merged.index = cases.index
    for counter, col in (("paper", "flops_change_pct"), ("fvcore", "flops_change_fvcore_pct")):
        merged[col] = (merged[f"gflops_{counter}"] / merged[f"gflops_{counter}_ref"] - 1.0) * 100.0
    # The paired speed-up (pruned and rectangle alternated in one process) where it was measured;
    # else the ratio of the two FPS medians, measured apart, and labelled so.
    ratio = merged["fps"] / merged["fps_ref"]
    paired = merged.get("speedup_paired", pd.Series(float("nan"), index=merged.index))
    merged["speedup"] = paired.where(paired.notna(), ratio)
    merged["speedup_method"] = [
        "paired" if p == p else ("ratio of medians" if r == r else "") for p, r in zip(paired, ratio, strict=True)
    ]
    for end in ("ci_low", "ci_high", "n", "mad_pct"):
        merged[f"speedup_{end}"] = merged.get(f"speedup_paired_{end}", pd.Series(float("nan"), index=merged.index))
    merged["speedup_stable"] = merged.get("speedup_paired_stable", pd.Series(None, index=merged.index, dtype=object))
    merged["speedup_unstable_reason"] = merged.get("speedup_paired_unstable_reason", pd.Series("", index=merged.index))
    merged = merged.drop(columns=[c for c in merged.columns if c.startswith("speedup_paired")])
    for c in acc_cols:
        merged[f"{c}_change"] = merged[c] - merged[f"{c}_ref"]
    return merged.drop(columns=[f"{c}_ref" for c in value_cols])


def accuracy_cols(cols: Iterable[str]) -> list[str]:
    """Accuracy value columns among ``cols``: ``{metric}_{method}``, e.g. ``mpjpe_synthetic``."""
    return [c for c in cols if accuracy_method(c)]


def accuracy_method(col: str) -> str:
    for m in sorted(ACCURACY_METRICS, key=len, reverse=True):  # p_mpjpe before mpjpe
        if col.startswith(m + "_"):
            rest = col[len(m) + 1 :]
            return rest if rest and "_" not in rest else ""
    return ""


__all__ = ["summarize"]
