"""The sweep's accuracy searches: which schedules are trained, for how many steps; their MPJPE.

Accuracy in the loop (``--accuracy smoke|full``) trains and evaluates schedules with the
accuracy machinery (:class:`bench.accuracy.job.AccuracyJob`, the protocol of ``vptbench accuracy``),
in sub-runs under ``<sweep>/accuracy``. Searches, with their cost in training steps (n
schedules, ``--steps S``):

- ``grid``: every schedule for S steps: n x S.
- ``halving`` (successive halving, ``--rungs R``): every schedule for S / 2^(R-1) steps, the
  better-ranked half (Pareto rank over the objectives, then MPJPE) for twice as many, ..., the
  last rung's ceil(n / 2^(R-1)) for S. Each rung trains from scratch with its own learning-rate
  schedule (the protocol of ``vptbench accuracy``; a rung's MPJPE is that of a finished run of
  that length), so every rung costs about n x S / 2^(R-1): R x n x S / 2^(R-1) in all, 3/4 of
  the grid's cost at R = 3, 1/2 at R = 4. Only last-rung schedules, trained for S, have an MPJPE
  on the front; the others are shown with the MPJPE of the rung where they stopped.
- ``optuna`` (``--trials N``, the ``search`` extra): N trials of optuna's multi-objective TPE over
  the tree of the grid (stages, then each block and keep, then pruner and recoverer), every
  proposal a valid schedule; a proposal already trained reuses its result. At most N x S steps.

The references are trained for S steps in every search. With ``--budget-gflops``/``--budget-ms``
only the schedules within the budget are trained.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.case import Case
from ..core.errors import UsageError
from ..core.results import read_meta, read_records
from ..run import executors
from .front import Budget, mark_front
from .grid import Candidate

SEARCHES = ("grid", "halving", "optuna")
ACCURACY_DIR = "accuracy"


@dataclass
class AccuracyPlan:
    """How the accuracy phase trains: the preset, the final budget, the job and executor arguments."""

    preset: Any  # bench.accuracy.job.Preset
    steps: int
    seed: int
    loader: Callable[[], Any]
    args: argparse.Namespace  # executor arguments (workers chosen for training)
    resume: bool
    root: Path  # <sweep>/accuracy
    run_id: str
    progress: bool = True

    def job(self, steps: int) -> Any:
        from ..accuracy.job import AccuracyJob

        return AccuracyJob(self.loader, steps=steps, seed=self.seed, lr=self.preset.lr,
                                     weight_decay=self.preset.weight_decay, threads=self.preset.threads,
                                     progress=getattr(self.args, "executor", None) == "inline")  # fmt: skip

    def case(self, c: Candidate) -> Case:
        """The candidate's training case: the accuracy preset's clips per step instead of the sweep's batch."""
        return replace(c.case, batch=self.preset.batch_for(c.case.pipeline)).resolve()

    def train(self, cands: Sequence[Candidate], steps: int, sub: str, *, resume: bool | None = None
              ) -> dict[str, dict[str, Any]]:  # fmt: skip
        """Train and evaluate ``cands`` for ``steps`` into ``root/sub``; candidate case id -> result.

        ``resume`` (default: the sweep's): continue ``root/sub``; otherwise it must not hold a run.
        """
        from ..run.store import ensure_fresh

        resume = self.resume if resume is None else resume
        if not resume:
            ensure_fresh(self.root / sub)
        trained = read_meta(self.root / sub).get("steps")
        if trained is not None and trained != steps:  # its finished cases would pass for this budget's
            raise UsageError(f"{self.root / sub} trained for {trained} steps where this sweep asks {steps}; resume "
                             "with the same --steps and --rungs, or choose another --out")  # fmt: skip
        if cands:
            meta = {"kind": "accuracy", "sweep": self.run_id, "preset": self.preset.name, "steps": steps,
                    "seed": self.seed, "lr": self.preset.lr, "threads": self.preset.threads}  # fmt: skip
            executors.run_cases([self.case(c) for c in cands], self.root / sub, run_id=f"{self.run_id}-{sub}",
                                resume=resume, args=self.args, job=self.job(steps), meta=meta,
                                progress=self.progress)  # fmt: skip
        return self.read(cands, steps, sub)

    def read(self, cands: Sequence[Candidate], steps: int, sub: str) -> dict[str, dict[str, Any]]:
        """The results of ``cands`` already in ``root/sub`` (see :func:`read_accuracy`)."""
        return read_accuracy(self.root / sub, {self.case(c).case_id: c.case.case_id for c in cands}, steps)


def read_accuracy(run_dir: Path, by_acc: dict[str, str], steps: int) -> dict[str, dict[str, Any]]:
    """Candidate case id -> ``{"mpjpe", "steps"}`` from the mpjpe records of an accuracy run (NaN if failed)."""
    out: dict[str, dict[str, Any]] = {}
    if not (run_dir / "records.jsonl").is_file():
        return out
    for r in read_records(run_dir):
        if r["metric"] == "mpjpe" and r["case_id"] in by_acc:
            value = float(r["value"]) if r["status"] == "ok" and r["value"] is not None else math.nan
            out[by_acc[r["case_id"]]] = {"mpjpe": value, "steps": steps}
    return out


