"""Reports: efficiency tables and plots of a run, joined with accuracy (``vptbench report``).

A report is built from records alone (no model runs): ``results/<run_id>/records.jsonl`` and
``meta.json`` of a run, plus accuracy from run directories / ``records.jsonl`` files (methods
synthetic, h36m) or the papers' reported-values table (method ``reported``). It is written to
``reports/<run_id>/``:

- ``summary.csv``: one row per case, every number as measured (full precision, SPEC units);
- ``index.md`` and ``tables/<backbone>.tex``: one table per backbone, rows = variants, in the
  shape of the papers' efficiency tables;
- ``plots/*.png`` and ``plots/*.svg`` (see :mod:`bench.analysis.plots`);
- ``index.html``: one self-contained page (plots embedded as data URIs, tables, environment).

Accuracy is joined by (backbone, variant, frames, size) and kept apart per method: synthetic-data
MPJPE and Human3.6M MPJPE are on different scales, so they get separate columns and never stand in
for one another. A value nobody measured or reported stays blank. A case that failed (oom, error,
skipped) keeps its row; its missing cells say why, with a footnote.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from backbones.registry import VARIANTS

from ..core import numbers
from ..core.errors import UsageError
from ..core.results import MEASUREMENT_KEY, read_meta, read_records
from . import runtimes_section as report_runtimes

ACCURACY_METRICS = ("mpjpe", "p_mpjpe", "mpjve")
ACCURACY_METHODS = ("h36m", "reported", "synthetic")  # display order: real data first
REPORTED_COLUMNS = ("backbone", "variant", "frames", "size", "metric", "value", "unit", "gflops_paper", "source")
JOIN_KEYS = ["backbone", "variant", "frames", "size"]
CASE_COLUMNS = [
    "case_id", "backbone", "variant", "pipeline", "frames", "batch", "device", "dtype", "size",
    "schedule", "pruner", "recoverer", "runtime",
]  # fmt: skip
# The rectangle a pruned case is compared with: same everything but the variant (and its schedule).
REFERENCE_KEYS = ["backbone", "frames", "batch", "device", "dtype", "size", "runtime"]
MEMORY_METRICS = ("peak_mem_alloc", "peak_mem_reserved", "peak_mem_device", "peak_rss", "peak_mem_activations")

# A failed record of one of these metrics explains the blank cells of its group.
METRIC_GROUP = {
    "params": "params",
    "flops": "flops",
    "flops_block": "flops",
    "latency": "latency",
    "latency_p10": "latency",
    "latency_p90": "latency",
    "fps": "latency",
    "clips_per_s": "latency",
    "train_step": "train",
    "time_by_part": "breakdown",
    "mem_by_part": "breakdown",
    "achieved_gflops": "breakdown",
    "machine_peak_gflops": "breakdown",
    "flops_train": "flops_train",
    **{m: "memory" for m in MEMORY_METRICS},
    **{m: "accuracy" for m in ACCURACY_METRICS},
}
STATUS_LABEL = {"oom": "OOM", "error": "error", "skipped": "skipped"}

FLOPS_NOTE = (
    "GFLOPs are 2 x multiply-adds, by three counters. "
    "paper: the published protocol (thop MACs x 2 over module hooks: Linear/Conv layers), comparable "
    "with the papers' tables; it leaves out the attention matmuls (QK^T, AV), softmax and norms, so "
    "it undercounts attention, most at long sequences. "
    "fvcore: fvcore FlopCountAnalysis of the traced graph, with handles for what it misses "
    "(scaled_dot_product_attention); counts attention matmuls, not element-wise ops (listed as unsupported). "
    "torch: torch.utils.flop_counter.FlopCounterMode at dispatch level, attention included."
)


# --------------------------------------------------------------------------- loading


def reported_table_path() -> Path:
    """The papers' reported-values table shipped with the package (``bench/analysis/reported.csv``)."""
    return Path(str(resources.files("bench.analysis") / "reported.csv"))


