"""The efficiency regression gate: compare a run with a committed baseline, case by case.

What is gated, and how (defaults; a TOML rules file overrides any tolerance, per metric and per
backbone):

- ``params`` and ``flops`` / ``flops_block`` are deterministic: exact, up to a relative 1e-6 for
  float noise. Any change, up or down, fails: a drop in FLOPs may mean a block stopped running.
- peak memory (``peak_rss``, ``peak_mem_*``) may grow by a relative tolerance (default 25 %).
- time is never gated as an absolute figure (a slower CI machine is not a regression). What is
  gated is the *speed-up* of each pruned variant over its own rectangle: the ``speedup`` record
  (method ``paired``: both alternated in one process, with a 95 % CI). It may fall by a relative
  tolerance (default 25 %) below the baseline's: a regression only when the whole CI lies below
  the band, i.e. ``ci_high < baseline x (1 - tolerance)``, so a noisy figure whose CI still
  reaches the band passes. A current figure marked ``stable: false`` is printed as a warning
  (``unstable = "fail"`` in the rules makes it a failure); it never passes silently. Runs without
  ``speedup`` records (older baselines) are compared through the ratio of the latency medians.
  A machine that is slower on every case by the same factor keeps every speed-up and passes.
- live video: ``stream_speedup`` (paired, like ``speedup``) and ``stream_max_fps`` are gated the
  same way, relative to the baseline through the current CI (for stream_max_fps the bisection's
  bracket: a regression when even the lowest rate found unsustainable lies below the band).
  Stream latency, real-time factor and dropped share are absolute times of one machine: not gated.
- precision (a case id names its precision, so a case is compared with the same precision in the
  baseline): ``precision_speedup`` (over fp32, paired) is gated as ``speedup`` is (default 25 %,
  CI-aware); ``pose_error`` (mm) may grow by 50 % (quantization error moves with the CPU's integer
  kernels), and always by :data:`POSE_ERROR_SLACK_MM` (fp32 runtimes' float noise).
- a case measured ``ok`` in the baseline that is ``oom``/``error`` now fails; a case missing from
  the current run fails (``missing = "warn"`` in the rules makes it a warning); new cases are listed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from ..core import numbers
from ..core.errors import UsageError
from ..core.results import MEASUREMENT_KEY, METRIC_UNITS, read_text

# metric -> (kind, default relative tolerance). "exact": |change| <= tol; "ceiling": increase <= tol;
# "floor": decrease <= tol.
DEFAULT_RULES: dict[str, tuple[str, float]] = {
    "params": ("exact", 0.0),
    "flops": ("exact", 1e-6),
    "flops_block": ("exact", 1e-6),
    "peak_rss": ("ceiling", 0.25),
    "peak_mem_alloc": ("ceiling", 0.25),
    "peak_mem_reserved": ("ceiling", 0.25),
    "peak_mem_device": ("ceiling", 0.25),
    "speedup": ("floor", 0.25),
    "stream_speedup": ("floor", 0.25),
    "stream_max_fps": ("floor", 0.25),
    "precision_speedup": ("floor", 0.25),
    "pose_error": ("ceiling", 0.5),
}
CI_GATED = ("speedup", "stream_speedup", "stream_max_fps", "precision_speedup")  # floors judged through the current CI
# pose_error of fp32 runtimes is float noise (1e-5 mm), which another machine's kernels change by
# any ratio: a rise within this many mm passes whatever the relative tolerance.
POSE_ERROR_SLACK_MM = 0.05
MISSING_CHOICES = ("fail", "warn")
UNSTABLE_CHOICES = ("warn", "fail")


@dataclass(frozen=True)
class Comparison:
    case_id: str
    metric: str  # with method/phase/block detail, e.g. "flops[paper]"
    baseline: float | None
    current: float | None
    tolerance: float
    kind: str
    ok: bool
    note: str = ""

    @property
    def change(self) -> float | None:
        if self.baseline in (None, 0) or self.current is None:
            return None
        return self.current / self.baseline - 1.0


@dataclass
class GateResult:
    comparisons: list[Comparison] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    missing_metrics: list[str] = field(default_factory=list)  # "case_id metric[...]" of cases the run has
    new: list[str] = field(default_factory=list)
    missing_fails: bool = True
    unstable: list[str] = field(default_factory=list)  # gated figures measured unstable, as warnings

    @property
    def failures(self) -> list[Comparison]:
        return [c for c in self.comparisons if not c.ok]

    @property
    def passed(self) -> bool:
        return not self.failures and not ((self.missing or self.missing_metrics) and self.missing_fails)


@dataclass(frozen=True)
class Rules:
    """Tolerances: ``tolerance(metric, backbone)`` looks in the backbone's table, then the global one."""

    tolerances: Mapping[str, float] = field(default_factory=dict)
    per_backbone: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    missing: str = "fail"
    unstable: str = "warn"

    def tolerance(self, metric: str, backbone: str) -> float:
        if metric in self.per_backbone.get(backbone, {}):
            return self.per_backbone[backbone][metric]
        return self.tolerances.get(metric, DEFAULT_RULES[metric][1])


