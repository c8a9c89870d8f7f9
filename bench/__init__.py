"""vptbench: efficiency benchmarks of video pose transformers and their token-pruned variants.

The names to script against are importable from ``bench`` itself; the modules behind them may
move between releases, these names stay::

    from bench import Case, Settings, measure_case, read_records, run_matrix, write_report

    case = Case("mixste", "hierarchical", frames=27, size="tiny").resolve()
    for rec in measure_case(case, ["params", "flops"], run_id="mine"):   # one case, records as dicts
        print(rec["metric"], rec["method"], rec["value"], rec["unit"])

    summary = run_matrix([case], "results/mine", run_id="mine", metrics=["params", "latency"])
    write_report(summary.run_dir, out="reports/mine")                     # tables, plots, index.html
    result = gate(read_records("results/baselines/cpu-smoke.jsonl"), read_records("results/mine"),
                  load_rules(None))                                      # result.passed

| name | what it is |
|---|---|
| :class:`Case` | one point of the matrix (backbone, variant, T, batch, device, dtype, size, schedule, ...) |
| :func:`measure_case`, :class:`Settings`, ``METRIC_GROUPS`` | measure one case: its records, one per (metric, method) |
| :func:`get_preset`, :func:`build_matrix` | the cases of a preset (``smoke``, ``paper``, ``scaling``), narrowed |
| :func:`run_matrix` | measure cases in this process into a run directory (``records.jsonl``, ``meta.json``) |
| :func:`read_records`, :func:`read_meta` | a run directory's records (validated) and environment |
| :func:`write_report`, :func:`register_plot` | the report of a run; add a figure to every report |
| :func:`compare_runs` | runs side by side, ratios with intervals (``vptbench compare``) |
| :func:`gate`, :func:`load_rules` | a run against a baseline: what regressed (``vptbench gate``) |
| :func:`merge_runs` | shards into one run (``vptbench merge``) |
| :func:`count_flops`, :func:`measure_latency`, :func:`measure_paired`, :func:`stats_fields` | the trackers on any model or callable |
| :class:`UsageError` | what every user mistake raises (the CLI prints it on one line, exit 2) |

They are imported on first use, so ``import bench`` (and the command line's ``--help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .core import __version__

# public name -> (module, attribute)
_PUBLIC: dict[str, tuple[str, str]] = {
    "Case": ("bench.core.case", "Case"),
    "UsageError": ("bench.core.errors", "UsageError"),
    "read_records": ("bench.core.results", "read_records"),
    "read_meta": ("bench.core.results", "read_meta"),
    "measure_case": ("bench.scenarios", "measure_case"),
    "Settings": ("bench.scenarios", "Settings"),
    "METRIC_GROUPS": ("bench.scenarios", "METRIC_GROUPS"),
    "get_preset": ("bench.run.presets", "get_preset"),
    "build_matrix": ("bench.run.presets", "build_matrix"),
    "run_matrix": ("bench.run.runner", "run_matrix"),
    "merge_runs": ("bench.run.merge", "merge_runs"),
    "write_report": ("bench.analysis.report", "write_report"),
    "register_plot": ("bench.analysis.plots", "register"),
    "compare_runs": ("bench.analysis.compare", "compare_runs"),
    "gate": ("bench.analysis.gate", "compare"),
    "load_rules": ("bench.analysis.gate", "load_rules"),
    "count_flops": ("bench.measure.flops", "count_flops"),
    "measure_latency": ("bench.measure.timing", "measure_latency"),
    "measure_paired": ("bench.measure.timing", "measure_paired"),
    "stats_fields": ("bench.measure.timing", "stats_fields"),
}

__all__ = [
    "Case",
    "METRIC_GROUPS",
    "Settings",
    "UsageError",
    "build_matrix",
    "compare_runs",
    "count_flops",
    "gate",
    "get_preset",
    "load_rules",
    "measure_case",
    "measure_latency",
    "measure_paired",
    "merge_runs",
    "read_meta",
    "read_records",
    "register_plot",
    "run_matrix",
    "stats_fields",
    "write_report",
    "__version__",
]

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from .analysis.compare import compare_runs
    from .analysis.gate import compare as gate
    from .analysis.gate import load_rules
    from .analysis.plots import register as register_plot
    from .analysis.report import write_report
    from .core.case import Case
    from .core.errors import UsageError
    from .core.results import read_meta, read_records
    from .measure.flops import count_flops
    from .measure.timing import measure_latency, measure_paired, stats_fields
    from .run.merge import merge_runs
    from .run.presets import build_matrix, get_preset
    from .run.runner import run_matrix
    from .scenarios import METRIC_GROUPS, Settings, measure_case


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'bench' has no attribute {name!r}")
    module, attr = _PUBLIC[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