def read_reported(path: str | Path) -> pd.DataFrame:
    """A reported-values table (columns :data:`REPORTED_COLUMNS`), validated row by row.

    Returns long accuracy rows (method ``reported``) plus ``gflops_paper`` and ``source``; a bad
    row raises UsageError naming the file and line, so a typo in the table cannot slip into a plot.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such reported-values table")
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REPORTED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UsageError(f"{path}:1: header lacks {', '.join(missing)}; expected {','.join(REPORTED_COLUMNS)}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row or any(row[c] is None for c in REPORTED_COLUMNS):
                raise UsageError(f"{where}: expected {len(REPORTED_COLUMNS)} comma-separated fields")
            if not any(v.strip() for v in row.values() if isinstance(v, str)):
                continue
            for col in ("backbone", "variant", "metric", "source"):
                if not row[col].strip():
                    raise UsageError(f"{where}: {col} is empty")
            try:
                frames = int(row["frames"])
            except ValueError:
                raise UsageError(f"{where}: frames must be an integer, got {row['frames']!r}") from None
            value = _finite(row["value"], where, "value", required=True)
            gflops = _finite(row["gflops_paper"], where, "gflops_paper", required=False)
            rows.append({
                "backbone": row["backbone"].strip(), "variant": row["variant"].strip(), "frames": frames,
                "size": row["size"].strip(), "metric": row["metric"].strip(), "value": value,
                "unit": row["unit"].strip(), "method": "reported", "status": "ok", "error": "",
                "gflops_paper": gflops, "source": row["source"].strip(),
            })  # fmt: skip
    return pd.DataFrame(
        rows, columns=[*JOIN_KEYS, "metric", "value", "unit", "method", "status", "error", "gflops_paper", "source"]
    )


def _finite(text: str, where: str, name: str, required: bool) -> float | None:
    if not text.strip():
        if required:
            raise UsageError(f"{where}: {name} is empty")
        return None
    try:
        x = float(text)
    except ValueError:
        raise UsageError(f"{where}: {name} must be a number, got {text!r}") from None
    if not math.isfinite(x):
        raise UsageError(f"{where}: {name} must be finite, got {text!r}")
    return x


def load_accuracy(source: str) -> pd.DataFrame:
    """Long accuracy rows of one source: ``reported``, a ``.csv`` table, a run dir or records file."""
    if source == "reported":
        path = reported_table_path()
        if not path.is_file():
            raise UsageError(f"reported: the reported-values table {path} is missing from this installation")
        return read_reported(path)
    path = Path(source)
    if path.suffix == ".csv":
        return read_reported(path)
    if not path.exists():
        raise UsageError(
            f"{source}: no such accuracy source; give a run directory, a records.jsonl, a reported-values .csv "
            "or 'reported'"
        )
    recs = [r for r in read_records(path) if r["metric"] in ACCURACY_METRICS]
    if not recs:
        raise UsageError(f"{source}: holds no accuracy records ({', '.join(ACCURACY_METRICS)})")
    df = pd.DataFrame(recs)
    return _accuracy_frame(df)


def _accuracy_frame(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for col in ("method", "error", "size"):
        if col not in df:
            df[col] = ""
    # failure() records carry no method ("-"): they belong to the data set of their source's other
    # records (one source is one data set), else to the default, synthetic.
    method = df["method"].fillna("-").astype(str)
    known = method[~method.isin(["-", ""])]
    df["method"] = method.where(~method.isin(["-", ""]), known.mode().iloc[0] if len(known) else "synthetic")
    df["gflops_paper"] = None
    df["source"] = ""
    return df[[*JOIN_KEYS, "metric", "value", "unit", "method", "status", "error", "gflops_paper", "source"]]


def _records_frame(run_dir: Path) -> pd.DataFrame:
    recs = read_records(run_dir)
    if not recs:
        raise UsageError(f"{run_dir}: the run holds no records to report")
    df = pd.DataFrame(recs)
    defaults: dict[str, Any] = {
        "run_id": run_dir.name, "pipeline": "", "frames": 0, "batch": 1, "device": "", "dtype": "",
        "size": "", "schedule": "", "pruner": "", "recoverer": "", "runtime": "eager", "method": "", "error": "",
        "phase": "inference", "block": None, "tokens": None, "unsupported": None, "part": "", "step": "",
    }  # fmt: skip
    for col, default in defaults.items():
        if col not in df:
            df[col] = default
        elif isinstance(default, str):
            df[col] = df[col].fillna(default)
    df["frames"] = df["frames"].fillna(0).astype(int)
    df["batch"] = df["batch"].fillna(1).astype(int)
    # --resume may have re-measured part of a case: the last record of a measurement wins, and a
    # failure that a later record of the same metric made good no longer counts.
    df["_block"] = df["block"].fillna(-1)
    key = [k if k != "block" else "_block" for k in MEASUREMENT_KEY]
    df = df.drop_duplicates(key, keep="last").drop(columns="_block")
    df["_n"] = range(len(df))
    last_ok = df[df["status"] == "ok"].groupby(["case_id", "metric"])["_n"].max()
    later_ok = [last_ok.get((c, m), -1) > n for c, m, n in zip(df["case_id"], df["metric"], df["_n"], strict=True)]
    df = df[~((df["status"] != "ok") & pd.Series(later_ok, index=df.index))]
    return df.drop(columns="_n").reset_index(drop=True)


# --------------------------------------------------------------------------- the summary


def summarize(recs: pd.DataFrame, accuracy: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per case: every metric as a column (SPEC units), the changes vs the rectangle, accuracy.

    Column names: ``params``, ``gflops_{paper,fvcore,torch}``, ``latency_ms`` (+ ``_p10``/``_p90``),
    ``fps``, ``clips_per_s``, ``train_step_ms``, ``{peak_metric}_{phase}_mib``, ``flops_change_pct``
    (paper counter) and ``flops_change_fvcore_pct``, ``speedup`` (FPS / rectangle FPS),
    ``{metric}_{method}`` for accuracy (mean over its records) and ``{metric}_{method}_change`` (mm vs
    the rectangle), ``status`` (worst of the case) and ``failures`` (``metric: status: error; ...``).
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
    def put_timed(col: str, metric: str) -> None:
        """The median and, where the record has them, its 95 % CI, n and stability flag."""
        put(col, ok["metric"] == metric)
        base = col.removesuffix("_ms")
        unit = "_ms" if col.endswith("_ms") else ""
        rows = ok[ok["metric"] == metric].groupby("case_id").last()
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
    cases = cases.sort_values(
        ["backbone", "size", "frames", "batch", "device", "dtype", "runtime", "_v", "schedule"], kind="stable"
    )
    return cases.drop(columns="_v").reset_index(drop=True)


PART_NAMES = ("embed", "spatial_attention", "temporal_attention", "mlp", "graph", "norm", "prune", "recover", "head",
              "other")  # bench.measure.breakdown.PARTS, without importing torch.profiler here  # fmt: skip


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


def speedup_sentence(rows: pd.DataFrame) -> str:
    """Where the realised speed-up of a backbone's most pruned case goes, from its time by part."""
    ms = [f"part_{p}_ms" for p in PART_NAMES]
    if not set(ms) <= set(rows.columns) or rows[ms].isna().all(axis=None):
        return ""
    rect = rows[(rows["variant"] == "rectangle") & rows[ms].notna().any(axis=1)]
    pruned = rows[(rows["variant"] != "rectangle") & rows[ms].notna().any(axis=1)]
    if rect.empty or pruned.empty:
        return ""
    fewest = pruned["gflops_torch"].idxmin() if "gflops_torch" in pruned and pruned["gflops_torch"].notna().any() else None
    r, p = rect.iloc[0], pruned.loc[fewest] if fewest is not None else pruned.iloc[-1]  # the most pruned
    t_r, t_p = r[ms].fillna(0).sum(), p[ms].fillna(0).sum()
    work = [f"part_{x}_ms" for x in ("spatial_attention", "temporal_attention", "mlp", "graph")]
    w_r, w_p = r[work].fillna(0).sum(), p[work].fillna(0).sum()
    extra = float(p["part_prune_ms"] if pd.notna(p["part_prune_ms"]) else 0) + float(
        p["part_recover_ms"] if pd.notna(p["part_recover_ms"]) else 0)
    rest_r, rest_p = t_r - w_r, t_p - w_p - extra
    flops = ""
    if pd.notna(r.get("gflops_torch")) and pd.notna(p.get("gflops_torch")) and p["gflops_torch"]:
        flops = f"{r['gflops_torch'] / p['gflops_torch']:.2f}x fewer FLOPs (torch) and "
    return (
        f"Where the speed-up goes ({p['variant']} vs rectangle, profiled): {flops}"
        f"a {t_r / t_p:.2f}x speed-up ({t_r:.1f} -> {t_p:.1f} ms); attention, MLP and graph go "
        f"{w_r:.1f} -> {w_p:.1f} ms, pruning + recovering add {extra:.1f} ms ({100 * extra / t_p:.1f} %), "
        f"norms, embedding, head and the rest go {rest_r:.1f} -> {rest_p:.1f} ms."
    )


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
    acc_cols = _accuracy_cols(cases.columns)
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


