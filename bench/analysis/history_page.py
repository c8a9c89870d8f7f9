"""The history page (``index.html``, with ``history.csv``): one self-contained HTML file, one small
inline SVG chart per (case, metric).

No script and nothing fetched: the page opens from a CI artifact or a mail attachment as it is.
Each chart draws one machine's runs in time order, the commit (7 hex digits, ``+`` for a dirty
tree) under each: the median as a line, its 95 % CI as a band, a run whose timing was not stable
as a hollow point, and each detected step as a vertical line before the run where it starts (red
worse, green better; dotted while unconfirmed). Hovering a point shows its run, date and figure.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import html
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from ..core import numbers
from ..core.errors import UsageError
from .history import Found, History, history_csv
from .series import Run, Series
from .steps import MIN_CHANGE, RELATIVE_TOLERANCE

DEFAULT_OUT = Path("reports") / "history"
W, H = 340, 190
LEFT, RIGHT, TOP, BOTTOM = 52, 10, 14, 52
LINE, WORSE, BETTER = "#1f5fa8", "#c62828", "#2e7d32"
T = TypeVar("T")

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
h3 { font-size: 0.95em; font-family: ui-monospace, monospace; margin: 0.9em 0 0.3em; font-weight: 600; }
table { border-collapse: collapse; margin: 0.5em 0; } table.steps { font-size: 13px; } td, th { padding: 3px 8px; border-bottom: 1px solid #eee; text-align: left; }
th { background: #f6f6f6; } table.steps td { white-space: nowrap; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.worse { color: #c62828; } td.better { color: #2e7d32; } .muted { color: #777; }
.cases { display: flex; flex-wrap: wrap; gap: 6px 22px; align-items: flex-start; }
.charts { display: flex; flex-wrap: wrap; gap: 8px; }
figure.chart { margin: 0; border: 1px solid #e3e3e3; border-radius: 4px; padding: 4px; background: #fff; }
figure.chart figcaption { font-size: 12px; text-align: center; }
figure.chart.stepped { border-color: #2e7d32; } figure.chart.stepped.worse { border-color: #c62828; }
svg text { font: 10px system-ui, sans-serif; fill: #444; }
"""


def write_history(h: History, out: str | Path | None = None) -> Path:
    """Write ``index.html`` and ``history.csv`` into ``out`` (default ``reports/history``); returns ``out``."""
    out_dir = Path(out) if out is not None else DEFAULT_OUT
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "history.csv").write_text(history_csv(h), encoding="utf-8")
        (out_dir / "index.html").write_text(render(h), encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot write the history to {out_dir}: {e.strerror or e}") from None
    return out_dir


def chart_id(s: Series) -> str:
    """The anchor of a series' chart (stable across renders of the same runs)."""
    return "c-" + hashlib.sha1(f"{s.machine.id}|{s.case_id}|{s.label}".encode()).hexdigest()[:10]


def render(h: History) -> str:
    """The whole page."""
    e = html.escape
    dates = [r.date for r in h.runs]
    n_series = sum(len(v) for v in h.series.values())
    shown = list(dict.fromkeys(s.metric for v in h.series.values() for s in v))
    confirmed = [f for f in h.steps if f.step.confirmed]
    pending = [f for f in h.steps if not f.step.confirmed]
    several = len(h.machines) > 1
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>vptbench history: {len(h.runs)} runs</title><style>{CSS}</style></head><body>",
        "<h1>vptbench history</h1>",
        f"<p>{len(h.runs)} run(s) on {len(h.machines)} machine(s), {_day(min(dates))} to {_day(max(dates))}; "
        f"{n_series} series of {e(', '.join(shown))}; <b>{len(confirmed)} step(s)</b> detected"
        f"{f', {len(pending)} more possible in the latest run(s)' if pending else ''}.</p>",
        f'<p class="muted">{e(_rule(h.sustain))}</p>',
        '<h2 id="steps">Steps</h2>', _steps_table(confirmed, "None: every series stayed within its noise.", several),
    ]  # fmt: skip
    if pending:
        parts += ['<h2 id="pending">Possible steps in the latest run(s), not yet confirmed</h2>',
                  _steps_table(pending, "", several)]  # fmt: skip
    for m, runs in h.machines.items():
        parts += [f'<h2 id="m-{m.id}">Machine {m.id}: {e(m.label)}</h2>', _runs_table(runs)]
        by_case: dict[str, list[Series]] = {}
        for s in h.series.get(m, []):
            by_case.setdefault(s.case_id, []).append(s)
        parts.append('<div class="cases">')
        for case_id, group in by_case.items():
            figures = "".join(_figure(s, runs, h.steps_of(s)) for s in group)
            parts.append(f'<section class="case"><h3>{e(case_id)}</h3><div class="charts">{figures}</div></section>')
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _day(d: _dt.datetime) -> str:
    return d.strftime("%Y-%m-%d %H:%M") + (" UTC" if d.utcoffset() == _dt.timedelta(0) else d.strftime(" %z"))


