"""Many runs of one project read side by side: which runs, in what order, on which machine.

What ``vptbench history`` and ``vptbench export`` read. Only stored files are read
(``records.jsonl``, ``meta.json``), plus ``git`` for a commit's date when the checkout knows it:

- **which runs**: every argument is a run directory (it holds ``records.jsonl``), a directory of
  run directories (a history directory written by ``run --history``), or a glob of either
  (:func:`find_runs`). Records are read with :func:`bench.core.results.read_records`, which
  refuses a malformed line or a measurement held twice, naming file:line.
- **in what order**: by the date of the run's commit (``meta.json``'s ``git_commit_date``; for
  older runs ``git show -s --format=%cI COMMIT`` in the current checkout), else by the run's start
  time; ties by start time (:func:`order_key`). The committer date, not the author date: it is
  the order in which commits landed on the branch.
- **on which machine** (:class:`Machine`): timings of different machines are never put on one
  line; a machine is its host name, CPU model, core count, GPU and the torch thread count.

Each (case, metric) measured is one series per machine (:func:`series`); a point is the record's
median, its 95 % CI and its ``stable`` flag. FPS and clips/s records carry no CI of their own:
theirs is the latency's, inverted (both come from the same samples).
"""

from __future__ import annotations

import datetime as _dt
import glob
import hashlib
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from ..core import numbers
from ..core.errors import UsageError
from ..core.results import METRIC_UNITS, read_meta, read_records

# What `history` shows unless --metrics says otherwise: what a team tracks across commits.
# Per-block and per-part figures (flops_block, time_by_part, ...) are there on request, and so is
# FPS: it is the latency inverted (frames per forward / latency), so its chart and its steps would
# repeat the latency's. `export` adds it: dashboards show the papers' headline figure.
DEFAULT_METRICS = (
    "params", "flops", "flops_train", "latency", "train_step", "speedup", "peak_rss", "peak_mem_alloc",
    "peak_mem_reserved", "peak_mem_device", "peak_mem_activations", "stream_latency", "stream_max_fps",
)  # fmt: skip
EXPORT_METRICS = (*DEFAULT_METRICS[:4], "fps", *DEFAULT_METRICS[4:])
# Where a larger figure is the better one; every other metric (time, memory, FLOPs, error) is better smaller.
BIGGER_IS_BETTER = frozenset({"fps", "clips_per_s", "speedup", "achieved_gflops", "machine_peak_gflops", "stream_max_fps"})
# How a change of each metric is judged (bench.analysis.steps): "exact" deterministic counts,
# "ci" timed figures with a confidence interval, "relative" everything else (memory, ...).
EXACT = frozenset({"params", "flops", "flops_block", "flops_train"})
TIMED = frozenset({"latency", "fps", "clips_per_s", "train_step", "speedup", "time_by_part", "stream_latency",
                   "stream_rtf", "stream_max_fps", "compile_s"})  # fmt: skip
# A method that says nothing a reader needs in a series' name (the timer, the only way a metric is made).
_QUIET_METHODS = frozenset({"-", "", "timeit", "cuda_event", "paired", "process", "torch.cuda", "nvml"})
_DETAIL = ("method", "phase", "block", "part", "step")


def kind(metric: str) -> str:
    """How a change of ``metric`` is judged: ``exact``, ``ci`` or ``relative``."""
    return "exact" if metric in EXACT else "ci" if metric in TIMED else "relative"


def bigger_is_better(metric: str) -> bool:
    return metric in BIGGER_IS_BETTER


def label(rec: dict[str, Any]) -> str:
    """The metric with what tells its records apart within a case: ``flops[paper]``, ``peak_rss[train]``."""
    detail = [str(rec[k]) for k in _DETAIL if rec.get(k) is not None and str(rec[k]) not in _QUIET_METHODS]
    return rec["metric"] + (f"[{','.join(detail)}]" if detail else "")