def _accuracy_cols(cols: Iterable[str]) -> list[str]:
    """Accuracy value columns among ``cols``: ``{metric}_{method}``, e.g. ``mpjpe_synthetic``."""
    return [c for c in cols if _accuracy_method(c)]


def _accuracy_method(col: str) -> str:
    for m in sorted(ACCURACY_METRICS, key=len, reverse=True):  # p_mpjpe before mpjpe
        if col.startswith(m + "_"):
            rest = col[len(m) + 1 :]
            return rest if rest and "_" not in rest else ""
    return ""


def _methods_in(cols: Iterable[str]) -> list[str]:
    """Accuracy methods that have a column among ``cols``, real data first."""
    found = {_accuracy_method(c) for c in _accuracy_cols(cols)}
    return sorted(found, key=lambda m: (ACCURACY_METHODS.index(m) if m in ACCURACY_METHODS else 99, m))


def _failure_marks(recs: pd.DataFrame, accuracy: pd.DataFrame | None) -> dict[tuple[str, str], tuple[str, str]]:
    """(case_id, group) -> (status, error) of the first failed record of that group."""
    marks: dict[tuple[str, str], tuple[str, str]] = {}
    for r in recs[recs["status"] != "ok"].itertuples():
        marks.setdefault((r.case_id, METRIC_GROUP.get(r.metric, "other")), (r.status, r.error or ""))
    if accuracy is not None and not accuracy.empty:
        failed = accuracy[accuracy["status"] != "ok"]
        if not failed.empty:
            cases = recs.drop_duplicates("case_id")
            for a in failed.itertuples():
                hit = cases[
                    (cases["backbone"] == a.backbone)
                    & (cases["variant"] == a.variant)
                    & (cases["frames"] == a.frames)
                    & ((cases["size"] == a.size) | (a.size == ""))
                ]
                for cid in hit["case_id"]:
                    marks.setdefault((cid, f"accuracy:{a.method}"), (a.status, a.error or ""))
    return marks


