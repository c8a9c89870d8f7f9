"""The report's "Deployment runtimes" section: latency per runtime, pruning speed-ups per runtime, status.

Built from records alone, for runs with ``--runtime`` (a run of the eager runtime only has no
such section). Three tables:

- latency by runtime: one row per case without its runtime (backbone, variant, T...), one column
  per runtime: median ms with its 95 % CI where the record has one (``ci_low``/``ci_high``),
  else the p10-p90 spread, and each runtime's speed-up over eager;
- speed-up of each pruned variant over its rectangle within each runtime: the paired ``speedup``
  record where measured, else the ratio of the two median latencies;
- export/compile status: per non-eager case, the exporter or compile backend, ``export_error``
  or ``compile_s`` and graph breaks, the status and why a case failed.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
from tabulate import tabulate

from ..core import numbers

RUNTIME_ORDER = ("eager", "compile", "onnxruntime")
ROW_KEYS = ["backbone", "variant", "frames", "batch", "device", "dtype", "size", "schedule", "pruner", "recoverer",
            "precision"]  # fmt: skip
REF_KEYS = ["backbone", "frames", "batch", "device", "dtype", "size", "runtime", "precision"]


@dataclass
class Section:
    """The section's tables as (title, headers, rows, remark)."""

    tables: list[tuple[str, list[str], list[list[str]], str]]

    def markdown(self) -> str:
        out = ["## Deployment runtimes", ""]
        for title, headers, rows, remark in self.tables:
            out += [f"### {title}", "", tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True), ""]
            if remark:
                out += [remark, ""]
        return "\n".join(out)

    def html(self) -> str:
        out = ["<h2 id='runtimes'>Deployment runtimes</h2>"]
        for title, headers, rows, remark in self.tables:
            body = [[html.escape(c) for c in row] for row in rows]
            out += [f"<h3>{html.escape(title)}</h3>",
                    tabulate(body, headers=[html.escape(h) for h in headers], tablefmt="unsafehtml",
                             disable_numparse=True)]  # fmt: skip
            if remark:
                out.append(f"<p class='remark'>{html.escape(remark)}</p>")
        return "\n".join(out)


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _ms(x: float) -> str:
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def _label(r: pd.Series) -> str:
    how = "+".join(p for p in (r["pruner"], r["recoverer"]) if p)
    sched = f" {r['schedule']} {how}" if r["variant"] != "rectangle" else ""
    precision = f", {r['precision']}" if r.get("precision", "fp32") != "fp32" else ""
    return f"{r['backbone']} {r['variant']}{sched} (T={r['frames']}, {r['size']}{precision})"


