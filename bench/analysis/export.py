"""``vptbench export``: one run in the JSON formats that CI dashboards read.

- ``github-action-benchmark``: the ``customSmallerIsBetter`` / ``customBiggerIsBetter`` input of
  benchmark-action/github-action-benchmark, a JSON array of ``{name, unit, value, range, extra}``.
  The action takes one direction per file, so ``--out FILE`` gets the smaller-is-better figures
  (times, memory, params, FLOPs) and ``FILE`` with ``.bigger`` before its suffix the
  bigger-is-better ones (speed-up, FPS); both files are always written. ``range`` is the 95 % CI
  of the median, ``extra`` the run, commit and stability (the dashboard's tooltip).
- ``bencher``: Bencher Metric Format, ``{benchmark: {measure: {value, lower_value, upper_value}}}``:
  one benchmark per case, one measure per metric whose slug carries the unit (``latency-ms``,
  ``flops-paper-gflops``); lower and upper values are the CI. BMF has no direction: a Bencher
  threshold says it (an upper boundary for the smaller-is-better measures, a lower one for the others).
- ``pytest-benchmark``: the JSON of ``pytest --benchmark-json``: ``machine_info``, ``commit_info``,
  ``datetime``, ``version`` and one benchmark per timing that kept its samples (latency,
  training step), its ``stats`` computed from them as pytest-benchmark computes its own, in
  seconds; the case, the CI and the case's other figures are in ``extra_info``. pytest-benchmark
  only knows times, where smaller is better.

The published examples each format was checked against are named in ``tests/test_export.py``.
"""

from __future__ import annotations

import json
import re
import statistics
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core import numbers
from ..core.errors import UsageError
from ..core.results import METRIC_UNITS
from . import series as S

FORMATS = ("github-action-benchmark", "bencher", "pytest-benchmark")
PYTEST_BENCHMARK_VERSION = "5.2.3"  # the pytest-benchmark release whose JSON layout this follows


def bigger_path(out: Path) -> Path:
    """Where the bigger-is-better half of the github-action-benchmark export goes: ``bench.json`` -> ``bench.bigger.json``."""
    return out.with_name(f"{out.stem}.bigger{out.suffix}")


def export_run(run_dir: str | Path, fmt: str, out: str | Path, metrics: Sequence[str] | None = None) -> list[Path]:
    """Write ``run_dir``'s figures as ``fmt`` to ``out`` (and its sibling for github-action-benchmark)."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    unknown = [m for m in metrics or () if m not in METRIC_UNITS]
    if unknown:
        raise UsageError(f"--metrics: unknown metric {unknown[0]!r}; known: {', '.join(METRIC_UNITS)}")
    paths = S.find_runs([str(run_dir)])
    if len(paths) != 1:
        raise UsageError(f"{run_dir}: holds {len(paths)} runs; export takes one run directory")
    run = S.load_run(paths[0])
    pts = S.points(run.records, metrics or S.EXPORT_METRICS)
    if not pts:
        raise UsageError(f"{run_dir}: no ok record of {', '.join(metrics or S.EXPORT_METRICS)} to export")
    out = Path(out)
    if fmt == "github-action-benchmark":
        smaller, bigger = github_action_benchmark(run, pts)
        written = [_write(out, smaller), _write(bigger_path(out), bigger)]
    elif fmt == "bencher":
        written = [_write(out, bencher(pts))]
    else:
        doc = pytest_benchmark(run, pts)
        if not doc["benchmarks"]:
            raise UsageError(f"{run_dir}: no timing with its samples (latency, train_step) to export as pytest-benchmark")
        written = [_write(out, doc)]
    return written


def _write(path: Path, obj: Any) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        raise UsageError(f"cannot write --out {path}: {e.strerror or e}") from None
    return path


def _number(p: S.Point, unit: str) -> float | int:
    return int(p.value) if unit == "count" else p.value


# --------------------------------------------------------------------------- github-action-benchmark


def github_action_benchmark(run: S.Run, pts: dict[tuple[str, str], S.Point]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(customSmallerIsBetter entries, customBiggerIsBetter entries)."""
    smaller: list[dict[str, Any]] = []
    bigger: list[dict[str, Any]] = []
    for (case_id, lab), p in pts.items():
        metric, unit = str(p.record["metric"]), str(p.record.get("unit") or "")
        entry: dict[str, Any] = {"name": f"{case_id} {lab}", "unit": unit, "value": _number(p, unit)}
        if p.low is not None and p.high is not None:
            entry["range"] = f"95% CI {numbers.sig(p.low, 4)} to {numbers.sig(p.high, 4)}"
        extra = [f"run {run.run_id}", f"commit {run.short}"]
        if p.stable is not None:
            reason = p.record.get("unstable_reason")
            extra.append("stable" if p.stable else "not stable" + (f": {reason}" if reason else ""))
        if numbers.finite(p.record.get("n")):
            extra.append(f"n = {p.record['n']}")
        entry["extra"] = "\n".join(extra)
        (bigger if S.bigger_is_better(metric) else smaller).append(entry)
    return smaller, bigger


# --------------------------------------------------------------------------- Bencher Metric Format


def measure_slug(lab: str, unit: str) -> str:
    """A Bencher measure slug naming the metric and its unit: ``flops[paper]``, GFLOPs -> ``flops-paper-gflops``."""
    text = f"{lab} {unit.replace('/', ' per ')}".lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:64]