# --------------------------------------------------------------------------- tables


@dataclass
class Cell:
    """One table cell: the text, and the footnote that explains a failed or missing value."""

    text: str = ""
    note: int | None = None


@dataclass
class Column:
    key: str  # summary column (or "" for a label column)
    md: str  # header in Markdown/HTML
    tex: str  # header in LaTeX
    group: str = ""  # the metric group whose failure marks this column's blank cells
    fmt: str = "num"
    unit: str = ""  # the unit of the summary column; "{unit}" in the headers becomes the scaled one
    ci: str = ""  # summary column prefix of a 95 % CI (``{ci}_ci_low``...) and stability flag
    factor: float = 1.0  # summary unit -> shown unit, set per table


@dataclass
class Table:
    """One backbone's table, renderable as Markdown, LaTeX and HTML."""

    backbone: str
    caption: str
    columns: list[Column]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)  # footnote i+1 is notes[i]
    remarks: list[str] = field(default_factory=list)  # unnumbered lines under the table


def _fmt(x: float, kind: str) -> str:
    if kind == "count":
        return numbers.count(x)
    if kind in ("pct", "delta"):
        return f"{x:+.1f}"
    if kind == "ratio":
        return f"{x:.2f}"
    if kind == "share":
        return f"{x:.1f}"
    if kind == "mm":
        return f"{x:.1f}"
    if kind == "int":
        return f"{x:.0f}"
    return numbers.sig(x)


def _table_columns(rows: pd.DataFrame, methods: list[str]) -> list[Column]:
    cols = [
        Column("variant", "Variant", "Variant", fmt="text"),
        Column("schedule_text", "Schedule", "Schedule", fmt="text"),
        Column("frames", "T", "$T$", fmt="int"),
    ]
    if rows["batch"].nunique() > 1:
        cols.append(Column("batch", "Batch", "Batch", fmt="int"))
    if rows["device"].nunique() > 1 or rows["dtype"].nunique() > 1:
        cols.append(Column("device_text", "Device", "Device", fmt="text"))
    if set(rows["runtime"]) != {"eager"}:
        cols.append(Column("runtime", "Runtime", "Runtime", fmt="text"))
    cols += [
        Column("params", "Params", "Params", "params", "count"),
        Column("gflops_paper", "{unit} (paper)", "{unit} (paper)", "flops", unit="GFLOPs"),
        Column("gflops_fvcore", "{unit} (fvcore)", "{unit} (fvcore)", "flops", unit="GFLOPs"),
    ]
    paper = rows["gflops_paper"].notna().any() or not rows["gflops_fvcore"].notna().any()
    counter = "paper" if paper else "fvcore"
    key = "flops_change_pct" if paper else "flops_change_fvcore_pct"
    cols.append(Column(key, f"ΔFLOPs % ({counter})", rf"$\Delta$FLOPs \% ({counter})", "flops", "pct"))
    cuda = rows["device"].astype(str).str.startswith("cuda")
    if cuda.any():
        cols.append(
            Column(
                "peak_mem_alloc_inference_mib",
                "Peak mem. inference ({unit}, CUDA alloc)",
                "Peak mem.\\ inf.\\ ({unit}, CUDA alloc)",
                "memory",
                unit="MiB",
            )
        )
    if (~cuda).any():
        cols.append(
            Column(
                "peak_rss_inference_mib",
                "Peak mem. inference ({unit}, CPU RSS)",
                "Peak mem.\\ inf.\\ ({unit}, CPU RSS)",
                "memory",
                unit="MiB",
            )
        )
    cols += [
        Column("latency_ms", "Latency ({unit})", "Latency ({unit})", "latency", unit="ms", ci="latency"),
        Column("peak_mem_activations_inference_mib", "Act. mem. inference (MiB)", "Act.\\ mem.\\ inf.\\ (MiB)", "memory"),
        Column("peak_mem_activations_train_mib", "Act. mem. train (MiB)", "Act.\\ mem.\\ train (MiB)", "memory"),
        Column("prune_recover_pct", "Prune+recover (% time)", r"Prune+recover (\% time)", "breakdown", "share"),
        Column("of_peak_pct", "% of GEMM peak", r"\% of GEMM peak", "breakdown", "share"),
        Column("train_step_ms", "Train step ({unit})", "Train step ({unit})", "train", unit="ms", ci="train_step"),
        Column("fps", "FPS", "FPS", "latency"),
        Column("speedup", "Speed-up (×)", r"Speed-up ($\times$)", "latency", "ratio", ci="speedup"),
    ]
    for m in methods or [""]:
        suffix = f" {m}" if m else ""
        key = f"mpjpe_{m}" if m else "mpjpe"
        cols.append(Column(key, f"MPJPE{suffix} (mm)", f"MPJPE{suffix} (mm)", f"accuracy:{m}", "mm"))
        cols.append(
            Column(f"{key}_change", f"ΔMPJPE{suffix} (mm)", rf"$\Delta$MPJPE{suffix} (mm)", f"accuracy:{m}", "delta")
        )
    return cols


