"""Figures of live video (the stream group): per-frame latency against the camera rate.

- ``stream_latency``: one panel per backbone setting; per variant the median latency (solid) and
  its p99 (dashed) at each camera rate streamed, and at the highest rate it sustains (a star, from
  stream_max_fps); hollow markers where frames were dropped. Drawn with them: the real-time line
  (one frame interval, 1000 / fps ms: a pose within it is ready before the next frame arrives)
  and, for seq2frame backbones, the delay floor of a pose that is the centre of its window
  ((T - 1) / 2 frames, before any compute).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator

from ...core.numbers import sig
from .base import (
    VARIANT_COLOURS,
    PlotInputs,
    fit_title,
    marker,
    panel_grid,
    plain_log_axis,
    real,
    register,
    variant_rank,
)

SETTING = ["backbone", "frames", "batch", "device", "dtype", "size"]


def _points(stream: pd.DataFrame) -> pd.DataFrame:
    """One row per (case, camera rate): median and p99 latency (ms), dropped share, and the max-fps point."""
    rows = []
    for cid, g in stream.groupby("case_id", sort=False):
        first = g.iloc[0]
        base = {k: first[k] for k in [*SETTING, "variant", "pipeline"]} | {"case_id": cid}
        lat = g[g["metric"] == "stream_latency"]
        drop = g[g["metric"] == "stream_dropped"].set_index("fps_in")["value"]
        for _, r in lat.iterrows():
            rows.append(base | {"fps": float(r["fps_in"]), "median": float(r["value"]), "p99": r.get("p99"),
                                "dropped": drop.get(r["fps_in"], 0.0), "max": False})  # fmt: skip
        mx = g[g["metric"] == "stream_max_fps"]
        for _, r in mx.iterrows():
            if real(r["value"]) and r["value"] > 0 and real(r.get("latency_ms")):
                rows.append(base | {"fps": float(r["value"]), "median": float(r["latency_ms"]), "p99": r.get("p99_ms"),
                                    "dropped": 0.0, "max": True})  # fmt: skip
    return pd.DataFrame(rows)


@register("stream_latency", "Live video: per-frame latency against the camera rate",
          "the run measured no live streams (--metrics stream)")  # fmt: skip
def _draw_stream(data: PlotInputs) -> Figure | None:
    if data.stream is None or data.stream.empty:
        return None
    pts = _points(data.stream)
    return stream_latency(pts) if not pts.empty else None


def stream_latency(pts: pd.DataFrame) -> Figure:
    """The figure of :func:`_points`' rows (module docstring)."""
    groups = list(pts.groupby(SETTING, sort=True))
    fig, axes = panel_grid(len(groups), width=6.4, height=4.2)
    for ax, (key, g) in zip(axes, groups, strict=True):
        d = dict(zip(SETTING, key, strict=True))
        lo, hi = float(g["fps"].min()), float(g["fps"].max())
        wide = hi / lo > 10  # a log rate axis only where the rates span a decade (seq2frame's max fps)
        span = max(hi - lo, 0.5 * hi)
        lo, hi = (lo / 1.3, hi * 1.3) if wide else (max(0.0, lo - 0.2 * span), hi + 0.2 * span)
        xs = np.geomspace(lo, hi, 50) if wide else np.linspace(max(lo, 1e-3), hi, 50)
        ax.plot(xs, 1e3 / xs, color="0.4", lw=1, ls="--")
        if (g["pipeline"] == "seq2frame").any():
            t = int(d["frames"])
            ahead = t - 1 - (t - 1) // 2
            ax.plot(xs, 1e3 * ahead / xs, color="k", lw=1, ls=":")
            mid = xs[len(xs) // 2]
            ax.text(mid, 1e3 * ahead / mid, f" {ahead} frames", fontsize=8, ha="left", va="bottom")
        for rank, (variant, v) in enumerate(sorted(g.groupby("variant"), key=lambda kv: variant_rank(str(kv[0])))):
            c = VARIANT_COLOURS.get(str(variant), "#9467bd")
            streamed = v[~v["max"]].sort_values("fps")
            for col, ls, size in (("median", "-", 6), ("p99", "--", 4)):
                ys = pd.to_numeric(streamed[col], errors="coerce")
                ax.plot(streamed["fps"], ys, color=c, ls=ls, lw=1.2)
                for x, y, dropped in zip(streamed["fps"], ys, streamed["dropped"], strict=True):
                    if real(y):
                        face = "none" if real(dropped) and dropped > 0 else c
                        ax.plot([x], [y], marker=marker(str(variant)), ms=size, color=c, mfc=face, ls="none")
            for _, r in v[v["max"]].iterrows():
                ax.plot([r["fps"]], [r["median"]], marker="*", ms=11, color=c, ls="none")
                ax.annotate(f"{sig(float(r['fps']))} fps", (r["fps"], r["median"]), textcoords="offset points",
                            xytext=(4, 4 + 10 * rank), fontsize=8, color=c)  # fmt: skip
        if wide:
            ax.set_xscale("log")
            plain_log_axis(ax.xaxis)
        ax.set_yscale("log")
        plain_log_axis(ax.yaxis)
        low, high = ax.get_ylim()
        ax.set_ylim(low, high * 4)  # room for the rate labels above the stars
        if high / low > 1e3:  # seq2frame at a low rate waits minutes: one label per decade
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0,)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
        ax.set_xlim(lo, hi)
        ax.set_xlabel("camera rate (frames/s)")
        ax.set_ylabel("latency, arrival to pose (ms)")
        ax.set_title(f"{d['backbone']} T={d['frames']} ({d['size']}, {d['device']})")
    variants = sorted(pts["variant"].unique(), key=variant_rank)
    handles = [Line2D([], [], color=VARIANT_COLOURS.get(v, "#9467bd"), marker=marker(v), label=v) for v in variants]
    handles += [Line2D([], [], color="0.3", ls="-", label="median"), Line2D([], [], color="0.3", ls="--", label="p99"),
                Line2D([], [], color="0.3", marker="*", ls="none", ms=10, label="highest rate sustained"),
                Line2D([], [], color="0.3", marker="o", mfc="none", ls="none", label="frames dropped"),
                Line2D([], [], color="0.4", ls="--", lw=1, label="real time: one frame interval"),
                Line2D([], [], color="k", ls=":", lw=1, label="seq2frame delay floor: (T-1)/2 frames")]  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=9)
    fit_title(fig, "Live video: latency from a frame's arrival to its 3D pose, against the camera rate")
    rows = math.ceil(len(groups) / 2) if len(groups) > 1 else 1
    fig.tight_layout(rect=(0, 0.06 + 0.04 / rows, 1, 0.93))
    return fig
