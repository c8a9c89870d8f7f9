"""Schedule search (``vptbench sweep BACKBONE``): every pruning schedule of a grid, its cost, its accuracy.

A *grid* (:class:`Grid`) names the numbers of prune stages, the candidate blocks, the keep ratios,
the pruners and the recoverers. :func:`enumerate_schedules` lists every valid schedule of it:
for ``n`` stages, every ``n`` candidate blocks in increasing order paired with every ``n`` keeps
in decreasing order of token count, kept when :func:`backbones.tokens.resolve_schedule` accepts
it at the sweep's T and depth (keeps strictly below the tokens entering each stage) and the
token module accepts its pruner there (``tpa`` needs a block before the first prune point).
Tiny MixSTE (depth 8) at T=27 with keeps 1/3 and 1/9 (9 and 3 tokens): 8 blocks x 2 keeps = 16
one-stage schedules, C(8, 2) = 28 block pairs x the one decreasing keep pair = 28 two-stage ones.

Each schedule is a standard :class:`Case` (variant single for one stage, hierarchical for more,
the schedule in token counts at the sweep's T) measured by the standard harness through the
standard executors (local, inline, Slurm; ``--shard``, ``--resume``): the sweep directory is a
run directory (``records.jsonl``, ``meta.json``), so ``vptbench report``, ``merge`` and ``gate``
read it as they read any run. The backbone's registered defaults (the rectangle, the ``single``
variant: HoT's configuration, the ``hierarchical`` variant: the H2OT-style pyramid) are measured
beside the grid as reference points.

Accuracy in the loop (``--accuracy smoke|full``) trains and evaluates schedules with the
accuracy machinery (:class:`bench.accuracy.train.AccuracyJob`, the protocol of ``vptbench accuracy``),
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

Outputs: ``schedules.csv`` (every schedule: cost, accuracy, Pareto rank, reference label),
``pareto.csv`` (exactly the non-dominated schedules over the objectives), and a report
(``reports/<run_id>/``: ``index.md``, the front and, for one-stage schedules, a heat map of cost
over first prune block x keep). ``--budget-gflops X``/``--budget-ms X`` prints the best schedule
within the budget as ready options (``--variant ... --schedule ... --pruner ... --recoverer ...``).

Pruners: by default one per schedule (``--pruners tps,tpc`` doubles the grid); with
``--per-stage-pruners`` every assignment of them to the stages (``BLOCK:KEEP:PRUNER`` schedules,
``len(pruners) ** stages`` per block and keep choice), see :func:`pruner_plans`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import itertools
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import backbones
from backbones.tokens import TokenHourglass, format_schedule, parse_schedule, resolve_schedule

from ..analysis.pareto import front_ranks, pareto_mask
from ..core.case import Case
from ..core.errors import UsageError
from ..core.results import read_meta, read_records
from ..run import executors

SEARCHES = ("grid", "halving", "optuna")
OBJECTIVES = ("flops", "latency", "memory", "mpjpe")
COUNTERS = ("paper", "fvcore", "torch")
REFERENCES = {"rectangle": "rectangle", "single": "hot", "hierarchical": "h2ot"}  # variant -> label
REFERENCE_TITLES = {"rectangle": "rectangle", "hot": "HoT default", "h2ot": "H2OT-style default"}
ACCURACY_DIR = "accuracy"


# --------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class Keep:
    """One ``--keep`` entry: as written (``1/3``) and as a ratio of T in (0, 1) or a token count."""

    label: str
    value: int | float

    def tokens(self, frames: int) -> int:
        """The token count at ``frames`` (the rounding of ``resolve_schedule``)."""
        return max(1, round(self.value * frames)) if isinstance(self.value, float) else self.value


def parse_keeps(text: str) -> tuple[Keep, ...]:
    """``"1/2,1/3,1/9"`` (ratios as fractions or decimals in (0, 1), or token counts) -> keeps."""
    keeps = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        try:
            value = Fraction(item)
        except (ValueError, ZeroDivisionError):
            raise UsageError(f"--keep {item!r}: expected a ratio of T in (0, 1) (1/3, 0.25) or a token count (81)") from None
        if value.denominator == 1 and "/" not in item and "." not in item:
            if value < 1:
                raise UsageError(f"--keep {item!r}: a token count must be >= 1")
            keeps.append(Keep(item, int(value)))
        elif 0 < value < 1:
            keeps.append(Keep(item, float(value)))
        else:
            raise UsageError(f"--keep {item!r}: a ratio must lie in (0, 1); a count is a whole number")
    if not keeps:
        raise UsageError("--keep: give at least one ratio or count, e.g. 1/3,1/9")
    return tuple(keeps)


@dataclass(frozen=True)
class Grid:
    """What a sweep enumerates: stage counts, candidate blocks (None: all), keeps, pruners, recoverers."""

    stages: tuple[int, ...] = (1, 2)
    blocks: tuple[int, ...] | None = None
    keeps: tuple[Keep, ...] = (Keep("1/3", 1 / 3), Keep("1/9", 1 / 9))
    pruners: tuple[str, ...] = ("tps",)
    recoverers: tuple[str, ...] = ("tri",)
    per_stage_pruners: bool = False  # every combination of pruners over the stages

    def describe(self) -> dict[str, Any]:
        return {"stages": list(self.stages), "blocks": list(self.blocks) if self.blocks else "all",
                "keep": [k.label for k in self.keeps], "pruners": list(self.pruners),
                "per_stage_pruners": self.per_stage_pruners, "recoverers": list(self.recoverers)}  # fmt: skip


def pruner_plans(stages: int, pruners: Sequence[str], per_stage: bool = False) -> list[tuple[str, ...]]:
    """The pruner of each stage, for every combination the grid asks for.

    One pruner per schedule: ``(p, p, ...)`` for each ``p``; ``per_stage``: every assignment of
    ``pruners`` to the stages (``len(pruners) ** stages`` plans), the uniform ones included.
    """
    if per_stage:
        return list(itertools.product(pruners, repeat=stages))
    return [(p,) * stages for p in pruners]


@dataclass(frozen=True)
class Candidate:
    """One point of the sweep: its efficiency case and how it was drawn from the grid."""

    case: Case  # resolved; the schedule in token counts at the sweep's T
    keeps: tuple[str, ...] = ()  # the --keep labels of its stages ("1/3", "1/9")
    reference: str = ""  # "rectangle" | "hot" | "h2ot" where it is one of the backbone's defaults

    @property
    def stages(self) -> list[tuple[int, int | float]]:
        """(block, tokens kept) of each stage."""
        return [(s[0], s[1]) for s in parse_schedule(self.case.schedule)]

    @property
    def pruner_plan(self) -> tuple[str, ...]:
        """The pruner of each stage: the one the stage names, else the case's."""
        return tuple(str(s[2]) if len(s) > 2 else self.case.pruner for s in parse_schedule(self.case.schedule))

    @property
    def first_block(self) -> int | None:
        stages = self.stages
        return stages[0][0] if stages else None


