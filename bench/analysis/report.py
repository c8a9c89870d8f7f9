"""Reports: efficiency tables and plots of a run, joined with accuracy (``vptbench report``).

A report is built from records alone (no model runs): ``results/<run_id>/records.jsonl`` and
``meta.json`` of a run, plus accuracy from run directories / ``records.jsonl`` files (methods
synthetic, h36m) or the papers' reported-values table (method ``reported``). It is written to
``reports/<id>/`` for a run in ``results/<id>/``, else to ``<run dir>/report/``
(:func:`default_report_dir`):

- ``summary.csv``: one row per case, every number as measured (full precision, SPEC units);
- ``index.md`` and ``tables/<backbone>.tex``: one table per backbone, rows = variants, in the
  shape of the papers' efficiency tables;
- ``plots/*.png`` and ``plots/*.svg`` (see :mod:`bench.analysis.plots`);
- ``index.html``: one self-contained page (plots embedded as data URIs, tables, environment).

This module writes that directory: the files, the two pages, the environment line and the notes
above the tables. What goes into them comes from :mod:`bench.analysis.sources` (the records and the
accuracy read), :mod:`bench.analysis.summary` (one row per case, accuracy joined by backbone,
variant, frames and size), :mod:`bench.analysis.tables` (the tables and their three renderings)
and :mod:`bench.analysis.plots` (the figures).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from ..core.errors import UsageError
from ..core.results import read_meta
from . import precision_section as report_precision
from . import runtimes_section as report_runtimes
from . import stream_section
from .sources import ACCURACY_METRICS, accuracy_frame, load_accuracy, records_frame, reported_table_path
from .summary import summarize
from .tables import Table, build_tables, failure_marks, table_html, table_latex, table_markdown

FLOPS_NOTE = (
    "GFLOPs are 2 x multiply-adds, by three counters. "
    "paper: the published protocol (thop MACs x 2 over module hooks: Linear/Conv layers), comparable "
    "with the papers' tables; it leaves out the attention matmuls (QK^T, AV), softmax and norms, so "
    "it undercounts attention, most at long sequences. "
    "fvcore: fvcore FlopCountAnalysis of the traced graph, with handles for what it misses "
    "(scaled_dot_product_attention); counts attention matmuls, not element-wise ops (listed as unsupported). "
    "torch: torch.utils.flop_counter.FlopCounterMode at dispatch level, attention included."
)


def default_report_dir(run_dir: str | Path) -> Path:
    """Where a run's report goes unless told (SPEC section 10, the same rule for run, sweep and report).

    A run under ``results/<id>/`` reports to ``reports/<id>/`` beside ``results/`` (the project's
    layout); any other run directory D to ``D/report/``. ``run_dir`` may be the run's records.jsonl.
    """
    run = Path(run_dir)
    if run.name == "records.jsonl":
        run = run.parent
    for path in (run, run.absolute()):
        if path.parent.name == "results" and path.name:
            return path.parent.parent / "reports" / path.name
    return run / "report"


def write_report(run_dir: str | Path, accuracy: Sequence[str] | None = None, out: str | Path | None = None) -> Path:
    """Write the report of ``run_dir`` and return its directory.

    ``accuracy`` lists accuracy sources (run dirs, records.jsonl, reported-values .csv, or
    ``reported``). None means the run's own accuracy records plus the shipped reported table when it
    is installed; an empty list means only the run's own. ``out`` defaults to :func:`default_report_dir`.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UsageError(f"{run_dir}: no such run directory")
    recs = records_frame(run_dir)
    meta = read_meta(run_dir if run_dir.is_dir() else run_dir.parent)
    run_id = str(recs["run_id"].dropna().iloc[0]) if recs["run_id"].notna().any() else run_dir.name

    acc_parts = []
    own = recs[recs["metric"].isin(ACCURACY_METRICS)]
    if not own.empty:
        acc_parts.append(accuracy_frame(own))
    sources = list(accuracy) if accuracy is not None else (["reported"] if reported_table_path().is_file() else [])
    acc_parts += [load_accuracy(s) for s in sources]
    acc = pd.concat(acc_parts, ignore_index=True) if acc_parts else None

    summary = summarize(recs[~recs["metric"].isin(ACCURACY_METRICS)], acc)
    marks = failure_marks(recs, acc)
    tables = build_tables(summary, marks)

    out_dir = Path(out) if out is not None else default_report_dir(run_dir)
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
    # ... and one precision (fp32 where the run has it), for the same reason; the precision figure
    # draws every case (all_cases), and the precision section tabulates them.
    here = summary[summary["runtime"] == shown]
    precision = "fp32" if (here["precision"] == "fp32").any() else here["precision"].iloc[0]
    live = recs[recs["metric"].isin(stream_section.STREAM_METRICS) & (recs["status"] == "ok") & recs["value"].notna()]
    images = plots.render_all(here[here["precision"] == precision], blocks, reported, out_dir / "plots", parts=parts,
                              breakdown=breakdown, stream=live[live["runtime"] == shown],
                              all_cases=summary)  # fmt: skip

    _for_csv(summary).to_csv(out_dir / "summary.csv", index=False)
    for t in tables:
        (out_dir / "tables" / f"{_safe(t.backbone)}.tex").write_text(table_latex(t), encoding="utf-8")
    absent = plots.missing(images)
    notices = accuracy_elsewhere(recs[~recs["metric"].isin(ACCURACY_METRICS)], acc)
    notices[:0] = unstable_notices(recs)
    md = _markdown(run_id, meta, tables, images, absent, out_dir, notices)
    page = _html(run_id, meta, tables, images, absent, out_dir, notices)
    deploy = report_runtimes.section(recs)  # runs with --runtime: latency, speed-ups and status per runtime
    stream = stream_section.section(recs.to_dict("records"))  # runs with --metrics stream: live video
    reduced = report_precision.section(summary)  # runs with --precision: speed-up over fp32 and pose error
    for extra in (deploy, stream, reduced):
        if extra is not None:
            md += "\n" + extra.markdown()
            page = page.replace("</body></html>", extra.html() + "\n</body></html>", 1)
    (out_dir / "index.md").write_text(md, encoding="utf-8")
    (out_dir / "index.html").write_text(page, encoding="utf-8")
    return out_dir