def build_tables(summary: pd.DataFrame, marks: dict[tuple[str, str], tuple[str, str]]) -> list[Table]:
    """One :class:`Table` per backbone, rows = cases (variants, per T), papers' column layout."""
    methods = _methods_in(summary.columns)
    tables = []
    for backbone, rows in summary.groupby("backbone", sort=True):
        rows = rows.copy()
        rows["schedule_text"] = [
            "—" if v == "rectangle" else " ".join(x for x in (s, "+".join(p for p in (pr, rc) if p)) if x)
            for v, s, pr, rc in zip(rows["variant"], rows["schedule"], rows["pruner"], rows["recoverer"], strict=True)
        ]
        rows["device_text"] = rows["device"].astype(str) + " " + rows["dtype"].astype(str)
        columns = [_scaled_column(c, rows) for c in _table_columns(rows, methods)]
        table = Table(str(backbone), "", columns, [])
        notes: dict[tuple[str, str], int] = {}
        for r in rows.itertuples(index=False):
            rd = r._asdict()
            cells = []
            for col in columns:
                cells.append(_cell(rd, col, marks, notes, table))
            table.rows.append(cells)
        # Columns nobody measured in this run are dropped (and named) rather than shown empty;
        # accuracy columns stay, so that a missing MPJPE is visibly blank.
        # An accuracy column of a source that has no value for any case of this table (accuracy at
        # another T or size) goes too; write_report says why above the tables.
        keep = [
            i
            for i, c in enumerate(columns)
            if c.fmt == "text" or c.group == "accuracy:" or any(row[i].text for row in table.rows)
        ]
        dropped = [c.md for i, c in enumerate(columns) if i not in keep and not c.group.startswith("accuracy")]
        table.columns = [columns[i] for i in keep]
        table.rows = [[row[i] for i in keep] for row in table.rows]
        if dropped:
            table.remarks.append(f"Not measured in this run: {', '.join(dropped)}.")
        table.remarks.append("Δ columns compare with the rectangle of the same T, batch, device and size (— = it).")
        if any("[" in row[i].text for row in table.rows for i in range(len(table.columns))):
            table.remarks.append("Timings: median [95 % CI of the median].")
        if ((rows["variant"] != "rectangle") & (rows.get("speedup_method") == "ratio of medians")).any():
            table.remarks.append(
                "† Speed-up = ratio of the FPS medians, each measured on its own (this run has no paired "
                "speed-up records; --metrics speedup measures them alternated in one process)."
            )
        sentence = speedup_sentence(rows)
        if sentence:
            table.remarks.append(sentence)
        if not methods:
            table.remarks.append("No accuracy source: pass --accuracy reported, or a run of `vptbench accuracy`.")
        sources = sorted({s for s in rows.get("reported_source", pd.Series(dtype=str)).dropna() if s})
        if sources:
            table.remarks.append(f"MPJPE reported: {'; '.join(sources)}.")
        first = rows.iloc[0]
        table.caption = (
            f"{backbone} (size {first['size']}, {first['pipeline']}): efficiency of the variants, batch "
            f"{'/'.join(str(b) for b in sorted(rows['batch'].unique()))} on "
            f"{', '.join(sorted(set(rows['device'].astype(str) + ' ' + rows['dtype'].astype(str))))}."
        )
        tables.append(table)
    return tables


def _scaled_column(col: Column, rows: pd.DataFrame) -> Column:
    """``col`` with one unit for all its rows (MFLOPs for tiny models, s for slow ones) in its headers."""
    if not col.unit:
        return col
    values = rows[col.key] if col.key in rows else pd.Series(dtype=float)
    unit, factor = numbers.column_unit(values.tolist(), col.unit)
    return replace(col, md=col.md.replace("{unit}", unit), tex=col.tex.replace("{unit}", unit), factor=factor)


def _cell(rd: dict[str, Any], col: Column, marks: dict, notes: dict, table: Table) -> Cell:
    value = rd.get(col.key)
    if col.fmt == "text":
        return Cell(str(value))
    if value is not None and not (isinstance(value, float) and math.isnan(value)):
        if rd["variant"] == "rectangle" and (col.fmt in ("pct", "delta") or col.key == "speedup"):
            return Cell("—")  # the reference itself: its change is not a measurement
        if col.ci:
            return _timed_cell(rd, col, float(value), notes, table)
        return Cell(_fmt(float(value) * col.factor, col.fmt))
    mark = marks.get((rd["case_id"], col.group))
    if mark is None:
        return Cell("")
    status, error = mark
    key = (rd["case_id"], col.group)
    if key not in notes:
        notes[key] = len(table.notes) + 1
        what = col.group.split(":")[0]  # "accuracy:synthetic" -> "accuracy"
        table.notes.append(
            f"{rd['variant']} T={rd['frames']} ({what}): {STATUS_LABEL.get(status, status)}"
            f"{' — ' + error if error else ''}"
        )
    return Cell(STATUS_LABEL.get(status, status), notes[key])


