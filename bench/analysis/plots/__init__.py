"""The report's figures, drawn from a run's summary (one row per case) and its per-block records.

Each figure is saved as PNG (embedded in the HTML page) and SVG (for papers). Conventions shared by
all of them: one colour per backbone family, one marker per variant (rectangle o, single s,
hierarchical ^), filled markers for values measured here and hollow ones for values reported in the
papers. Nothing here runs a model.

This package holds the registry (:func:`register`, :func:`render_all`) and those conventions; the
figures live in one module per family, each registering its own: :mod:`.efficiency` (speed-up vs
FLOPs, efficiency vs accuracy), :mod:`.costs` (cost per variant, scaling), :mod:`.blocks` (the
hourglass, FLOPs per block), :mod:`.breakdown` (time by part, roofline, memory by part) and
:mod:`.stream` (live video: latency against the camera rate) and
:mod:`.precision` (speed-up against pose error per precision).
"""

from __future__ import annotations

from . import blocks, breakdown, costs, efficiency, precision, stream  # noqa: F401  (each registers its figures on import)
from .base import (
    FAMILY_COLOURS,
    LINESTYLES,
    MARKERS,
    PLOTS,
    STYLE,
    VARIANT_COLOURS,
    VARIANT_ORDER,
    Plot,
    PlotInputs,
    colour,
    fit_title,
    marker,
    missing,
    panel_grid,
    plain_log_axis,
    real,
    register,
    render_all,
    save,
    short,
    title,
    variant_rank,
)

# Drawing order of the shipped figures, whatever order their modules registered them in: what
# pruning buys and costs first, then the per-block and per-part views. A figure a user registers
# later comes after them.
SHIPPED = ("speedup_vs_flops", "cost_per_variant", "efficiency_accuracy", "precision_tradeoff", "scaling", "hourglass",
           "flops_per_block", "time_by_part", "roofline", "mem_by_part", "stream_latency")  # fmt: skip
for _name in SHIPPED:
    PLOTS[_name] = PLOTS.pop(_name)

__all__ = [
    "FAMILY_COLOURS",
    "LINESTYLES",
    "MARKERS",
    "PLOTS",
    "Plot",
    "PlotInputs",
    "STYLE",
    "VARIANT_COLOURS",
    "VARIANT_ORDER",
    "colour",
    "fit_title",
    "marker",
    "missing",
    "panel_grid",
    "plain_log_axis",
    "real",
    "register",
    "render_all",
    "save",
    "short",
    "title",
    "variant_rank",
]
