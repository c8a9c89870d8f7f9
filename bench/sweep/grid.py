"""The sweep's grid: every valid pruning schedule of it as a case, and the backbone's defaults beside them.

A *grid* (:class:`Grid`) names the numbers of prune stages, the candidate blocks, the keep ratios,
the pruners and the recoverers. :func:`enumerate_schedules` lists every valid schedule of it:
for ``n`` stages, every ``n`` candidate blocks in increasing order paired with every ``n`` keeps
in decreasing order of token count, kept when :func:`backbones.tokens.resolve_schedule` accepts
it at the sweep's T and depth (keeps strictly below the tokens entering each stage) and the
token module accepts its pruner there (``tpa`` needs a block before the first prune point).
Tiny MixSTE (depth 8) at T=27 with keeps 1/3 and 1/9 (9 and 3 tokens): 8 blocks x 2 keeps = 16
one-stage schedules, C(8, 2) = 28 block pairs x the one decreasing keep pair = 28 two-stage ones.

Each schedule is a standard :class:`Case` (variant single for one stage, hierarchical for more,
the schedule in token counts at the sweep's T), measured as any case is. The backbone's registered
defaults (the rectangle, the ``single`` variant: HoT's configuration, the ``hierarchical`` variant:
the H2OT-style pyramid) are measured beside the grid as reference points.

Pruners: by default one per schedule (``--pruners tps,tpc`` doubles the grid); with
``--per-stage-pruners`` every assignment of them to the stages (``BLOCK:KEEP:PRUNER`` schedules,
``len(pruners) ** stages`` per block and keep choice), see :func:`pruner_plans`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import pandas as pd

import backbones
from backbones.tokens import TokenHourglass, format_schedule, parse_schedule, resolve_schedule

from ..core.case import Case
from ..core.errors import UsageError

REFERENCES = {"rectangle": "rectangle", "single": "hot", "hierarchical": "h2ot"}  # variant -> label
REFERENCE_TITLES = {"rectangle": "rectangle", "hot": "HoT default", "h2ot": "H2OT-style default"}


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