def _rule(sustain: int) -> str:
    return (f"A step: params/FLOPs change at all; a timing's whole 95 % CI leaves the band of the level before "
            f"and its median moves by more than {MIN_CHANGE:.0%}; memory moves by more than "
            f"{RELATIVE_TOLERANCE:.0%}; in {sustain} consecutive run(s) (1 for params/FLOPs). Runs are ordered "
            "by commit date, else by start time; timings are compared only within one machine.")  # fmt: skip


def _steps_table(found: Sequence[Found], empty: str, several: bool) -> str:
    if not found:
        return f"<p>{empty}</p>"
    e = html.escape
    rows = []
    for f in found:
        s, st = f.series, f.step
        change = f"{st.change:+.1%}" if st.change is not None else "from 0"
        cls = "worse" if f.worse else "better"
        rows.append(
            f'<tr><td><a href="#{chart_id(s)}">{e(s.case_id)}</a></td><td>{e(s.label)}</td>'
            f'<td class="num {cls}">{change} ({cls})</td>'
            f'<td class="num">{e(numbers.quantity(st.before, s.unit))} &rarr; {e(numbers.quantity(st.after, s.unit))}</td>'
            f'<td><code title="run {e(f.run.run_id)}">{e(f.run.short)}</code></td><td>{f.run.date:%Y-%m-%d}</td>'
            + (f"<td>{s.machine.id}</td>" if several else "")
            + f"<td>{ {True: 'yes', False: 'no', None: ''}[f.stable]}</td></tr>"
        )  # fmt: skip
    columns = ("case", "metric", "change", "level", "commit", "date", *(["machine"] if several else []), "stable")
    head = "".join(f"<th>{c}</th>" for c in columns)
    return f'<table class="steps"><tr>{head}</tr>{"".join(rows)}</table>'


def _runs_table(runs: Sequence[Run]) -> str:
    e = html.escape
    source = {"commit": "commit date", "start": "run start", "file": "file time"}
    rows = "".join(
        f"<tr><td>{i + 1}</td><td>{e(r.run_id)}</td><td><code>{e(r.short)}</code></td>"
        f"<td>{_day(r.date)} <span class=muted>({source.get(r.date_source, r.date_source)})</span></td>"
        f"<td>{e(r.start.replace('T', ' ')[:16])}</td>"
        f'<td class="num">{len(r.records)}</td><td class="muted">{e(str(r.path))}</td></tr>'
        for i, r in enumerate(runs)
    )  # fmt: skip
    head = "".join(f"<th>{c}</th>" for c in ("#", "run", "commit", "date", "run started", "records", "directory"))
    return f"<table><tr>{head}</tr>{rows}</table>"