def _timed_cell(rd: dict[str, Any], col: Column, value: float, notes: dict, table: Table) -> Cell:
    """``median [low, high]`` from the timing record's CI; an unstable figure gets a footnote."""
    f = col.factor
    unit = "_ms" if col.key.endswith("_ms") else ""
    low, high = rd.get(f"{col.ci}_ci_low{unit}"), rd.get(f"{col.ci}_ci_high{unit}")
    text = (
        numbers.with_ci(value * f, low * f, high * f)
        if numbers.finite(low) and numbers.finite(high)
        else _fmt(value * f, col.fmt)
    )
    if col.ci == "speedup" and rd.get("speedup_method") == "ratio of medians":
        text += " †"  # explained under the table: not a paired measurement
    if rd.get(f"{col.ci}_stable") is False:
        key = (rd["case_id"], f"unstable:{col.ci}")
        if key not in notes:
            notes[key] = len(table.notes) + 1
            mad, why = rd.get(f"{col.ci}_mad_pct"), rd.get(f"{col.ci}_unstable_reason")
            spread = f" ({why})" if isinstance(why, str) and why else f" (MAD {mad:.1f} % of the median)" if numbers.finite(mad) else ""
            table.notes.append(f"{rd['variant']} T={rd['frames']}: unstable {col.ci.replace('_', ' ')} timing{spread}")
        return Cell(text, notes[key])
    return Cell(text)


def table_markdown(t: Table) -> str:
    """The table as GitHub Markdown, its footnotes and remarks below it."""
    body = [[_md_cell(c) for c in row] for row in t.rows]
    out = [
        f"### {t.backbone}",
        "",
        t.caption,
        "",
        tabulate(body, headers=[c.md for c in t.columns], tablefmt="github", disable_numparse=True),
    ]
    if t.notes:
        out += [""] + [f"[{i}] {_md_escape(n)}  " for i, n in enumerate(t.notes, start=1)]
    out += [""] + [f"{r}  " for r in t.remarks]
    return "\n".join(out) + "\n"


def _md_cell(c: Cell) -> str:
    return f"{c.text} [{c.note}]" if c.note else c.text


def _md_escape(text: str) -> str:
    return text.replace("|", r"\|").replace("\n", " ")


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "—": "---", "Δ": r"$\Delta$", "×": r"$\times$"}  # fmt: skip


