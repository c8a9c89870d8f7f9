"""``vptbench history``: a project's runs across commits, a trend per (case, metric), the steps in them.

    h = build_history(["results/*"], metrics=["latency", "speedup"])
    print(steps_table(h))
    write_history(h, "reports/history")   # bench.analysis.history_page: index.html + history.csv

Runs are found, read, dated and grouped by machine as :mod:`bench.analysis.series` says; each
machine's series are searched for steps as :mod:`bench.analysis.steps` says. Nothing is judged
pass or fail: the command informs, ``vptbench gate`` decides.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from ..core import numbers
from ..core.errors import UsageError
from ..core.results import METRIC_UNITS
from . import series as S
from .steps import Step, detect


@dataclass(frozen=True)
class Found:
    """A detected step: in which series, and the run where the new level starts."""

    series: S.Series
    step: Step
    run: S.Run
    sustain: int = 2

    @property
    def stable(self) -> bool | None:
        """For timings: whether the runs on both sides of the step were timed stable (False: a busy machine may be why)."""
        before = [p for p in self.series.points[: self.step.index] if p is not None][-1:]
        window = [p for p in self.series.points[self.step.index :] if p is not None][: self.sustain]
        flags = [p.stable for p in before + window if p.stable is not None]
        return all(flags) if flags else None

    @property
    def worse(self) -> bool:
        change = self.step.change or 0.0
        return change < 0 if S.bigger_is_better(self.series.metric) else change > 0


@dataclass
class History:
    runs: list[S.Run]
    machines: dict[S.Machine, list[S.Run]]
    series: dict[S.Machine, list[S.Series]]
    steps: list[Found]
    metrics: list[str]
    sustain: int
    # (machine, run index, case_id, label) -> the record that failed there (error, oom, skipped)
    failed: dict[tuple[S.Machine, int, str, str], dict[str, Any]] = field(default_factory=dict)

    def steps_of(self, s: S.Series) -> list[Found]:
        return [f for f in self.steps if f.series is s]


def build_history(
    args: Sequence[str],
    *,
    backbones: Sequence[str] | None = None,
    variants: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    machine: str | None = None,
    sustain: int = 2,
    repo: Path | None = None,
) -> History:
    """Read the runs ``args`` name (directories or globs), keep what the filters ask for, find the steps."""
    if sustain < 1:
        raise UsageError(f"--sustain must be >= 1, got {sustain}")
    unknown = [m for m in metrics or () if m not in METRIC_UNITS]
    if unknown:
        raise UsageError(f"--metrics: unknown metric {unknown[0]!r}; known: {', '.join(METRIC_UNITS)}")
    wanted = list(metrics or S.DEFAULT_METRICS)
    runs = S.load_runs(S.find_runs(args), repo)
    for run in runs:  # every metric stays: an FPS point takes its CI from the case's latency
        run.records = [r for r in run.records if (not backbones or r.get("backbone") in backbones)
                       and (not variants or r.get("variant") in variants)]  # fmt: skip
    groups = S.by_machine(runs)
    if machine:
        groups = {m: rs for m, rs in groups.items() if m.id.startswith(machine) or machine.lower() in m.label.lower()}
        if not groups:
            known = "; ".join(f"{m.id} ({m.label})" for m in S.by_machine(runs))
            raise UsageError(f"--machine {machine!r} matches none of the runs' machines: {known}")
    h = History([r for rs in groups.values() for r in rs], groups, {}, [], wanted, sustain)
    for m, rs in groups.items():
        h.series[m] = S.series(rs, wanted)
        for s in h.series[m]:
            found = detect(s.points, S.kind(s.metric), sustain=sustain)
            h.steps += [Found(s, st, rs[st.index], sustain) for st in found]
        for i, run in enumerate(rs):
            for r in run.records:
                if r.get("status") != "ok" and r.get("metric") in wanted:
                    h.failed[(m, i, r["case_id"], S.label(r))] = r
    if not any(h.series.values()):
        what = ", ".join(f"--{k} {','.join(v)}" for k, v in (("backbones", backbones), ("variants", variants),
                                                              ("metrics", metrics)) if v)  # fmt: skip
        raise UsageError(f"the {len(h.runs)} run(s) hold no ok record of {what or ', '.join(wanted)}")
    h.steps.sort(key=lambda f: (f.run.date, f.series.case_id, f.series.label))
    return h


def _change(f: Found) -> str:
    change = f.step.change
    text = f"{change:+.1%}" if change is not None else "from 0"
    return f"{text} ({'worse' if f.worse else 'better'})"


def _stable(f: Found) -> str:
    return {True: "yes", False: "no", None: ""}[f.stable]


def _table(found: Sequence[Found], several: bool) -> str:
    rows = []
    for f in found:
        s, run = f.series, f.run
        rows.append([*([s.machine.id] if several else []), s.case_id, s.label, _change(f),
                     f"{numbers.quantity(f.step.before, s.unit)} -> {numbers.quantity(f.step.after, s.unit)}",
                     run.run_id, run.short, run.date.date().isoformat(), _stable(f)])  # fmt: skip
    headers = [*(["machine"] if several else []), "case", "metric", "change", "level", "first run", "commit", "date",
               "timed stable"]  # fmt: skip
    return tabulate(rows, headers=headers, disable_numparse=True)


def steps_table(h: History) -> str:
    """The detected steps as the command prints them (oldest first), then the unconfirmed ones."""
    n_series = sum(len(v) for v in h.series.values())
    several = len(h.machines) > 1
    confirmed = [f for f in h.steps if f.step.confirmed]
    pending = [f for f in h.steps if not f.step.confirmed]
    where = f"in {n_series} series over {len(h.runs)} run(s)"
    text = f"{len(confirmed)} step(s) {where}" + (":\n\n" + _table(confirmed, several) if confirmed else "")
    if pending:
        text += (f"\n\n{len(pending)} possible step(s) in the latest run(s), not yet confirmed (the next run will "
                 f"say):\n\n{_table(pending, several)}")  # fmt: skip
    return text


CSV_FIELDS = ("machine_id", "machine", "run_id", "commit", "dirty", "date", "date_source", "start_time", "case_id",
              "backbone", "variant", "metric", "label", "unit", "value", "ci_low", "ci_high", "stable", "status",
              "error", "step_change", "step_confirmed")  # fmt: skip


def history_csv(h: History) -> str:
    """One row per run x case x metric: the figure, its CI, and the step that starts there, if any."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for m, rs in h.machines.items():
        for s in h.series.get(m, []):
            starts = {f.step.index: f.step for f in h.steps_of(s)}
            for i, run in enumerate(rs):
                p = s.points[i]
                rec = p.record if p is not None else h.failed.get((m, i, s.case_id, s.label))
                if rec is None:
                    continue
                st = starts.get(i)
                w.writerow({
                    "machine_id": m.id, "machine": m.label, "run_id": run.run_id, "commit": run.commit,
                    "dirty": run.dirty, "date": run.date.isoformat(), "date_source": run.date_source,
                    "start_time": run.start, "case_id": s.case_id, "backbone": rec.get("backbone", ""),
                    "variant": rec.get("variant", ""), "metric": s.metric, "label": s.label, "unit": s.unit,
                    "value": "" if p is None else (int(p.value) if s.unit == "count" else p.value),
                    "ci_low": "" if p is None or p.low is None else p.low,
                    "ci_high": "" if p is None or p.high is None else p.high,
                    "stable": "" if p is None or p.stable is None else p.stable,
                    "status": rec.get("status", ""), "error": rec.get("error", ""),
                    "step_change": "" if st is None or st.change is None else st.change,
                    "step_confirmed": "" if st is None else st.confirmed,
                })  # fmt: skip
    return buf.getvalue()
