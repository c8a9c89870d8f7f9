"""The report's tables: one per backbone, rows = variants, in the shape of the papers' efficiency tables.

:func:`build_tables` turns the summary into :class:`Table` objects (columns nobody measured are
dropped and named, units scaled per column, timings as ``median [95 % CI]``); a case that failed
(oom, error, skipped) keeps its row, and its missing cells say why, with a footnote. The same table
renders as Markdown (``index.md``), LaTeX (``tables/<backbone>.tex``) and HTML (``index.html``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
from tabulate import tabulate

from ..core import numbers
from .sources import ACCURACY_METRICS
from .summary import MEMORY_METRICS, PART_NAMES, accuracy_cols, accuracy_method

ACCURACY_METHODS = ("h36m", "reported", "synthetic")  # display order: real data first

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
    "pose_error": "pose_error",
    "precision_speedup": "precision",
    **{m: "memory" for m in MEMORY_METRICS},
    **{m: "accuracy" for m in ACCURACY_METRICS},
}
STATUS_LABEL = {"oom": "OOM", "error": "error", "skipped": "skipped"}


# --------------------------------------------------------------------------- failure marks


def failure_marks(recs: pd.DataFrame, accuracy: pd.DataFrame | None) -> dict[tuple[str, str], tuple[str, str]]:
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
    if set(rows.get("precision", pd.Series(["fp32"]))) != {"fp32"}:
        cols.append(Column("precision", "Precision", "Precision", fmt="text"))
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
        Column("precision_speedup", "Speed-up over fp32 (×)", r"Speed-up over fp32 ($\times$)", "precision", "ratio",
               ci="precision_speedup"),
        Column("pose_error_mm", "Pose error (mm)", "Pose error (mm)", "pose_error"),
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
        texts = [row[i].text for row in table.rows for i in range(len(table.columns))]
        if any("[" in t for t in texts):
            table.remarks.append("Timings: median [95 % CI of the median].")
        if any("(1 sample)" in t for t in texts):
            table.remarks.append("(1 sample): a timing of one sample, which has no interval; --min-time buys more.")
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


def _methods_in(cols: Iterable[str]) -> list[str]:
    """Accuracy methods that have a column among ``cols``, real data first."""
    found = {accuracy_method(c) for c in accuracy_cols(cols)}
    return sorted(found, key=lambda m: (ACCURACY_METHODS.index(m) if m in ACCURACY_METHODS else 99, m))


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
    low, high, n = rd.get(f"{col.ci}_ci_low{unit}"), rd.get(f"{col.ci}_ci_high{unit}"), rd.get(f"{col.ci}_n")
    if numbers.one_sample(n):
        text = f"{_fmt(value * f, col.fmt)} (1 sample)"  # no interval: one sample says nothing of its spread
    elif numbers.finite(low) and numbers.finite(high):
        text = numbers.with_ci(value * f, low * f, high * f)
    else:
        text = _fmt(value * f, col.fmt)
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


# --------------------------------------------------------------------------- renderings


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


__all__ = ["Table", "build_tables", "table_html", "table_latex", "table_markdown"]