@dataclass(frozen=True)
class Machine:
    """What makes timings comparable: the same host, CPU, GPU and thread count."""

    hostname: str
    cpu_model: str
    cpu_count: int | None
    device: str | None
    threads: int | None

    @property
    def id(self) -> str:
        """A short stable name of the fingerprint (what ``--machine`` also matches)."""
        return hashlib.sha1(repr(self).encode()).hexdigest()[:6]

    @property
    def label(self) -> str:
        parts = [self.hostname or "unknown host", self.device or self.cpu_model or "unknown CPU"]
        if self.cpu_count:
            parts.append(f"{self.cpu_count} cores")
        if self.threads:
            parts.append(f"{self.threads} thread{'s' if self.threads != 1 else ''}")
        return " · ".join(parts)

    @classmethod
    def of(cls, meta: dict[str, Any]) -> Machine:
        settings = meta["settings"] if isinstance(meta.get("settings"), dict) else {}
        speed = settings["speed"] if isinstance(settings.get("speed"), dict) else {}
        threads = speed.get("threads") or meta.get("threads")  # the run's torch threads, else the parent's
        return cls(
            hostname=str(meta.get("hostname") or ""),
            cpu_model=str(meta.get("cpu_model") or ""),
            cpu_count=meta.get("cpu_count") if isinstance(meta.get("cpu_count"), int) else None,
            device=str(meta["device_name"]) if meta.get("device_name") else None,
            threads=threads if isinstance(threads, int) else None,
        )


@dataclass
class Run:
    """One run directory: its records, environment, commit and place in time."""

    path: Path
    run_id: str
    records: list[dict[str, Any]]
    meta: dict[str, Any]
    commit: str
    dirty: bool
    date: _dt.datetime
    date_source: str  # "commit" (the commit's date), "start" (the run's start time) or "file" (records' mtime)
    machine: Machine = field(init=False)

    def __post_init__(self) -> None:
        self.machine = Machine.of(self.meta)

    @property
    def short(self) -> str:
        """The commit as the x axis shows it: 7 hex digits, ``+`` when the tree was dirty; else the run id."""
        return (self.commit[:7] + ("+" if self.dirty else "")) if self.commit else self.run_id

    @property
    def start(self) -> str:
        return str(self.meta.get("start_time") or "")


def find_runs(args: Sequence[str]) -> list[Path]:
    """The run directories that ``args`` name, in the order given, each once.

    A directory must be a run or hold runs (UsageError otherwise); a glob must match at least
    one run, and what else it matches (``results/*`` also matches ``results/baselines``) is
    left out with a note on stderr.
    """
    found: list[Path] = []
    for arg in args:
        if not glob.has_magic(arg) and not Path(arg).exists():
            raise UsageError(f"{arg}: no such run directory")
        matches = sorted(glob.glob(arg)) if glob.has_magic(arg) else [arg]
        if not matches:
            raise UsageError(f"{arg}: matches nothing")
        runs, skipped = [], []
        for m in map(Path, matches):
            if m.name == "records.jsonl" and m.is_file():
                m = m.parent
            if (m / "records.jsonl").is_file():
                runs.append(m)
            elif m.is_dir() and (held := sorted(p.parent for p in m.glob("*/records.jsonl"))):
                runs.extend(held)
            else:
                skipped.append(m)
        if skipped and not glob.has_magic(arg):
            raise UsageError(f"{arg}: not a run directory (no records.jsonl in it or in its subdirectories)")
        if not runs:
            raise UsageError(f"{arg}: matches no run directory (none holds a records.jsonl)")
        if skipped:
            print(f"note: {arg}: left out {len(skipped)} match(es) that are not runs, e.g. {skipped[0]}", file=sys.stderr)
        found.extend(runs)
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def load_run(path: Path, repo: Path | None = None) -> Run:
    """Read one run directory (records checked) and date it (see the module's docstring)."""
    records = read_records(path)
    meta = read_meta(path)
    ids = [r.get("run_id") for r in records if r.get("run_id")]
    run_id = str(meta.get("run_id") or (ids[0] if ids else path.name))
    commit = str(meta.get("git_commit") or "")
    date, source = _parse_date(meta.get("git_commit_date")), "commit"
    if date is None and re.fullmatch(r"[0-9a-f]{7,64}", commit):  # a hash, never an option for git
        date = commit_date(commit, str((repo or Path.cwd()).resolve()))
    if date is None:
        date, source = _parse_date(meta.get("start_time")), "start"
    if date is None:
        mtime = (path / "records.jsonl").stat().st_mtime
        date, source = _dt.datetime.fromtimestamp(mtime, _dt.timezone.utc), "file"
    return Run(path, run_id, records, meta, commit, bool(meta.get("git_dirty")), date, source)


def order_key(run: Run) -> tuple[_dt.datetime, _dt.datetime, str]:
    start = _parse_date(run.meta.get("start_time")) or run.date
    return run.date, start, run.run_id