def model_depth(backbone: str, frames: int, size: str) -> int:
    """Blocks a schedule can prune before: the length of the rectangle's token profile."""
    model: Any = Case(backbone, "rectangle", frames=frames, size=size).build()
    return len(model.token_profile)


def _accepts(stages: Sequence[Sequence[Any]], frames: int, depth: int, pruner: str, recoverer: str,
             pipeline: str) -> bool:  # fmt: skip
    """Whether the token module builds this schedule (its own rules, e.g. tpa needs a block before)."""
    try:
        TokenHourglass(frames=frames, depth=depth, dim=8, heads=1, schedule=stages, pruner=pruner,
                       recoverer=recoverer or None, pipeline=pipeline)  # fmt: skip
    except ValueError:
        return False
    return True


def enumerate_schedules(
    backbone: str, grid: Grid, *, frames: int, size: str, batch: int = 1, device: str = "cpu",
    depth: int | None = None,
) -> list[Candidate]:  # fmt: skip
    """Every valid schedule of ``grid`` for ``backbone`` at ``frames`` (see the module docstring).

    Order: by number of stages, then blocks, then keeps (largest first), pruner, recoverer.
    Two keeps that round to the same token count give one schedule (the first label names it).
    """
    spec = backbones.spec(backbone)
    depth = depth if depth is not None else model_depth(backbone, frames, size)
    blocks = sorted(set(grid.blocks)) if grid.blocks else list(range(depth))
    outside = [b for b in blocks if not 0 <= b < depth]
    if outside:
        raise UsageError(f"--blocks {outside[0]}: {backbone} ({size}) has blocks 0..{depth - 1}")
    bad = [n for n in grid.stages if n < 1]
    if bad:
        raise UsageError(f"--stages {bad[0]}: a pruned schedule has at least one stage")
    keeps = sorted(grid.keeps, key=lambda k: -k.tokens(frames))  # stages take them largest first
    recoverers = grid.recoverers if spec.pipeline == "seq2seq" else ("",)
    out: dict[str, Candidate] = {}
    for n in sorted(set(grid.stages)):
        for bs, ks in itertools.product(itertools.combinations(blocks, n), itertools.combinations(keeps, n)):
            try:
                stages = resolve_schedule(list(zip(bs, [k.value for k in ks], strict=True)), frames, depth)
            except ValueError:
                continue  # a keep not below the tokens entering its stage
            plans = pruner_plans(n, grid.pruners, grid.per_stage_pruners)
            for plan, recoverer in itertools.product(plans, recoverers):
                named = [(s[0], s[1], p) for s, p in zip(stages, plan, strict=True)]
                if not _accepts(named, frames, depth, plan[0], recoverer, spec.pipeline):
                    continue
                # Case.resolve spells it canonically: "2:9:tps,5:3:tpc" -> pruner tps, "2:9,5:3:tpc"
                case = Case(backbone, "single" if n == 1 else "hierarchical", frames=frames, batch=batch,
                            device=device, size=size, schedule=format_schedule(named), pruner=plan[0],
                            recoverer=recoverer).resolve()  # fmt: skip
                out.setdefault(case.case_id, Candidate(case, tuple(k.label for k in ks)))
    return list(out.values())