def load_rules(path: str | Path | None) -> Rules:
    """Parse a rules file::

        missing = "warn"            # or "fail" (default)
        unstable = "fail"           # an unstable current speed-up fails (default "warn": a warning)
        [tolerances]                # relative tolerances by metric (see DEFAULT_RULES)
        peak_rss = 0.4
        speedup = 0.3
        [backbones.mhformer]        # per-backbone overrides
        speedup = 0.5
    """
    if path is None:
        return Rules()
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{p}: no such rules file")
    try:
        data = tomllib.loads(read_text(p))  # UsageError for a directory or a file that is not UTF-8
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{p}: malformed TOML ({e})") from None
    unknown = set(data) - {"tolerances", "backbones", "missing", "unstable"}
    if unknown:
        raise UsageError(
            f"{p}: unknown section {sorted(unknown)[0]!r}; allowed: tolerances, backbones, missing, unstable"
        )
    missing = data.get("missing", "fail")
    if missing not in MISSING_CHOICES:
        raise UsageError(f"{p}: missing = {missing!r}; choose from {', '.join(MISSING_CHOICES)}")
    unstable = data.get("unstable", "warn")
    if unstable not in UNSTABLE_CHOICES:
        raise UsageError(f"{p}: unstable = {unstable!r}; choose from {', '.join(UNSTABLE_CHOICES)}")

    def _table(table: Any, where: str) -> dict[str, float]:
        if not isinstance(table, dict):
            raise UsageError(f"{p}: [{where}] must be a table of metric = tolerance")
        out = {}
        for metric, tol in table.items():
            if metric not in DEFAULT_RULES:
                raise UsageError(f"{p}: [{where}] unknown metric {metric!r}; gated: {', '.join(DEFAULT_RULES)}")
            if isinstance(tol, bool) or not isinstance(tol, int | float) or not math.isfinite(tol) or tol < 0:
                raise UsageError(f"{p}: [{where}] {metric} must be a finite non-negative number, got {tol!r}")
            out[metric] = float(tol)
        return out

    per_backbone = data.get("backbones", {})
    if not isinstance(per_backbone, dict):
        raise UsageError(f"{p}: [backbones] must hold one table per backbone")
    return Rules(
        tolerances=_table(data.get("tolerances", {}), "tolerances"),
        per_backbone={b: _table(t, f"backbones.{b}") for b, t in per_backbone.items()},
        missing=missing,
        unstable=unstable,
    )


def check_backbones(rules: Rules, in_records: set[str], path: str | Path | None) -> None:
    """UsageError for a ``[backbones.NAME]`` table naming no known backbone (a misspelling is not ignored)."""
    import backbones

    known = set(backbones.names()) | in_records
    for name in rules.per_backbone:
        if name not in known:
            raise UsageError(f"{path}: [backbones.{name}]: unknown backbone {name!r}; known: {', '.join(sorted(known))}")


def _key(rec: Mapping[str, Any]) -> tuple[str, str]:
    """(case_id, metric label): the metric with what distinguishes its records within a case."""
    label = rec["metric"]
    detail = [str(rec[k]) for k in MEASUREMENT_KEY[2:] if rec.get(k) not in (None, "", "-")]
    if detail:
        label += "[" + ",".join(detail) + "]"
    return rec["case_id"], label