def bencher(pts: dict[tuple[str, str], S.Point]) -> dict[str, dict[str, dict[str, float]]]:
    """``{case_id: {measure: {value, lower_value, upper_value}}}`` (the bounds only where the figure has a CI)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (case_id, lab), p in pts.items():
        unit = str(p.record.get("unit") or "")
        metric: dict[str, float] = {"value": _number(p, unit)}
        if p.low is not None and p.high is not None:
            metric |= {"lower_value": p.low, "upper_value": p.high}
        out.setdefault(case_id, {})[measure_slug(lab, unit)] = metric
    return out


# --------------------------------------------------------------------------- pytest-benchmark


def pytest_benchmark(run: S.Run, pts: dict[tuple[str, str], S.Point]) -> dict[str, Any]:
    """The document ``pytest --benchmark-json`` writes, for the run's timings that kept their samples."""
    meta = run.meta
    settings = meta["settings"] if isinstance(meta.get("settings"), dict) else {}
    figures: dict[str, dict[str, Any]] = {}
    for (case_id, lab), p in pts.items():
        figures.setdefault(case_id, {})[f"{lab} ({p.record.get('unit')})"] = _number(p, str(p.record.get("unit")))
    benchmarks = []
    for (case_id, lab), p in pts.items():
        r = p.record
        samples = r.get("samples")
        if r.get("unit") != "ms" or not isinstance(samples, list) or not samples:
            continue
        params = {k: r.get(k) for k in ("backbone", "variant", "frames", "batch", "size", "schedule", "pruner",
                                        "recoverer", "device", "dtype", "runtime") if r.get(k) not in (None, "")}  # fmt: skip
        benchmarks.append({
            "group": lab,
            "name": f"{lab}[{case_id}]",
            "fullname": f"vptbench::{lab}[{case_id}]",
            "params": params,
            "param": case_id,
            "extra_info": {
                "case_id": case_id, "metric": lab, "run_id": run.run_id, "median_ms": p.value,
                "ci_low_s": p.low / 1e3 if p.low is not None else None,
                "ci_high_s": p.high / 1e3 if p.high is not None else None,
                "ci_level": r.get("ci_level"), "stable": p.stable, "unstable_reason": r.get("unstable_reason"),
                "figures": figures[case_id],
            },
            "options": {"disable_gc": False, "timer": str(r.get("timer") or r.get("method") or "perf_counter"),
                        "min_rounds": len(samples), "max_time": settings.get("max_time_s", 0),
                        "min_time": settings.get("min_time_s", 0), "warmup": r.get("warmup", 0)},
            "stats": stats([float(s) / 1e3 for s in samples]),
        })  # fmt: skip
    platform = str(meta.get("platform") or "")
    arch = next((t for t in platform.split("-") if t in ("x86_64", "aarch64", "arm64", "AMD64", "ppc64le")), "")
    return {
        "machine_info": {
            "node": str(meta.get("hostname") or ""), "processor": str(meta.get("cpu_model") or ""), "machine": arch,
            "python_compiler": "", "python_implementation": "CPython", "python_version": str(meta.get("python") or ""),
            "release": platform.split("-")[1] if platform.count("-") >= 1 else "", "system": platform.split("-")[0],
            "cpu": {"brand_raw": str(meta.get("cpu_model") or ""), "count": meta.get("cpu_count")},
            "torch": meta.get("torch"), "device_name": meta.get("device_name"), "threads": run.machine.threads,
        },
        "commit_info": {
            "id": run.commit or "unversioned", "time": meta.get("git_commit_date"), "author_time": None,
            "dirty": run.dirty, "project": "vptbench", "branch": "(unknown)",
        },
        "benchmarks": benchmarks,
        "datetime": run.start or run.date.isoformat(),
        "version": PYTEST_BENCHMARK_VERSION,
    }  # fmt: skip


def stats(data: list[float]) -> dict[str, Any]:
    """pytest-benchmark's ``Stats.as_dict()`` of ``data`` (s), with its quartile and outlier definitions."""
    xs = sorted(data)
    n = len(xs)
    mean = statistics.mean(xs)
    stddev = statistics.stdev(xs) if n > 1 else 0.0
    q1, q3 = _quartiles(xs)
    iqr = q3 - q1
    lo15, hi15 = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    hd = bisect_right(xs, hi15)
    iqr_out = sum(x < lo15 or x > hi15 for x in xs)
    sd_out = sum(x < mean - stddev or x > mean + stddev for x in xs)
    return {
        "min": xs[0], "max": xs[-1], "mean": mean, "stddev": stddev, "rounds": n, "median": statistics.median(xs),
        "iqr": iqr, "q1": q1, "q3": q3, "iqr_outliers": iqr_out, "stddev_outliers": sd_out,
        "outliers": f"{sd_out};{iqr_out}", "ld15iqr": xs[0] if n == 1 else xs[bisect_left(xs, lo15)],
        "hd15iqr": xs[0] if n == 1 else xs[-1] if hd == n else xs[hd], "ops": 1 / mean if mean else 0.0,
        "total": sum(xs), "data": list(data), "iterations": 1,
    }  # fmt: skip


def _quartiles(xs: list[float]) -> tuple[float, float]:
    """Q1 and Q3 as pytest-benchmark computes them (Wikipedia's methods 2 and 3)."""
    n = len(xs)
    if n == 1:
        return xs[0], xs[0]
    if n % 2 == 0:
        return statistics.median(xs[: n // 2]), statistics.median(xs[n // 2 :])
    k, q = n // 4, n % 4
    if q == 1:
        return 0.25 * xs[k - 1] + 0.75 * xs[k], 0.75 * xs[3 * k] + 0.25 * xs[3 * k + 1]
    return 0.75 * xs[k] + 0.25 * xs[k + 1], 0.25 * xs[3 * k + 1] + 0.75 * xs[3 * k + 2]