def tex_escape(text: str) -> str:
    """Text made safe for LaTeX (special characters escaped, the few Unicode symbols we use mapped)."""
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def table_latex(t: Table) -> str:
    """The table as a booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    align = "".join("l" if c.fmt == "text" else "r" for c in t.columns)
    lines = [
        r"% generated by vptbench report; needs \usepackage{booktabs,graphicx}",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{tex_escape(t.caption)}}}",
        rf"\label{{tab:vptbench-{tex_escape(t.backbone)}}}",
        r"\resizebox{\linewidth}{!}{%",  # a dozen columns: scale to the text width rather than overflow
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(c.tex for c in t.columns) + r" \\",
        r"\midrule",
    ]
    for row in t.rows:
        cells = [tex_escape(c.text) + (rf"\textsuperscript{{{c.note}}}" if c.note else "") for c in row]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}"]
    for i, n in enumerate(t.notes, start=1):
        lines.append(rf"\par\footnotesize\textsuperscript{{{i}}} {tex_escape(n)}")
    lines += [r"\end{table}", ""]
    return "\n".join(lines)


def table_html(t: Table) -> str:
    """The table as an HTML fragment, footnotes and remarks below it."""
    body = [[html.escape(c.text) + (f"<sup>{c.note}</sup>" if c.note else "") for c in row] for row in t.rows]
    out = [
        f"<h3 id='table-{html.escape(t.backbone)}'>{html.escape(t.backbone)}</h3>",
        f"<p class='caption'>{html.escape(t.caption)}</p>",
        tabulate(body, headers=[html.escape(c.md) for c in t.columns], tablefmt="unsafehtml", disable_numparse=True),
    ]
    if t.notes:
        out.append("<ol class='notes'>" + "".join(f"<li>{html.escape(n)}</li>" for n in t.notes) + "</ol>")
    out += [f"<p class='remark'>{html.escape(r)}</p>" for r in t.remarks]
    return "\n".join(out)


# --------------------------------------------------------------------------- the report


def write_report(run_dir: str | Path, accuracy: Sequence[str] | None = None, out: str | Path | None = None) -> Path:
    """Write the report of ``run_dir`` and return its directory.

    ``accuracy`` lists accuracy sources (run dirs, records.jsonl, reported-values .csv, or
    ``reported``). None means the run's own accuracy records plus the shipped reported table when it
    is installed; an empty list means only the run's own. ``out`` defaults to ``reports/<run_id>``.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UsageError(f"{run_dir}: no such run directory")
    recs = _records_frame(run_dir)
    meta = read_meta(run_dir if run_dir.is_dir() else run_dir.parent)
    run_id = str(recs["run_id"].dropna().iloc[0]) if recs["run_id"].notna().any() else run_dir.name

    acc_parts = []
    own = recs[recs["metric"].isin(ACCURACY_METRICS)]
    if not own.empty:
        acc_parts.append(_accuracy_frame(own))
    sources = list(accuracy) if accuracy is not None else (["reported"] if reported_table_path().is_file() else [])
    acc_parts += [load_accuracy(s) for s in sources]
    acc = pd.concat(acc_parts, ignore_index=True) if acc_parts else None

    summary = summarize(recs[~recs["metric"].isin(ACCURACY_METRICS)], acc)
    marks = _failure_marks(recs, acc)
    tables = build_tables(summary, marks)

    out_dir = Path(out) if out is not None else Path("reports") / run_id
    try:
        (out_dir / "tables").mkdir(parents=True, exist_ok=True)
        (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot write the report to {out_dir}: {e.strerror or e}") from None

    from . import plots  # matplotlib is slow to import; only the report needs it

    blocks = recs[(recs["metric"] == "flops_block") & (recs["status"] == "ok") & recs["value"].notna()]
    reported = acc[acc["method"] == "reported"] if acc is not None else None
    parts = recs[(recs["metric"] == "time_by_part") & (recs["status"] == "ok") & recs["value"].notna()]
    breakdown = recs[recs["metric"].isin(("achieved_gflops", "machine_peak_gflops", "mem_by_part"))
                     & (recs["status"] == "ok") & recs["value"].notna()]  # fmt: skip
    # Plots show one runtime (eager where the run has it): their points are cases, and a case's FPS
    # on another runtime would be a second point of the same model; the runtimes section compares them.
    shown = "eager" if (summary["runtime"] == "eager").any() else summary["runtime"].iloc[0]
    images = plots.render_all(summary[summary["runtime"] == shown], blocks, reported, out_dir / "plots", parts=parts,
                              breakdown=breakdown)  # fmt: skip

    _for_csv(summary).to_csv(out_dir / "summary.csv", index=False)
    for t in tables:
        (out_dir / "tables" / f"{_safe(t.backbone)}.tex").write_text(table_latex(t), encoding="utf-8")
    absent = plots.missing(images)
    notices = accuracy_elsewhere(recs[~recs["metric"].isin(ACCURACY_METRICS)], acc)
    unstable = unstable_timings(summary)
    if unstable:
        notices.insert(0, "Unstable timings (the record's stability rule failed; rerun on a quieter machine): "
                       + "; ".join(unstable) + ".")  # fmt: skip
    md = _markdown(run_id, meta, tables, images, absent, out_dir, notices)
    page = _html(run_id, meta, tables, images, absent, out_dir, notices)
    deploy = report_runtimes.section(recs)  # runs with --runtime: latency, speed-ups and status per runtime
    if deploy is not None:
        md += "\n" + deploy.markdown()
        page = page.replace("</body></html>", deploy.html() + "\n</body></html>", 1)
    (out_dir / "index.md").write_text(md, encoding="utf-8")
    (out_dir / "index.html").write_text(page, encoding="utf-8")
    return out_dir


TIMED = {"latency": "latency", "train_step": "train step", "speedup": "speed-up"}


def unstable_timings(summary: pd.DataFrame) -> list[str]:
    """'case_id: latency, speed-up' for every case with a timing whose record says it is not stable."""
    out = []
    for r in summary.to_dict("records"):
        bad = [label for key, label in TIMED.items() if r.get(f"{key}_stable") is False]
        if bad:
            out.append(f"{r['case_id']}: {', '.join(bad)}")
    return out


def accuracy_elsewhere(recs: pd.DataFrame, accuracy: pd.DataFrame | None) -> list[str]:
    """Backbones with accuracy values, none of them at a (T, size) this run measured: say where they are."""
    if accuracy is None or accuracy.empty:
        return []
    acc = accuracy[(accuracy["status"] == "ok") & accuracy["value"].notna()]
    out = []
    for backbone, mine in recs.drop_duplicates("case_id").groupby("backbone"):
        theirs = acc[acc["backbone"] == backbone]
        if theirs.empty:
            continue
        here = {(int(t), str(z)) for t, z in zip(mine["frames"], mine["size"], strict=True)}
        there = {(int(t), str(z)) for t, z in zip(theirs["frames"], theirs["size"].fillna(""), strict=True)}
        if any(t == ht and (z in ("", hz)) for t, z in there for ht, hz in here):
            continue
        where = ", ".join(f"T={t}" + (f" size {z}" if z else "") for t, z in sorted(there))
        run = ", ".join(f"T={t} size {z}" for t, z in sorted(here))
        out.append(f"{backbone} at {where} (this run: {run})")
    if not out:
        return []
    return [
        "Accuracy exists only at another T or size than this run measured, so its columns are left out "
        f"(accuracy joins by backbone, variant, T and size): {'; '.join(out)}."
    ]


def _for_csv(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with counts as integers (``31516125``, not ``31516125.0``); blanks stay blank."""
    out = summary.copy()
    for col in ["params", *[c for c in out.columns if c.endswith("_n")]]:
        if col in out:
            out[col] = pd.to_numeric(out[col], errors="coerce").round().astype("Int64")
    return out


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)




def _markdown(
    run_id: str,
    meta: dict[str, Any],
    tables: list[Table],
    images: dict[str, list[Path]],
    missing: dict[str, str],
    out: Path,
    notices: Sequence[str] = (),
) -> str:
    from . import plots

    lines = [f"# vptbench report: {run_id}", ""]
    env = _env_line(meta)
    if env:
        lines += [env, ""]
    for n in notices:
        lines += [f"> **Note.** {n}", ""]
    lines += [
        "Full numbers: [summary.csv](summary.csv); LaTeX tables in [tables/](tables/); the page with "
        "everything: [index.html](index.html).",
        "",
        f"> {FLOPS_NOTE}",
        "",
        "## Tables",
        "",
    ]
    for t in tables:
        lines += [table_markdown(t), f"LaTeX: [tables/{_safe(t.backbone)}.tex](tables/{_safe(t.backbone)}.tex)", ""]
    lines += ["## Plots", ""]
    for name, why in missing.items():
        lines += [f"*{plots.title(name)}: not drawn; {why}.*", ""]
    for name, files in images.items():
        png = next(p for p in files if p.suffix == ".png")
        svg = next((p for p in files if p.suffix == ".svg"), None)
        lines += [f"### {plots.title(name)}", "", f"![{name}]({png.relative_to(out).as_posix()})", ""]
        if svg is not None:
            lines += [f"[SVG]({svg.relative_to(out).as_posix()})", ""]
    return "\n".join(lines)


def _env_line(meta: dict[str, Any]) -> str:
    bits = [
        meta.get("device_name") or meta.get("cpu_model"),
        meta.get("torch") and f"torch {meta['torch']}",
        meta.get("threads") and f"{meta['threads']} threads",
        meta.get("git_commit")
        and f"commit {str(meta['git_commit'])[:10]}{' (dirty)' if meta.get('git_dirty') else ''}",
    ]
    return "Measured on " + ", ".join(str(b) for b in bits if b) + "." if any(bits) else ""


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border-bottom:1px solid #ccc;padding:.25em .6em;text-align:right}
th:nth-child(-n+2),td:nth-child(-n+2){text-align:left}
thead th{border-bottom:2px solid #444}
.caption,.remark,.notes{font-size:.85em;color:#444}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}
.note{background:#f6f6f6;padding:.6em 1em;border-left:4px solid #999;font-size:.9em}
table.env td{text-align:left}
.warn{background:#fff4e0;padding:.6em 1em;border-left:4px solid #e69500;font-size:.9em}
"""


def _html(
    run_id: str,
    meta: dict[str, Any],
    tables: list[Table],
    images: dict[str, list[Path]],
    missing: dict[str, str],
    out: Path,
    notices: Sequence[str] = (),
) -> str:
    from . import plots

    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>vptbench report: {html.escape(run_id)}</title><style>{_CSS}</style></head><body>",
        f"<h1>vptbench report: {html.escape(run_id)}</h1>",
        f"<p>{html.escape(_env_line(meta))} Full numbers in <a href='summary.csv'>summary.csv</a>.</p>",
        *[f"<p class='warn'><b>Note.</b> {html.escape(n)}</p>" for n in notices],
        f"<p class='note'><b>FLOPs counters.</b> {html.escape(FLOPS_NOTE)}</p>",
        "<h2>Tables</h2>",
    ]
    parts += [table_html(t) for t in tables]
    parts.append("<h2>Plots</h2>")
    for name, why in missing.items():
        parts.append(
            f"<p class='remark'><i>{html.escape(plots.title(name))}: not drawn; {html.escape(why)}.</i></p>"
        )
    for name, files in images.items():
        png = next(p for p in files if p.suffix == ".png")
        svg = next((p for p in files if p.suffix == ".svg"), None)
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        link = f" (<a href='{svg.relative_to(out).as_posix()}'>SVG</a>)" if svg is not None else ""
        parts.append(
            f"<figure id='plot-{name}'><img alt='{name}' data-plot='{png.relative_to(out).as_posix()}' "
            f"src='data:image/png;base64,{data}'><figcaption>{html.escape(plots.title(name))}"
            f"{link}</figcaption></figure>"
        )
    parts.append("<h2>Environment (meta.json)</h2>")
    if meta:
        rows = [
            [html.escape(str(k)), html.escape(json.dumps(v) if isinstance(v, dict | list) else str(v))]
            for k, v in meta.items()
        ]
        parts.append(
            tabulate(rows, headers=["key", "value"], tablefmt="unsafehtml").replace("<table>", "<table class='env'>", 1)
        )
    else:
        parts.append("<p>The run has no meta.json.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


__all__ = [
    "ACCURACY_METRICS", "FLOPS_NOTE", "Table", "build_tables", "load_accuracy",
    "read_reported", "reported_table_path", "summarize", "table_html", "table_latex", "table_markdown",
    "write_report",
]  # fmt: skip