TIMED = {"latency": "latency", "train_step": "train step", "speedup": "speed-up"}


def unstable_notices(recs: pd.DataFrame) -> list[str]:
    """The notices above the tables about unstable timings: cases counted per cause, with the advice for each.

    Causes as in the end-of-run line (:func:`bench.analysis.stability.unstable_causes`): load and a slow
    machine call for a quieter machine, too few samples for ``--min-time``; a single sample is no
    fault and gets a notice of its own. Which cases they are, the footnotes in the tables say.
    """
    from .stability import unstable_causes

    timed = recs[recs["metric"].isin(list(TIMED))]
    if "stable" not in timed:
        return []
    groups, _ = unstable_causes(timed.to_dict("records"))

    def counted(rs: list[Any]) -> str:
        cases = len({r["case_id"] for r in rs})
        metrics = ", ".join(label for key, label in TIMED.items() if any(r["metric"] == key for r in rs))
        return f"{cases} case{'s' if cases > 1 else ''} ({metrics})"

    faults = [f"{counted(rs)} {c.what}: {c.advice}" for c, rs in groups.items() if c.fault]
    singles = [f"{counted(rs)}: {c.advice}; one sample is no fault, it only has no interval"
               for c, rs in groups.items() if not c.fault]  # fmt: skip
    out = []
    if faults:
        out.append("Unstable timings, by reason (each marked in its table): " + "; ".join(faults) + ".")
    if singles:
        out.append("Timings of a single sample, shown without an interval: " + "; ".join(singles) + ".")
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
        parts.append(figure_html(name, files, out, plots.title(name)))
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
    return html_page(f"vptbench report: {run_id}", parts)


def html_page(title: str, body: Sequence[str]) -> str:
    """One self-contained page in the report's style around ``body``'s HTML fragments (the run's and the sweep's)."""
    head = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"]  # fmt: skip
    return "\n".join([*head, *body, "</body></html>"]) + "\n"


def figure_html(name: str, files: Sequence[Path], out: Path, caption: str) -> str:
    """A figure embedded as a PNG data URI (the page needs no other file), with a link to its SVG beside it."""
    png = next(p for p in files if p.suffix == ".png")
    svg = next((p for p in files if p.suffix == ".svg"), None)
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    link = f" (<a href='{svg.relative_to(out).as_posix()}'>SVG</a>)" if svg is not None else ""
    return (f"<figure id='plot-{name}'><img alt='{name}' data-plot='{png.relative_to(out).as_posix()}' "
            f"src='data:image/png;base64,{data}'><figcaption>{html.escape(caption)}{link}</figcaption></figure>")  # fmt: skip


__all__ = ["FLOPS_NOTE", "default_report_dir", "figure_html", "html_page", "write_report"]