def _figure(s: Series, runs: Sequence[Run], found: Sequence[Found]) -> str:
    e = html.escape
    confirmed = [f for f in found if f.step.confirmed]
    cls = "chart" + (" stepped" if confirmed else "") + (" worse" if any(f.worse for f in confirmed) else "")
    values = [v for p in s.points if p is not None for v in (p.value, p.low, p.high) if v is not None]
    unit, factor = (s.unit, 1.0) if s.unit == "count" else numbers.column_unit(values, s.unit)
    caption = f"<b>{e(s.label)}</b> ({e(unit)})"
    return (f'<figure class="{cls}" id="{chart_id(s)}" data-case="{e(s.case_id)}" data-metric="{e(s.label)}">'
            f"{svg_chart(s, runs, found, factor, unit)}<figcaption>{caption}</figcaption></figure>")  # fmt: skip


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    span = hi - lo
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def _tick_labels(ticks: Sequence[float]) -> list[str]:
    """The ticks with as few decimals as tell them apart (2.5, 5.0, 7.5; 100, 200), thousands separated."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else abs(ticks[0]) or 1.0
    d = next((d for d in range(7) if all(abs(round(t, d) - t) < step * 1e-6 for t in ticks)), 6)
    return [f"{t:,.{d}f}" for t in ticks]


def svg_chart(s: Series, runs: Sequence[Run], found: Sequence[Found], factor: float = 1.0, unit: str = "") -> str:
    """One series as an SVG chart (see the module's docstring)."""
    e = html.escape
    pts = [(i, p) for i, p in enumerate(s.points) if p is not None]
    ys = [v * factor for _, p in pts for v in (p.value, p.low, p.high) if v is not None]
    lo, hi = min(ys), max(ys)
    # At least +-5 % of the median in view: noise that is no step does not fill the chart as if it were one.
    mid, half = (lo + hi) / 2, max((hi - lo) / 2, abs(statistics.median(ys)) * MIN_CHANGE) or 1.0
    lo, hi = mid - half * 1.08, mid + half * 1.08
    if min(ys) >= 0 > lo:
        lo = 0.0
    n = len(runs)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(i: float) -> float:
        return LEFT + (pw * (i + 0.5) / n)

    def y(v: float) -> float:
        return TOP + ph * (1 - (v * factor - lo) / (hi - lo))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
           f'aria-label="{e(s.case_id)} {e(s.label)}">',
           f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ddd"/>']  # fmt: skip
    ticks = _ticks(lo, hi)
    for t, text in zip(ticks, _tick_labels(ticks)):
        ty = TOP + ph * (1 - (t - lo) / (hi - lo))
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#e6e6e6"/>'
                   f'<text x="{LEFT - 4}" y="{ty + 3:.1f}" text-anchor="end">{text}</text>')  # fmt: skip
    every = max(1, math.ceil(n / 14))
    for i, run in enumerate(runs):
        if i % every == 0 or i == n - 1:
            lx, ly = x(i), TOP + ph + 8
            out.append(f'<text x="{lx:.1f}" y="{ly}" text-anchor="end" transform="rotate(-45 {lx:.1f} {ly})">'
                       f"{e(run.short)}</text>")  # fmt: skip
    cis = [(i, (p.low, p.high)) for i, p in pts if p.low is not None and p.high is not None]
    for seg in _consecutive(cis):
        if len(seg) < 2:
            continue
        upper = " ".join(f"{x(i):.1f},{y(high):.1f}" for i, (_, high) in seg)
        lower = " ".join(f"{x(i):.1f},{y(low):.1f}" for i, (low, _) in reversed(seg))
        out.append(f'<polygon points="{upper} {lower}" fill="{LINE}" fill-opacity="0.16" stroke="none"/>')
    for run_of_points in _consecutive(pts):
        if len(run_of_points) > 1:
            line = " ".join(f"{x(i):.1f},{y(p.value):.1f}" for i, p in run_of_points)
            out.append(f'<polyline points="{line}" fill="none" stroke="{LINE}" stroke-width="1.5"/>')
    for f in found:
        sx = x(f.step.index - 0.5)
        colour = WORSE if f.worse else BETTER
        dash = "4 3" if f.step.confirmed else "1 3"
        change = f"{f.step.change:+.0%}" if f.step.change is not None else "new"
        out.append(f'<line x1="{sx:.1f}" x2="{sx:.1f}" y1="{TOP}" y2="{TOP + ph}" stroke="{colour}" stroke-width="1.5" '
                   f'stroke-dasharray="{dash}" class="step"/><text x="{sx + 3:.1f}" y="{TOP + 10}" '
                   f'style="fill:{colour}">{change}{"" if f.step.confirmed else "?"}</text>')  # fmt: skip
    for i, p in pts:
        fill = "#fff" if p.stable is False else LINE
        tip = f"{runs[i].run_id} · {runs[i].short} · {_day(runs[i].date)}\n" + _value_text(p.value, p.low, p.high, factor, unit)
        if p.stable is False:
            tip += " (not stable)"
        out.append(f'<circle cx="{x(i):.1f}" cy="{y(p.value):.1f}" r="3.2" fill="{fill}" stroke="{LINE}" '
                   f'stroke-width="1.4" class="{"unstable" if p.stable is False else "point"}">'
                   f"<title>{e(tip)}</title></circle>")  # fmt: skip
    out.append("</svg>")
    return "".join(out)


def _value_text(v: float, low: float | None, high: float | None, factor: float, unit: str) -> str:
    if unit == "count":
        return f"{numbers.count(v)} {unit}"
    lo = low * factor if low is not None else None
    hi = high * factor if high is not None else None
    return f"{numbers.with_ci(v * factor, lo, hi)} {unit}"


def _consecutive(pts: Sequence[tuple[int, T]]) -> list[list[tuple[int, T]]]:
    """``pts`` (run index, item) cut where a run is missing: lines and bands do not bridge a gap."""
    segs: list[list[tuple[int, T]]] = []
    for i, p in pts:
        if segs and segs[-1][-1][0] == i - 1:
            segs[-1].append((i, p))
        else:
            segs.append([(i, p)])
    return segs