def reference_candidates(backbone: str, *, frames: int, size: str, batch: int = 1, device: str = "cpu",
                         depth: int) -> tuple[list[Candidate], list[str]]:  # fmt: skip
    """The backbone's registered defaults at this T (rectangle, HoT, H2OT-style); notes for those that do not fit."""
    refs, notes = [], []
    for variant, label in REFERENCES.items():
        case = Case(backbone, variant, frames=frames, batch=batch, device=device, size=size)
        try:
            case = case.resolve()
            resolve_schedule(parse_schedule(case.schedule), frames, depth)
        except (UsageError, ValueError) as e:
            notes.append(f"{REFERENCE_TITLES[label]} left out: {e}")
            continue
        refs.append(Candidate(case, reference=label))
    return refs, notes


def with_references(grid: list[Candidate], refs: Iterable[Candidate]) -> list[Candidate]:
    """The grid plus the references; a reference that is a grid schedule marks it instead of repeating it."""
    by_id = {c.case.case_id: c for c in grid}
    extra = []
    for r in refs:
        if r.case.case_id in by_id:
            by_id[r.case.case_id] = replace(by_id[r.case.case_id], reference=r.reference)
        else:
            extra.append(r)
    return list(by_id.values()) + extra


def count_line(candidates: Sequence[Candidate]) -> str:
    """``44 schedules (16 one-stage, 28 two-stage)`` (references not counted)."""
    words = {1: "one", 2: "two", 3: "three", 4: "four"}
    grid = [c for c in candidates if c.keeps]
    per = pd.Series([len(c.stages) for c in grid], dtype=int).value_counts().sort_index()
    parts = ", ".join(f"{v} {words.get(int(n), str(n))}-stage" for n, v in per.items())
    return f"{len(grid)} schedules" + (f" ({parts})" if parts else "")


# --------------------------------------------------------------------------- the table


def cost_columns(counter: str) -> dict[str, str]:
    """Objective name -> column of :func:`sweep_table`."""
    return {"flops": f"gflops_{counter}", "latency": "latency_ms", "memory": "peak_mem_mib", "mpjpe": "mpjpe_mm"}