def rung_budgets(n: int, steps: int, rungs: int) -> list[tuple[int, int]]:
    """(schedules, steps) of each successive-halving rung: halve the schedules, double the steps."""
    if rungs < 1:
        raise UsageError(f"--rungs must be >= 1, got {rungs}")
    return [(math.ceil(n / 2**r), max(1, math.ceil(steps / 2 ** (rungs - 1 - r)))) for r in range(rungs)]


def halving_keep(table: pd.DataFrame, columns: Sequence[str], keep: int) -> list[str]:
    """The case ids of the ``keep`` best rows: Pareto rank over ``columns``, then MPJPE; failures last."""
    ranked = mark_front(table, columns)
    ranked["_r"] = ranked["pareto_rank"].where(ranked["pareto_rank"] >= 0, np.iinfo(np.int64).max)
    ranked = ranked.sort_values(["_r", "mpjpe_mm", "case_id"], na_position="last")
    return list(ranked["case_id"][:keep])


def search_grid(plan: AccuracyPlan, cands: Sequence[Candidate], refs: Sequence[Candidate]) -> dict[str, dict[str, Any]]:
    """Every schedule (and reference) for the full budget."""
    res = plan.train([*cands, *refs], plan.steps, "grid")
    return {k: v | {"final": True} for k, v in res.items()}