def _speedups(records: Iterable[Mapping[str, Any]]) -> dict[str, tuple[float, str]]:
    """case_id -> (rectangle latency / this case's latency, backbone), for every pruned case of a run.

    The fallback for runs without paired ``speedup`` records: medians taken at different times.
    """
    latency = {r["case_id"]: r for r in records if r["metric"] == "latency" and r["status"] == "ok" and r["value"]}

    def group(r: Mapping[str, Any]) -> tuple[Any, ...]:
        keys = ("backbone", "frames", "batch", "device", "dtype", "size")
        # never across runtimes or precisions
        return (*(r.get(k) for k in keys), r.get("runtime") or "eager", r.get("precision") or "fp32")

    rect = {group(r): r["value"] for r in latency.values() if r["variant"] == "rectangle"}
    out = {}
    for cid, r in latency.items():
        if r["variant"] != "rectangle" and group(r) in rect:
            out[cid] = (rect[group(r)] / r["value"], r["backbone"])
    return out


def _check(kind: str, base: float, cur: float, tol: float) -> bool:
    if base == 0:
        return cur == 0 if kind == "exact" else True
    change = cur / base - 1.0
    if kind == "exact":
        return abs(change) <= tol
    if kind == "ceiling":
        return change <= tol
    return change >= -tol


def compare(
    baseline: list[dict[str, Any]], current: list[dict[str, Any]], rules: Rules | None = None
) -> GateResult:
    """Compare two record sets (see the module docstring for what is gated)."""
    rules = rules or Rules()
    result = GateResult(missing_fails=rules.missing == "fail")
    base = {_key(r): r for r in baseline}
    cur = {_key(r): r for r in current}
    base_cases = {r["case_id"] for r in baseline}
    cur_cases = {r["case_id"] for r in current}
    result.missing = sorted(base_cases - cur_cases)
    result.new = sorted(cur_cases - base_cases)

    # A failed measurement may not know its method/phase: match it by (case, metric) as well.
    cur_failed = {(r["case_id"], r["metric"]): r for r in current if r["status"] != "ok"}
    for key, b in sorted(base.items()):
        c = cur.get(key) or cur_failed.get((b["case_id"], b["metric"]))
        if b["metric"] not in DEFAULT_RULES:
            continue
        if c is None:
            if b["case_id"] in cur_cases:  # the case ran but this measurement is gone: as bad as a missing case
                result.missing_metrics.append(f"{key[0]} {key[1]}")
            continue
        kind = DEFAULT_RULES[b["metric"]][0]
        tol = rules.tolerance(b["metric"], b["backbone"])
        if b["status"] == "ok" and c["status"] != "ok":
            result.comparisons.append(
                Comparison(key[0], key[1], b["value"], None, tol, kind, False, f"now {c['status']}: {c.get('error', '')}")
            )
            continue
        if b["status"] != "ok" or b["value"] is None or c["value"] is None:
            continue
        if b["metric"] in CI_GATED:
            result.comparisons.append(_compare_speedup(key, b, c, tol, rules, result))
            continue
        ok = _check(kind, float(b["value"]), float(c["value"]), tol)
        if b["metric"] == "pose_error":
            ok = ok or float(c["value"]) - float(b["value"]) <= POSE_ERROR_SLACK_MM
        result.comparisons.append(Comparison(key[0], key[1], b["value"], c["value"], tol, kind, ok))

    paired = {r["case_id"] for r in baseline if r["metric"] == "speedup"}
    base_speed, cur_speed = _speedups(baseline), _speedups(current)
    for cid, (b_speed, backbone) in sorted(base_speed.items()):
        if cid not in cur_speed or cid in paired:
            continue
        tol = rules.tolerance("speedup", backbone)
        c_speed = cur_speed[cid][0]
        ok = _check("floor", b_speed, c_speed, tol)
        result.comparisons.append(Comparison(cid, "speedup[latency]", b_speed, c_speed, tol, "floor", ok))
    return result


