"""What every figure of the report shares: the registry (:func:`register`, :func:`render_all`), the
inputs (:class:`PlotInputs`) and the conventions (one colour per backbone family, one marker per
variant, the figure style, saving as PNG and SVG). The figures themselves are in the family modules
beside it; :mod:`bench.analysis.plots` imports them all.
"""


from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (CI, SLURM nodes)

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.axis import Axis  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator  # noqa: E402

VARIANT_ORDER = ("rectangle", "single", "hierarchical")
MARKERS = {"rectangle": "o", "single": "s", "hierarchical": "^"}
LINESTYLES: dict[str, Any] = {"rectangle": "-", "single": "--", "hierarchical": ":"}
# Fixed colours for the four shipped backbones so that every report reads the same way.
FAMILY_COLOURS = {"mixste": "#1f77b4", "motionbert": "#ff7f0e", "mhformer": "#2ca02c", "motionagformer": "#d62728"}
_EXTRA_COLOURS = ["#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]

STYLE: dict[str, Any] = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.fonttype": "none",  # text stays text in the SVG (searchable, editable)
}


def colour(backbone: str, known: list[str] | None = None) -> str:
    """The colour of a backbone family (user backbones get the next free colour)."""
    if backbone in FAMILY_COLOURS:
        return FAMILY_COLOURS[backbone]
    others = sorted(b for b in (known or [backbone]) if b not in FAMILY_COLOURS)
    i = others.index(backbone) if backbone in others else 0
    return _EXTRA_COLOURS[i % len(_EXTRA_COLOURS)]


def marker(variant: str) -> str:
    return MARKERS.get(variant, "D")


def variant_rank(variant: str) -> int:
    return VARIANT_ORDER.index(variant) if variant in VARIANT_ORDER else len(VARIANT_ORDER)


def plain_log_axis(axis: Axis) -> None:
    """Log scale with plain tick labels at 1-2-5 steps (10, 20, 50, 100...), not bare powers of ten."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_locator(NullLocator())


def save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    """Write ``name``.png and ``name``.svg into ``out_dir``; closes the figure."""
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
    fig.savefig(paths[0], dpi=120)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


@dataclass(frozen=True)
class PlotInputs:
    """What a plot may draw from: the summary (one row per case), per-block records, reported accuracy."""

    summary: pd.DataFrame
    blocks: pd.DataFrame
    reported: pd.DataFrame | None
    parts: pd.DataFrame | None = None  # the ok time_by_part records (the breakdown group)
    breakdown: pd.DataFrame | None = None  # its other ok records: achieved_gflops, machine_peak_gflops, mem_by_part
    stream: pd.DataFrame | None = None  # the ok stream_* records (the stream group: several per case)
    # every case of the run, all runtimes and precisions (``summary`` shows one of each; see write_report)
    all_cases: pd.DataFrame | None = None


@dataclass(frozen=True)
class Plot:
    """A registered figure: ``draw`` returns None when the run lacks its data (``why_missing`` says so)."""

    name: str
    title: str
    draw: Callable[[PlotInputs], Figure | None]
    why_missing: str


PLOTS: dict[str, Plot] = {}  # in drawing order


def register(name: str, title: str, why_missing: str) -> Callable[[Callable[[PlotInputs], Figure | None]], Callable]:
    """Add a figure to every report: ``@register("name", "Title", "why it can be absent")`` on a draw function."""

    def deco(draw: Callable[[PlotInputs], Figure | None]) -> Callable[[PlotInputs], Figure | None]:
        if name in PLOTS:
            raise ValueError(f"plot {name!r} is registered twice")
        PLOTS[name] = Plot(name, title, draw, why_missing)
        return draw

    return deco


def title(name: str) -> str:
    return PLOTS[name].title if name in PLOTS else name


def render_all(
    summary: pd.DataFrame, blocks: pd.DataFrame, reported: pd.DataFrame | None, out_dir: Path,
    parts: pd.DataFrame | None = None, breakdown: pd.DataFrame | None = None, stream: pd.DataFrame | None = None,
    all_cases: pd.DataFrame | None = None,
) -> dict[str, list[Path]]:
    """Every registered figure the data allows, name -> written files; :func:`missing` says why one is absent.

    An empty chart says nothing, so a figure without data is left out rather than drawn blank.
    ``parts``: the run's ok time_by_part records (the breakdown group); ``breakdown``: the group's
    other ok records (achieved_gflops, machine_peak_gflops, mem_by_part); ``stream``: the ok stream_* records;
    ``all_cases``: every case's summary row where ``summary`` holds one runtime and precision of them.
    """
    data = PlotInputs(summary, blocks, reported, parts, breakdown, stream, all_cases)
    out: dict[str, list[Path]] = {}
    with plt.rc_context(STYLE):  # type: ignore[arg-type]  # the stubs want Literal keys
        for plot in PLOTS.values():
            fig = plot.draw(data)
            if fig is not None:
                out[plot.name] = save(fig, out_dir, plot.name)
    return out


def missing(written: dict[str, list[Path]]) -> dict[str, str]:
    """Figures that :func:`render_all` left out, with the reason to show the reader."""
    return {name: p.why_missing for name, p in PLOTS.items() if name not in written}


def fit_title(fig: Figure, text: str, size: float | None = None) -> None:
    """A figure title wrapped to the figure's width, so that it is never clipped."""
    size = size or float(plt.rcParams["axes.titlesize"] if isinstance(plt.rcParams["axes.titlesize"], int | float) else 12)
    chars = max(20, int(fig.get_figwidth() * 72 / (size * 0.56)))
    fig.suptitle("\n".join(textwrap.wrap(text, chars)), fontsize=size)


VARIANT_COLOURS = {"rectangle": "0.55", "single": "#1f77b4", "hierarchical": "#d62728"}


def real(x: object) -> bool:
    """A finite number (not a bool, None or NaN): a value a figure can place."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def panel_grid(n: int, width: float = 6.2, height: float = 3.9) -> tuple[Figure, list[Axes]]:
    """``n`` panels, two to a row (one alone when ``n`` is 1); the grid's spare cell is hidden."""
    ncols = 1 if n == 1 else 2
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def short(x: float) -> str:
    """A bar's value label: one decimal from 10 up, two from 1, else 3 significant digits."""
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}" if x >= 1 else f"{x:.3g}"