def sweep_table(candidates: Sequence[Candidate], records: Sequence[dict[str, Any]],
                accuracy: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:  # fmt: skip
    """One row per candidate: its case, grid labels, costs from ``records`` and accuracy by case id.

    ``accuracy`` maps a candidate's case id to ``{"mpjpe": mm, "steps": n, "final": bool}``; only
    final (full-budget) values go to ``mpjpe_mm``, the others to ``mpjpe_partial_mm``.
    """
    latest: dict[tuple[str, str, str], float] = {}
    for r in records:
        if r.get("status") != "ok" or r.get("value") is None:
            continue
        if r["metric"] in ("peak_rss", "peak_mem_alloc") and r.get("phase", "inference") != "inference":
            continue
        latest[(r["case_id"], r["metric"], r.get("method") or "")] = float(r["value"])  # a resumed case: the last counts
    any_method = {(k, m): v for (k, m, _), v in latest.items()}
    rows = []
    for c in candidates:
        k = c.case.case_id
        stages = c.stages
        row: dict[str, Any] = {
            "case_id": k, "reference": c.reference, "variant": c.case.variant, "stages": len(stages),
            "first_block": stages[0][0] if stages else None, "first_keep": stages[0][1] if stages else None,
            "keep": ",".join(c.keeps), "schedule": c.case.schedule, "pruner": c.case.pruner,
            "stage_pruners": "+".join(c.pruner_plan),
            "recoverer": c.case.recoverer, "backbone": c.case.backbone, "frames": c.case.frames,
            "size": c.case.size, "batch": c.case.batch, "device": c.case.device,
        }  # fmt: skip
        for counter in COUNTERS:
            row[f"gflops_{counter}"] = latest.get((k, "flops", counter), math.nan)
        row["latency_ms"] = any_method.get((k, "latency"), math.nan)
        row["peak_mem_mib"] = any_method.get((k, "peak_rss"), any_method.get((k, "peak_mem_alloc"), math.nan))
        acc = (accuracy or {}).get(k)
        final = bool(acc and acc.get("final"))
        row["mpjpe_mm"] = acc["mpjpe"] if acc and final else math.nan
        row["mpjpe_partial_mm"] = acc["mpjpe"] if acc and not final else math.nan
        row["train_steps"] = acc["steps"] if acc else None
        rows.append(row)
    return pd.DataFrame(rows)


def mark_front(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``table`` with ``pareto_rank`` (0 = on the front, -1 = an objective missing) and ``on_front``."""
    out = table.copy()
    ranks = front_ranks(out[list(columns)].to_numpy(dtype=float)) if len(out) else np.array([], dtype=int)
    out["pareto_rank"] = ranks
    out["on_front"] = ranks == 0
    return out


def front(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Exactly the non-dominated rows of ``table`` over ``columns`` (all minimised), by the first column."""
    if table.empty:
        return table
    mask = pareto_mask(table[list(columns)].to_numpy(dtype=float))
    return table[mask].sort_values(list(columns)).reset_index(drop=True)


# --------------------------------------------------------------------------- budget


@dataclass(frozen=True)
class Budget:
    """Upper limits on cost columns (``gflops_paper`` <= 50, ``latency_ms`` <= 20)."""

    limits: tuple[tuple[str, float], ...]

    def within(self, table: pd.DataFrame) -> pd.Series:
        ok = pd.Series(True, index=table.index)
        for col, limit in self.limits:
            ok &= table[col].notna() & (table[col] <= limit)
        return ok

    def describe(self) -> str:
        unit = {"latency_ms": "ms"}
        return " and ".join(f"{col.removeprefix('gflops_') + ' ' if col.startswith('gflops_') else ''}"
                            f"{'GFLOPs' if col.startswith('gflops_') else unit.get(col, col)} <= {limit:g}"
                            for col, limit in self.limits)  # fmt: skip


def best_within(table: pd.DataFrame, budget: Budget, flops_col: str) -> tuple[pd.Series | None, str]:
    """The best row within ``budget`` and why it is the best.

    With accuracy, the lowest MPJPE trained for the full budget. Without, the row that keeps the
    most computation (highest FLOPs) within the budget, the one pruning least: fewer kept tokens
    cost accuracy in HoT's and H2OT's ablations, so it is the likely most accurate; say so.
    """
    inside = table[budget.within(table)]
    if inside.empty:
        return None, "no schedule is within the budget"
    scored = inside[inside["mpjpe_mm"].notna()]
    if not scored.empty:
        return scored.sort_values(["mpjpe_mm", flops_col]).iloc[0], "the lowest MPJPE within the budget"
    order = inside.sort_values([flops_col, "latency_ms"], ascending=[False, True])
    return order.iloc[0], "no accuracy measured: the schedule keeping the most computation within the budget"


def ready_options(row: pd.Series) -> str:
    """The options that rebuild ``row``'s model in ``vptbench profile`` (and ``backbones.create``)."""
    opts = [f"--variant {row['variant']}"]
    if row["schedule"]:
        opts.append(f"--schedule {row['schedule']}")
    if row["pruner"]:
        opts.append(f"--pruner {row['pruner']}")
    if row["recoverer"]:
        opts.append(f"--recoverer {row['recoverer']}")
    return " ".join(opts)


# --------------------------------------------------------------------------- accuracy searches


@dataclass
class AccuracyPlan:
    """How the accuracy phase trains: the preset, the final budget, the job and executor arguments."""

    preset: Any  # bench.accuracy.train.Preset
    steps: int
    seed: int
    loader: Callable[[], Any]
    args: argparse.Namespace  # executor arguments (workers chosen for training)
    resume: bool
    root: Path  # <sweep>/accuracy
    run_id: str
    progress: bool = True

    def job(self, steps: int) -> Any:
        from ..accuracy.train import AccuracyJob

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


# --------------------------------------------------------------------------- the command


def _default_run_id(backbone: str) -> str:
    return f"sweep-{backbone}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _objectives(args: argparse.Namespace, accuracy: bool) -> list[str]:
    objectives = list(args.objectives or (["flops", "mpjpe"] if accuracy else ["flops", "latency"]))
    bad = [o for o in objectives if o not in OBJECTIVES]
    if bad:
        raise UsageError(f"--objectives {bad[0]!r}: choose from {', '.join(OBJECTIVES)}")
    if len(set(objectives)) != len(objectives):
        raise UsageError(f"--objectives {','.join(objectives)}: an objective is named twice")
    if "mpjpe" in objectives and not accuracy:
        raise UsageError("--objectives mpjpe needs --accuracy smoke|full (accuracy is measured by training)")
    need = {"flops": "flops", "latency": "latency", "memory": "memory"}
    for o in objectives:
        if o in need and need[o] not in args.metrics:
            raise UsageError(f"--objectives {o} needs --metrics to include {need[o]} (got {','.join(args.metrics)})")
    if len(objectives) < 2:
        raise UsageError(f"--objectives {','.join(objectives)}: a front needs two or more, e.g. flops,latency")
    return objectives


def _accuracy_plan(args: argparse.Namespace, out: Path, run_id: str) -> AccuracyPlan | None:
    if not args.accuracy:
        return None
    from ..accuracy.train import PRESETS, load_data

    preset = PRESETS[args.accuracy]
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    loader = functools.partial(load_data, args.data, preset=preset, seed=args.seed, data_dir=args.data_dir)
    workers = args.workers
    if workers is None:  # as vptbench accuracy: one single-threaded training per core on the CPU
        cpu = args.device == "cpu" and preset.threads == 1
        workers = (os.cpu_count() or 1) if cpu else 1
    acc_args = argparse.Namespace(**{**vars(args), "workers": workers})
    return AccuracyPlan(preset=preset, steps=args.steps or preset.steps, seed=args.seed, loader=loader,
                        args=acc_args, resume=args.resume, root=out / ACCURACY_DIR, run_id=run_id)  # fmt: skip


def _budget(args: argparse.Namespace, flops_col: str) -> Budget | None:
    limits = []
    if args.budget_gflops is not None:
        limits.append((flops_col, float(args.budget_gflops)))
    if args.budget_ms is not None:
        limits.append(("latency_ms", float(args.budget_ms)))
    for col, v in limits:
        if not v > 0:
            raise UsageError(f"--budget {v:g} for {col}: a budget must be > 0")
    if args.budget_gflops is not None and "flops" not in args.metrics:
        raise UsageError("--budget-gflops needs --metrics to include flops")
    if args.budget_ms is not None and "latency" not in args.metrics:
        raise UsageError("--budget-ms needs --metrics to include latency")
    return Budget(tuple(limits)) if limits else None


def _check_options(args: argparse.Namespace) -> None:
    """The option errors found before anything is built (UsageError, one line)."""
    from ..accuracy.train import PRESETS

    if args.search not in SEARCHES:
        raise UsageError(f"--search {args.search!r}: choose from {', '.join(SEARCHES)}")
    if args.search != "grid" and not args.accuracy:
        raise UsageError(f"--search {args.search} ranks schedules by accuracy: add --accuracy smoke|full")
    if args.accuracy and args.accuracy not in PRESETS:
        raise UsageError(f"--accuracy {args.accuracy!r}: choose from {', '.join(PRESETS)}")
    if args.search == "optuna":
        require_optuna()
        if args.trials is None or args.trials < 1:
            raise UsageError("--search optuna needs --trials N (N >= 1)")
    if args.shard and args.search != "grid":
        raise UsageError(f"--shard splits a grid; --search {args.search} decides each step from the one before")
    if args.resume and not args.out:
        raise UsageError("--resume needs --out: the sweep directory to continue")
    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {args.batch}")
    if args.counter not in COUNTERS:
        raise UsageError(f"--flops-counter {args.counter!r}: choose from {', '.join(COUNTERS)}")
    for name, given, known in (("--pruners", args.pruners, backbones.pruners()),
                               ("--recoverers", args.recoverers, backbones.recoverers())):  # fmt: skip
        bad = [p for p in given if p not in known]
        if bad or not given:
            raise UsageError(f"{name} {bad[0] if bad else ''!r}: choose from {', '.join(known)}")


def _size_and_frames(args: argparse.Namespace, spec: Any) -> tuple[str, int]:
    """``--size``/``--frames``, else the accuracy preset's, else the backbone's; UsageError if it cannot take them."""
    from ..accuracy.train import PRESETS

    preset = PRESETS[args.accuracy] if args.accuracy else None
    size = args.size or (preset.size if preset and preset.size in spec.sizes else None) or spec.default_size
    frames = args.frames or (preset.frames if preset else None) or spec.frames
    if size not in spec.sizes:
        raise UsageError(f"unknown size {size!r} for {args.backbone}; choose from {', '.join(spec.sizes)}")
    reason = spec.valid_frames(frames)
    if reason:
        raise UsageError(f"{args.backbone} cannot take {frames} frames: {reason}")
    return size, frames


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


def cmd_sweep(args: argparse.Namespace) -> int:
    """``vptbench sweep BACKBONE``: enumerate, measure, (train), write the front, report, pick for a budget."""
    from ..run.presets import with_threads
    from ..run.store import check_writable
    from ..run.presets import get_preset
    from ..run.store import ensure_fresh
    from ..scenarios import check_device

    try:
        spec = backbones.spec(args.backbone)
    except ValueError as e:
        raise UsageError(str(e)) from None
    check_device(args.device)
    _check_options(args)
    size, frames = _size_and_frames(args, spec)
    objectives = _objectives(args, bool(args.accuracy))
    cols = cost_columns(args.counter)
    obj_cols = [cols[o] for o in objectives]
    budget = _budget(args, cols["flops"])

    grid = Grid(stages=tuple(args.stages), blocks=tuple(args.blocks) if args.blocks else None,
                keeps=parse_keeps(args.keep), pruners=tuple(args.pruners), recoverers=tuple(args.recoverers),
                per_stage_pruners=args.per_stage_pruners)  # fmt: skip
    depth = model_depth(args.backbone, frames, size)
    where = {"frames": frames, "size": size, "batch": args.batch, "device": args.device, "depth": depth}
    cands = enumerate_schedules(args.backbone, grid, **where)
    refs, notes = ([], []) if args.no_references else reference_candidates(args.backbone, **where)
    if args.runtime != "eager":  # every schedule timed on that runtime (bench.measure.runtimes); accuracy trains eager
        from ..measure import runtimes

        if args.accuracy:
            raise UsageError(f"--runtime {args.runtime} with --accuracy: schedules are trained and evaluated in eager "
                             "mode; time them on another runtime in a sweep without --accuracy")  # fmt: skip
        runtimes.check(args.runtime, args.device, "float32")
        cands, refs = ([replace(c, case=replace(c.case, runtime=args.runtime).resolve()) for c in group]
                       for group in (cands, refs))  # fmt: skip
    everything = with_references(cands, refs)
    extra_refs = sum(not c.keeps for c in everything)
    print(f"sweep {args.backbone} ({size}, T={frames}, depth {depth}): {count_line(cands)}"
          f"{f' + {extra_refs} reference case(s)' if extra_refs else ''}", file=sys.stderr)  # fmt: skip
    for note in notes:
        print(f"  {note}", file=sys.stderr)
    if not cands:
        raise UsageError("the grid has no valid schedule (keeps must fall below the tokens entering each stage, "
                         f"blocks lie in 0..{depth - 1})")  # fmt: skip

    run_id = _default_run_id(args.backbone)
    out = Path(args.out) if args.out else Path("results") / run_id
    if args.resume:
        run_id = read_meta(out).get("run_id") or out.name
    else:
        ensure_fresh(out)
    check_writable(out)
    cases = [c.case for c in everything]
    if args.shard:
        cases = executors.shard(cases, args.shard)
        chosen = set(cases)
        everything = [c for c in everything if c.case in chosen]
    settings = with_threads(get_preset("smoke" if size == "tiny" else "paper").settings, args.threads)
    plan = _accuracy_plan(args, out, run_id)
    meta = {"kind": "sweep", "backbone": args.backbone, "size": size, "frames": frames, "depth": depth,
            "grid": grid.describe(), "schedules": len(cands), "references": [c.reference for c in everything
                                                                              if c.reference],
            "objectives": objectives, "flops_counter": args.counter, "search": args.search,
            "accuracy": args.accuracy, "steps": plan.steps if plan else None, "shard": args.shard}  # fmt: skip
    summary = executors.run_cases(cases, out, run_id=run_id, metrics=args.metrics, resume=args.resume,
                                  settings=settings, meta=meta, args=args)  # fmt: skip
    print(f"efficiency: {summary.measured} case(s) measured, {summary.resumed} already done: {out}", file=sys.stderr)
    records = read_records(out) if (out / "records.jsonl").is_file() else []
    table = sweep_table(everything, records)
    accuracy = None
    if plan:
        accuracy = run_accuracy(args, plan, everything, table, budget, [c for c in obj_cols if c != "mpjpe_mm"])
        table = sweep_table(everything, records, accuracy)

    table = mark_front(table, obj_cols)
    table.to_csv(out / "schedules.csv", index=False)
    pareto = front(table, obj_cols)
    pareto.to_csv(out / "pareto.csv", index=False)
    print(f"pareto.csv: {len(pareto)} non-dominated of {int(table[obj_cols].notna().all(axis=1).sum())} "
          f"schedule(s) with every objective ({', '.join(obj_cols)}): {out / 'pareto.csv'}")  # fmt: skip
    print(_front_text(pareto, obj_cols))
    pick = best_within(table, budget, cols["flops"]) if budget else None
    if budget and pick:
        print(budget_line(pick, budget, cols["flops"], args.backbone, size, frames))
    if args.shard:
        print(f"--shard {args.shard}: this front covers the shard only; merge the shards (vptbench merge) and run "
              "the same sweep with --out MERGED --resume for the whole front", file=sys.stderr)  # fmt: skip
    if not args.no_report:
        from .plots import write_sweep_report

        report_dir = Path(args.report) if args.report else Path("reports") / run_id
        path = write_sweep_report(table, pareto, obj_cols, report_dir, title=f"{args.backbone} ({size}, T={frames})",
                                  meta=meta, budget=budget, pick=pick,
                                  pick_options=ready_options(pick[0]) if pick and pick[0] is not None else "")  # fmt: skip
        print(f"report: {path}")
    failed = summary.failures or (accuracy and any(math.isnan(v["mpjpe"]) for v in accuracy.values()))
    return 1 if failed else 0


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


def _front_text(pareto: pd.DataFrame, obj_cols: Sequence[str]) -> str:
    from tabulate import tabulate

    if pareto.empty:
        return "(empty front: no schedule has every objective measured)"
    cols = ["reference", "variant", "schedule", "pruner", "recoverer", *obj_cols]
    return tabulate(pareto[cols].fillna(""), headers="keys", showindex=False, floatfmt=".4g")


def budget_line(pick: tuple[pd.Series | None, str], budget: Budget, flops_col: str, backbone: str, size: str,
                frames: int) -> str:  # fmt: skip
    """``best within ...: --variant single --schedule 3:9 ...`` and a ready profile command."""
    row, why = pick
    if row is None:
        return f"budget {budget.describe()}: {why}"
    figures = [f"{row[flops_col]:.4g} GFLOPs ({flops_col.removeprefix('gflops_')})"]
    if not math.isnan(row["latency_ms"]):
        figures.append(f"{row['latency_ms']:.3g} ms")
    if not math.isnan(row["mpjpe_mm"]):
        figures.append(f"MPJPE {row['mpjpe_mm']:.1f} mm")
    return (f"best within {budget.describe()} ({why}): {ready_options(row)}\n  ({', '.join(figures)}; "
            f"vptbench profile {backbone} --size {size} --frames {frames} {ready_options(row)})")