def _compare_speedup(
    key: tuple[str, str], b: Mapping[str, Any], c: Mapping[str, Any], tol: float, rules: Rules, result: GateResult
) -> Comparison:
    """A paired speed-up: a regression when its CI lies wholly below the band; unstable: a warning."""
    base, cur = float(b["value"]), float(c["value"])
    high = c.get("ci_high")
    high = cur if high is None else float(high)
    floor = base * (1.0 - tol)
    ok = high >= floor
    notes = [f"CI [{_fmt(c.get('ci_low'))}, {_fmt(c.get('ci_high'))}] below {_fmt(floor)}"] if not ok else []
    if c.get("stable") is False:
        why = c.get("unstable_reason") or "unstable"
        unit = METRIC_UNITS.get(str(b["metric"]), "x")
        result.unstable.append(f"{key[0]} {key[1]} = {_fmt(cur)}{'x' if unit == 'x' else ' ' + unit} {why}")
        if rules.unstable == "fail":
            ok = False
            notes.append(f"unstable: {why}")
    return Comparison(key[0], key[1], base, cur, tol, "floor", ok, "; ".join(notes))


def _fmt(x: float | None, metric: str = "") -> str:
    """A gated value: counts whole with separators, others to 4 significant digits (whole from 10,000 on)."""
    if x is None:
        return "-"
    if METRIC_UNITS.get(metric) == "count":
        return numbers.count(x)
    return f"{x:.4g}" if not math.isclose(x, round(x)) or abs(x) < 1e4 else f"{int(round(x)):,}"


def format_result(result: GateResult) -> str:
    """The failed comparisons as a table, then missing and new cases, then a one-line verdict."""
    lines: list[str] = []
    if result.failures:
        rows = [
            [c.case_id, c.metric, _fmt(c.baseline, c.metric), _fmt(c.current, c.metric),
             "-" if c.change is None else f"{c.change:+.2%}",
             f"{'±' if c.kind == 'exact' else '+' if c.kind == 'ceiling' else '-'}{c.tolerance:.2%}", c.note]
            for c in result.failures
        ]  # fmt: skip
        lines.append(tabulate(rows, ["case", "metric", "baseline", "current", "change", "tolerance", "note"]))
    if result.missing:
        word = "FAIL" if result.missing_fails else "warning"
        lines += [f"{word}: case missing from the current run: {cid}" for cid in result.missing]
    if result.missing_metrics:
        word = "FAIL" if result.missing_fails else "warning"
        lines += [f"{word}: measurement missing from the current run: {m}" for m in result.missing_metrics]
    if result.new:
        lines += [f"new case (not in the baseline): {cid}" for cid in result.new]
    lines += [f"warning: unstable figure (CI or load; rerun to confirm): {u}" for u in result.unstable]
    verdict = "PASS" if result.passed else "FAIL"
    lines.append(
        f"gate {verdict}: {len(result.comparisons)} comparisons, {len(result.failures)} regressions, "
        f"{len(result.missing) + len(result.missing_metrics)} missing, {len(result.new)} new cases, "
        f"{len(result.unstable)} unstable"
    )
    return "\n".join(lines)


def _matrix_text(records: list[dict[str, Any]], where: str) -> str:
    """'preset smoke, 12 cases: size tiny, T=27' (the preset from the run's meta.json, when there is one)."""
    from ..core.results import read_meta

    path = Path(where)
    meta = read_meta(path if path.is_dir() else path.parent) if path.exists() else {}
    sizes = sorted({str(r.get("size")) for r in records})
    frames = sorted({int(r.get("frames") or 0) for r in records})
    preset = f"preset {meta['preset']}, " if meta.get("preset") else ""
    n = len({r["case_id"] for r in records})
    return f"{preset}{n} cases: size {'/'.join(sizes)}, T={'/'.join(map(str, frames))}"


def check_same_matrix(
    baseline: list[dict[str, Any]], current: list[dict[str, Any]], baseline_path: str, current_path: str
) -> None:
    """UsageError when the two runs share no case: they measured different presets or matrices."""
    if {r["case_id"] for r in baseline} & {r["case_id"] for r in current}:
        return
    raise UsageError(
        f"the baseline and the current run share no case: {baseline_path} is {_matrix_text(baseline, baseline_path)}; "
        f"{current_path} is {_matrix_text(current, current_path)}. Gate a run of the baseline's preset and "
        "matrix (e.g. vptbench run --preset smoke for results/baselines/cpu-smoke.jsonl)"
    )