def search_halving(plan: AccuracyPlan, cands: Sequence[Candidate], refs: Sequence[Candidate], rungs: int,
                   cost_cols: Sequence[str], table: pd.DataFrame) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Successive halving over ``cands`` (the module docstring); references join the last rung."""
    budgets = rung_budgets(len(cands), plan.steps, rungs)
    alive = list(cands)
    results: dict[str, dict[str, Any]] = {}
    for r, (_, steps) in enumerate(budgets):
        last = r == len(budgets) - 1
        got = plan.train([*alive, *refs] if last else alive, steps, f"rung-{r + 1}")
        for k, v in got.items():
            results[k] = v | {"final": last, "rung": r + 1}
        if last:
            break
        sub = table[table["case_id"].isin([c.case.case_id for c in alive])].copy()
        sub["mpjpe_mm"] = [got.get(k, {}).get("mpjpe", math.nan) for k in sub["case_id"]]
        keep = set(halving_keep(sub, [*cost_cols, "mpjpe_mm"], budgets[r + 1][0]))
        alive = [c for c in alive if c.case.case_id in keep]
        if plan.progress:
            print(f"rung {r + 1}: {len(got)} trained for {steps} steps; {len(alive)} go on", file=sys.stderr)
    return results


class ScheduleTree:
    """The grid as a tree for optuna: stages, then each stage's block and keep, then pruner, recoverer.

    Every node's choices are those that lead to at least one valid schedule, and each node has its
    own parameter name (its path), so every distribution is fixed and every proposal is valid.
    """

    def __init__(self, cands: Sequence[Candidate]):
        self.paths: dict[tuple[str, ...], Candidate] = {self.path(c): c for c in cands}

    @staticmethod
    def path(c: Candidate) -> tuple[str, ...]:
        steps = [f"stages={len(c.stages)}"]
        for (block, _), label in zip(c.stages, c.keeps, strict=True):
            steps += [f"block={block}", f"keep={label}"]
        return (*steps, f"pruner={'+'.join(c.pruner_plan)}", f"recoverer={c.case.recoverer or '-'}")

    def _choices(self, prefix: tuple[str, ...]) -> list[str]:
        n = len(prefix)
        return sorted({p[n] for p in self.paths if p[:n] == prefix}, key=_natural)

    def suggest(self, trial: Any) -> Candidate:
        """Walk the tree with ``trial.suggest_categorical`` (single-choice nodes are not asked)."""
        prefix: tuple[str, ...] = ()
        while prefix not in self.paths:
            choices = self._choices(prefix)
            pick = choices[0] if len(choices) == 1 else trial.suggest_categorical(self.name(prefix, choices), choices)
            prefix = (*prefix, pick)
        return self.paths[prefix]

    @staticmethod
    def name(prefix: tuple[str, ...], choices: Sequence[str]) -> str:
        kind = choices[0].split("=")[0]
        return "|".join([*prefix, kind]) if prefix else kind

    def params(self, c: Candidate) -> tuple[dict[str, str], dict[str, Any]]:
        """The params and distributions optuna would have drawn for ``c`` (to replay a resumed sweep)."""
        from optuna.distributions import CategoricalDistribution

        params: dict[str, str] = {}
        dists: dict[str, Any] = {}
        full = self.path(c)
        for i, pick in enumerate(full):
            choices = self._choices(full[:i])
            if len(choices) > 1:
                name = self.name(full[:i], choices)
                params[name], dists[name] = pick, CategoricalDistribution(choices)
        return params, dists


def _natural(s: str) -> tuple[Any, ...]:
    kind, _, value = s.partition("=")
    try:
        return (kind, 0, float(Fraction(value)), value)
    except (ValueError, ZeroDivisionError):
        return (kind, 1, 0.0, value)


def require_optuna() -> Any:
    """The optuna module, or UsageError naming the extra that installs it."""
    try:
        import optuna
    except ImportError:
        raise UsageError("--search optuna needs optuna: pip install 'vptbench[search]'") from None
    return optuna


def search_optuna(plan: AccuracyPlan, cands: Sequence[Candidate], refs: Sequence[Candidate], trials: int,
                  cost_cols: Sequence[str], table: pd.DataFrame, workers: int) -> dict[str, dict[str, Any]]:  # fmt: skip
    """``trials`` optuna trials (multi-objective TPE over cost and MPJPE), ``workers`` trained at once."""
    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tree = ScheduleTree(cands)
    costs = table.set_index("case_id")[list(cost_cols)]
    study = optuna.create_study(directions=["minimize"] * (len(cost_cols) + 1),
                                sampler=optuna.samplers.TPESampler(seed=plan.seed))  # fmt: skip
    if not plan.resume:
        plan.train([], plan.steps, "optuna", resume=False)  # only checks that the directory holds no run
    results = {k: v | {"final": True} for k, v in plan.train(refs, plan.steps, "optuna", resume=True).items()}

    def values(c: Candidate) -> list[float] | None:
        got = results.get(c.case.case_id)
        vals = [*costs.loc[c.case.case_id].tolist(), got["mpjpe"] if got else math.nan]
        return None if any(math.isnan(v) for v in vals) else vals

    # A resumed sweep: the schedules trained before become trials again.
    trained = plan.read(cands, plan.steps, "optuna") if plan.resume else {}
    for c in cands:
        if c.case.case_id not in trained:
            continue
        results[c.case.case_id] = trained[c.case.case_id] | {"final": True}
        params, dists = tree.params(c)
        vals = values(c)
        state = optuna.trial.TrialState.COMPLETE if vals else optuna.trial.TrialState.FAIL
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, values=vals, state=state))
    asked = len(trained)
    untried = {c.case.case_id for c in cands} - set(results)
    while asked < trials and untried:
        batch: list[tuple[Any, Candidate]] = []
        while len(batch) < max(1, workers) and asked < trials:
            t = study.ask()
            batch.append((t, tree.suggest(t)))
            asked += 1
        new = list({c.case.case_id: c for _, c in batch if c.case.case_id not in results}.values())
        for k, v in plan.train(new, plan.steps, "optuna", resume=True).items():
            results[k] = v | {"final": True}
        untried -= set(results)
        for t, c in batch:
            vals = values(c)
            if vals is None:
                study.tell(t, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(t, vals)
    return results


def run_accuracy(args: argparse.Namespace, plan: AccuracyPlan, everything: Sequence[Candidate], table: pd.DataFrame,
                 budget: Budget | None, cost_cols: Sequence[str]) -> dict[str, dict[str, Any]]:  # fmt: skip
    """The accuracy search of ``--search`` over the grid's schedules (within the budget); references at full budget."""
    refs = [c for c in everything if c.reference]
    train = [c for c in everything if c.keeps and not c.reference]
    if budget:
        inside = set(table.loc[budget.within(table), "case_id"])
        train = [c for c in train if c.case.case_id in inside]
        print(f"accuracy: {len(train)} schedule(s) within {budget.describe()}", file=sys.stderr)
    print("accuracy: " + search_cost(args.search, len(train), len(refs), plan.steps, args.rungs, args.trials),
          file=sys.stderr)  # fmt: skip
    if args.search == "halving":
        return search_halving(plan, train, refs, args.rungs, cost_cols, table)
    if args.search == "optuna":
        return search_optuna(plan, train, refs, args.trials, cost_cols, table, plan.args.workers or 1)
    return search_grid(plan, train, refs)


def search_cost(search: str, n: int, refs: int, steps: int, rungs: int, trials: int | None) -> str:
    """What the accuracy search will cost, in training steps (printed before it starts)."""
    ref = f" + {refs} reference(s) x {steps}" if refs else ""
    if search == "halving":
        budgets = rung_budgets(n, steps, rungs)
        total = sum(k * s for k, s in budgets) + refs * steps
        return (f"successive halving, {len(budgets)} rung(s): "
                + " + ".join(f"{k} x {s}" for k, s in budgets) + ref
                + f" = {total} training steps (grid: {n * steps + refs * steps})")  # fmt: skip
    if search == "optuna":
        return f"optuna, {trials} trial(s) x {steps} steps{ref}: at most {(trials or 0) * steps + refs * steps} training steps"
    return f"grid: {n} x {steps}{ref} = {(n + refs) * steps} training steps"