def section(recs: pd.DataFrame) -> Section | None:
    """The section for a run's records (the report's frame: defaults filled, duplicates dropped)."""
    if "runtime" not in recs:
        return None
    recs = recs.copy()
    recs["runtime"] = recs["runtime"].fillna("eager").replace("", "eager")
    if "precision" not in recs:
        recs["precision"] = "fp32"
    present = [r for r in RUNTIME_ORDER if r in set(recs["runtime"])] + sorted(
        set(recs["runtime"]) - set(RUNTIME_ORDER)
    )
    if present == ["eager"]:
        return None
    ok = recs[(recs["status"] == "ok") & recs["value"].notna()]
    lat = ok[ok["metric"] == "latency"].drop_duplicates("case_id", keep="last").copy()
    for col in ("ci_low", "ci_high", "n"):
        if col not in lat:
            lat[col] = None
    spread = {m: ok[ok["metric"] == m].groupby("case_id")["value"].last() for m in ("latency_p10", "latency_p90")}
    lat["p10"] = lat["case_id"].map(spread["latency_p10"])
    lat["p90"] = lat["case_id"].map(spread["latency_p90"])
    cases = recs.drop_duplicates("case_id", keep="last")

    # ---- latency by runtime
    by_row: dict[tuple[Any, ...], dict[str, pd.Series]] = {}
    for _, r in lat.iterrows():
        by_row.setdefault(tuple(r[k] for k in ROW_KEYS), {})[r["runtime"]] = r
    rows = []
    for per in by_row.values():
        first = next(iter(per.values()))
        row = [_label(first)]
        eager = _num(per["eager"]["value"]) if "eager" in per else None
        for rt in present:
            r = per.get(rt)
            if r is None:
                row.append("")
                continue
            v = float(r["value"])
            lo, hi = _num(r["ci_low"]), _num(r["ci_high"])
            if numbers.one_sample(r["n"]):
                lo = hi = None
                text = f"{_ms(v)} (1 sample)"
            else:
                text = f"{_ms(v)} [{_ms(lo)}, {_ms(hi)}]" if lo is not None and hi is not None else _ms(v)
            if lo is None and _num(r["p10"]) is not None and _num(r["p90"]) is not None:
                text += f" (p10-p90 {_ms(float(r['p10']))}-{_ms(float(r['p90']))})"
            if rt != "eager" and eager:
                text += f"; {eager / v:.2f}x eager"
            row.append(text)
        rows.append(row)
    tables = [(
        "Latency by runtime (ms per forward, median)", ["case", *present], rows,
        "[a, b]: 95 % CI of the median; otherwise the p10-p90 spread of the samples. "
        "Nx eager: the eager median over this runtime's median (> 1: faster than eager).",
    )]  # fmt: skip

    # ---- speed-up of each pruned variant within each runtime
    paired = ok[(ok["metric"] == "speedup") & (ok["method"] == "paired")].drop_duplicates("case_id", keep="last")
    paired = paired.set_index("case_id")
    rect = lat[lat["variant"] == "rectangle"].drop_duplicates(REF_KEYS, keep="last")
    ref = {tuple(r[k] for k in REF_KEYS): float(r["value"]) for _, r in rect.iterrows()}
    sp_rows: dict[tuple[Any, ...], dict[str, str]] = {}
    labels: dict[tuple[Any, ...], str] = {}
    for _, r in lat[lat["variant"] != "rectangle"].iterrows():
        key = tuple(r[k] for k in ROW_KEYS)
        labels[key] = _label(r)
        if r["case_id"] in paired.index:
            p = paired.loc[r["case_id"]]
            lo, hi = _num(p.get("ci_low")), _num(p.get("ci_high"))
            ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
            if numbers.one_sample(p.get("n")):
                ci = " (1 sample)"
            sp_rows.setdefault(key, {})[r["runtime"]] = f"{float(p['value']):.2f}x{ci} paired"
            continue
        base = ref.get(tuple(r[k] for k in REF_KEYS))
        if base:
            sp_rows.setdefault(key, {})[r["runtime"]] = f"{base / float(r['value']):.2f}x"
    if sp_rows:
        tables.append((
            "Speed-up of each pruned variant over its rectangle, per runtime", ["case", *present],
            [[labels[k], *(v.get(rt, "") for rt in present)] for k, v in sp_rows.items()],
            "Rectangle latency over the variant's, both on the same runtime (\"paired\": the speedup metric, "
            "alternated in one process, with its 95 % CI).",
        ))  # fmt: skip

    # ---- export / compile status
    status_rows = []
    for _, c in cases[cases["runtime"] != "eager"].iterrows():
        mine = recs[recs["case_id"] == c["case_id"]]
        prep = mine[mine["metric"].isin(["export_error", "compile_s"])]
        p = prep.iloc[-1] if len(prep) else None
        lat_rec = mine[mine["metric"] == "latency"]
        status = str(lat_rec.iloc[-1]["status"]) if len(lat_rec) else "-"
        how = value = breaks = ""
        if p is not None:
            how = next((str(v) for v in (p.get("exporter"), p.get("backend")) if isinstance(v, str) and v), "")
            pv = _num(p["value"])
            if p["metric"] == "export_error":
                value = f"export_error {pv:.2g}" if pv is not None else "export_error -"
            else:
                value = f"compile {pv:.1f} s" if pv is not None else "compile -"
                g = _num(p.get("graph_breaks"))
                breaks = f"{int(g)}" if g is not None else ""
        errors = [e for e in mine.loc[mine["status"].isin(["error", "oom"]), "error"].tolist() if e]
        status_rows.append([_label(c), c["runtime"], how, value, breaks, status, errors[0] if errors else ""])
    if status_rows:
        tables.append((
            "Export and compile status", ["case", "runtime", "exporter / backend", "export or compile", "graph breaks",
                                          "latency status", "why not ok"],
            status_rows,
            "export_error: max |ONNX Runtime - eager| / max |eager| over two inputs (fails above 1e-4 in float32). "
            "compile: the first call of torch.compile (tracing and code generation), not part of the latency.",
        ))  # fmt: skip
    return Section(tables)