def load_runs(paths: Iterable[Path], repo: Path | None = None) -> list[Run]:
    """The runs at ``paths`` in time order; the same run found twice (a copy in a history
    directory beside the original) is kept once: the copy with more records."""
    kept: dict[tuple[str, str, str], Run] = {}
    for p in paths:
        run = load_run(p, repo)
        key = (run.run_id, run.start, run.machine.hostname)
        if key in kept:
            other = kept[key]
            keep = run if len(run.records) > len(other.records) else other
            print(f"note: {other.path} and {run.path} hold the same run ({run.run_id}); reading {keep.path}",
                  file=sys.stderr)  # fmt: skip
            kept[key] = keep
        else:
            kept[key] = run
    return sorted(kept.values(), key=order_key)


def _parse_date(text: Any) -> _dt.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        date = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return date if date.tzinfo else date.replace(tzinfo=_dt.timezone.utc)


@cache
def commit_date(commit: str, repo: str) -> _dt.datetime | None:
    """The committer date of ``commit`` in the git checkout ``repo``; None when git does not know it."""
    try:
        out = subprocess.run(["git", "-C", repo, "show", "-s", "--format=%cI", commit, "--"],
                             capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return _parse_date(out.stdout.strip()) if out.returncode == 0 else None


# --------------------------------------------------------------------------- points and series


@dataclass(frozen=True)
class Point:
    """One run's figure of one (case, metric): the median and, for timings, its 95 % CI."""

    value: float
    low: float | None = None
    high: float | None = None
    stable: bool | None = None
    record: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def points(records: Sequence[dict[str, Any]], metrics: Iterable[str]) -> dict[tuple[str, str], Point]:
    """(case_id, label) -> Point for every ok record of ``metrics`` with a finite value."""
    wanted = set(metrics)
    latency = {r["case_id"]: r for r in records if r.get("metric") == "latency" and r.get("status") == "ok"
               and numbers.finite(r.get("value"))}  # fmt: skip
    out: dict[tuple[str, str], Point] = {}
    for r in records:
        if r.get("metric") not in wanted or r.get("status") != "ok" or not numbers.finite(r.get("value")):
            continue
        low, high, stable = r.get("ci_low"), r.get("ci_high"), r.get("stable")
        lat = latency.get(r["case_id"])
        if r["metric"] in ("fps", "clips_per_s") and not numbers.finite(low) and lat is not None:
            low, high, stable = _inverted(r["value"], lat), _inverted(r["value"], lat, high=True), lat.get("stable")
        ok = numbers.finite(low) and numbers.finite(high)
        out[(r["case_id"], label(r))] = Point(
            float(r["value"]), float(low) if ok else None, float(high) if ok else None,  # type: ignore[arg-type]
            stable if isinstance(stable, bool) else None, r,
        )  # fmt: skip
    return out


def _inverted(value: float, lat: dict[str, Any], high: bool = False) -> float | None:
    """A throughput's CI bound from its latency's: value x median / (ci_high, or ci_low for the upper bound)."""
    bound = lat.get("ci_low" if high else "ci_high")
    return value * lat["value"] / bound if numbers.finite(bound) and bound > 0 else None


@dataclass
class Series:
    """One (machine, case, metric) across the machine's runs; ``points[i]`` is run i's (None: not measured)."""

    machine: Machine
    case_id: str
    label: str
    metric: str
    unit: str
    points: list[Point | None]


def series(runs: Sequence[Run], metrics: Iterable[str]) -> list[Series]:
    """Every (case, metric) of ``runs`` (one machine's, in order) as a series, in first-seen order."""
    metrics = list(metrics)
    per_run = [points(run.records, metrics) for run in runs]
    keys = list(dict.fromkeys(k for pts in per_run for k in pts))
    out = []
    for case_id, lab in keys:
        line = [pts.get((case_id, lab)) for pts in per_run]
        first = next(p for p in line if p is not None)
        metric = str(first.record["metric"])
        unit = str(first.record.get("unit") or METRIC_UNITS.get(metric, ""))
        out.append(Series(runs[0].machine, case_id, lab, metric, unit, line))
    return out


def by_machine(runs: Sequence[Run]) -> dict[Machine, list[Run]]:
    """The runs grouped by machine, each group in time order, the machines in order of their first run."""
    groups: dict[Machine, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.machine, []).append(run)
    return groups
