"""The report's "Live video" section and ``vptbench stream``'s output, from stream_* records alone.

Two tables:

- capacity, one row per case: "sustains N fps live with D delay" (stream_max_fps, and the median
  latency the probe stream at that rate measured, with the emission's look-ahead), the stride it
  needs, and for a pruned case the paired gain over its rectangle on one stream (stream_speedup);
- per camera rate, one row per (case, rate): median latency [95 % CI], p99, its parts (delay for
  future frames, queue, compute), the real-time factor and the dropped share.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from ..core import numbers

STREAM_METRICS = ("stream_latency", "stream_rtf", "stream_dropped", "stream_max_fps", "stream_speedup")
TITLE = "Live video"


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return None
    return float(x)


def _int(x: Any) -> str:
    v = _num(x)
    return "-" if v is None else str(int(v))


def _ms(x: Any) -> str:
    v = _num(x)
    return "-" if v is None else numbers.quantity(v, "ms")


def _windows(r: Mapping[str, Any]) -> str:
    """', n windows' where a CI rests on fewer than 6 (Student's t on the logs; one window: none)."""
    n = _num(r.get("n"))
    return f" (n={int(n)})" if n is not None and n < 6 else ""


def label(r: Mapping[str, Any]) -> str:
    """The case as a row names it: backbone, variant (schedule and strategy), T, size, runtime."""
    how = "+".join(p for p in (r.get("pruner"), r.get("recoverer")) if p)
    sched = f" {r.get('schedule')} {how}" if r.get("variant") != "rectangle" else ""
    runtime = r.get("runtime") or "eager"
    where = f"T={_int(r.get('frames'))}, {r.get('size')}" + ("" if runtime == "eager" else f", {runtime}")
    return f"{r.get('backbone')} {r.get('variant')}{sched} ({where})"


def _by_case(records: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        if r.get("metric") in STREAM_METRICS:
            out.setdefault(str(r["case_id"]), []).append(r)
    return out


def _ok(r: Mapping[str, Any] | None) -> bool:
    return r is not None and r.get("status") == "ok" and _num(r.get("value")) is not None


def capacity_rows(records: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    """Per case: sustained rate and its delay in words, stride, the paired gain over the rectangle."""
    rows = []
    for recs in _by_case(records).values():
        mx = next((r for r in recs if r["metric"] == "stream_max_fps"), None)
        sp = next((r for r in recs if r["metric"] == "stream_speedup"), None)
        first = mx or recs[0]
        if _ok(mx):
            assert mx is not None
            fps = float(mx["value"])
            if fps <= 0:
                words = "sustains no rate tried"
            else:
                least, capped = ("at least ", " (the search's cap)") if mx.get("capped") else ("", "")
                words = f"sustains {least}{numbers.sig(fps)} fps{capped} live with {_ms(mx.get('latency_ms'))} delay"
            bracket = _num(mx.get("ci_high"))
            found = f"{numbers.sig(fps)}" + (f" (not {numbers.sig(bracket)})" if bracket else "")
            stride = f"{_int(mx.get('stride'))} of {_int(mx.get('window'))}"
            parts = f"{_ms(mx.get('delay_ms'))} / {_ms(mx.get('compute_ms'))}" if fps > 0 else "-"
        else:
            words = f"max fps {mx.get('status')}: {mx.get('error')}" if mx else "max fps not measured"
            found = stride = parts = "-"
        gain = ""
        if _ok(sp):
            assert sp is not None
            lo, hi = _num(sp.get("ci_low")), _num(sp.get("ci_high"))
            ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
            gain = (f"{float(sp['value']):.2f}x{ci} at {float(sp['fps_in']):g} fps, stride {_int(sp.get('stride'))}"
                    f"{_windows(sp)}")
        elif sp is not None:
            gain = f"{sp.get('status')}: {sp.get('error')}"
        rows.append([label(first), words, found, stride, parts, gain])
    return rows


CAPACITY_HEADERS = ["case", "live", "max fps (lowest not sustained)", "stride of window", "delay / compute there",
                    "paired gain over rectangle [95 % CI]"]  # fmt: skip
CAPACITY_REMARK = (
    "Highest camera rate with no frame dropped and a real-time factor below 1, by bisection on short streams at the "
    "given stride (with auto, the window's length: the most the model can follow at all); the delay is the median "
    "latency from a frame's arrival to its pose at that rate. Paired gain: rectangle ms / pruned ms per window, both "
    "models on every window of one stream, alternated (the factor by which pruning divides the real-time factor); "
    "(n=k): its CI rests on k windows, fewer than 6: Student's t on the logarithms of the ratios (one window: no "
    "interval), which assumes they are roughly log-normal."
)


def rate_rows(records: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    """Per (case, camera rate): latency [CI], p99, delay / queue / compute, RTF, dropped share."""
    rows = []
    for recs in _by_case(records).values():
        rates = sorted({float(r["fps_in"]) for r in recs if _num(r.get("fps_in")) is not None
                        and r["metric"] != "stream_speedup"})  # fmt: skip
        for fps in rates:
            at = {r["metric"]: r for r in recs if _num(r.get("fps_in")) == fps}
            lat, rtf, drop = at.get("stream_latency"), at.get("stream_rtf"), at.get("stream_dropped")
            first = lat or rtf or drop or recs[0]
            if _ok(lat):
                assert lat is not None
                v, lo, hi = float(lat["value"]), _num(lat.get("ci_low")), _num(lat.get("ci_high"))
                unit, f = numbers.column_unit([v], "ms")
                median = f"{numbers.with_ci(v * f, lo * f if lo else None, hi * f if hi else None)} {unit}{_windows(lat)}"
                p99, parts = _ms(lat.get("p99")), " / ".join(_ms(lat.get(k)) for k in ("delay_ms", "queue_ms", "compute_ms"))
            else:
                median = f"{lat.get('status')}: {lat.get('error')}" if lat else "-"
                p99 = parts = "-"
            r_text = f"{float(rtf['value']):.3g}" if _ok(rtf) and rtf is not None else "-"
            d_text = f"{100 * float(drop['value']):.1f} %" if _ok(drop) and drop is not None else "-"
            rows.append([label(first), f"{fps:g}", f"{_int(first.get('stride'))} ({first.get('emit')})", median,
                         p99, parts, r_text, d_text])  # fmt: skip
    return rows


RATE_HEADERS = ["case", "camera fps", "stride (emit)", "latency median [95 % CI]", "p99", "delay / queue / compute",
                "real-time factor", "dropped"]  # fmt: skip
RATE_REMARK = (
    "Latency: from a frame's arrival to its 3D pose, on the wall clock; delay: the wait for the future frames its "
    "window needs (emit newest: up to stride - 1 frames; middle and seq2frame add the look-ahead); queue: the wait "
    "for the model; compute: the window's forward. The CI is over windows (a window's frames share its compute; "
    "(n=k): k windows, fewer than 6: Student's t on the logarithms; one window: no interval). "
    "Real-time factor: compute seconds per second of video (below 1 keeps up). Dropped: frames whose window was "
    "skipped because a newer one was complete when the model became free."
)


@dataclass
class Section:
    """The section's tables as (title, headers, rows, remark)."""

    tables: list[tuple[str, list[str], list[list[str]], str]]

    def markdown(self) -> str:
        out = [f"## {TITLE}", ""]
        for title, headers, rows, remark in self.tables:
            out += [f"### {title}", "", tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True), ""]
            out += [remark, ""]
        return "\n".join(out)

    def html(self) -> str:
        out = [f"<h2 id='stream'>{TITLE}</h2>"]
        for title, headers, rows, remark in self.tables:
            body = [[html.escape(c) for c in row] for row in rows]
            out += [f"<h3>{html.escape(title)}</h3>",
                    tabulate(body, headers=[html.escape(h) for h in headers], tablefmt="unsafehtml",
                             disable_numparse=True), f"<p class='remark'>{html.escape(remark)}</p>"]  # fmt: skip
        return "\n".join(out)


def section(records: Iterable[Mapping[str, Any]]) -> Section | None:
    """The section for a run's records, or None when it has no stream records."""
    records = [r for r in records if r.get("metric") in STREAM_METRICS]
    if not records:
        return None
    tables = [("What each case sustains live", CAPACITY_HEADERS, capacity_rows(records), CAPACITY_REMARK)]
    rates = rate_rows(records)
    if rates:
        tables.append(("Per camera rate", RATE_HEADERS, rates, RATE_REMARK))
    return Section(tables)


def format_text(records: Iterable[Mapping[str, Any]]) -> str:
    """``vptbench stream``'s output: both tables as plain text."""
    part = section(records)
    if part is None:
        return "no stream records"
    out = []
    for title, headers, rows, remark in reversed(part.tables):
        out += [title, tabulate(rows, headers=headers, disable_numparse=True), remark, ""]
    return "\n".join(out).rstrip()


__all__ = ["STREAM_METRICS", "Section", "capacity_rows", "format_text", "rate_rows", "section"]
