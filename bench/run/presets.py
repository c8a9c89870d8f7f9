"""Named benchmark matrices (``vptbench run --preset NAME``) and the measurement effort of each.

- ``smoke``: every registered backbone x variant at its ``tiny`` size and T = 27: checks that the
  whole pipeline runs (CI, a new backbone), in about a minute on 2 CPU cores. Its numbers mean
  little.
- ``paper`` (the default): every backbone x variant at its canonical size and sequence length,
  batch 1, the protocol of the papers' tables.
- ``scaling``: canonical sizes over T = 27, 81, 243, 351, 486, 729, schedules scaled with T (the
  registered keeps are ratios of T). Lengths a backbone cannot take are recorded as skipped with
  the backbone's reason.

Matrices are built from ``backbones.names()`` when asked for, so a backbone registered by the user
appears in every preset. Timing effort is per preset: the expensive canonical models get few
repeats (each forward takes seconds on a CPU), the tiny ones enough for a stable median.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

import backbones

from ..core.case import DTYPE_PRECISIONS, DTYPES, PRECISION_DTYPES, PRECISIONS, RUNTIMES, Case
from ..core.errors import UsageError
from ..measure.stream import StreamSettings
from ..measure.timing import SpeedSettings
from ..scenarios import METRIC_GROUPS, Settings

SCALING_FRAMES = (27, 81, 243, 351, 486, 729)


@dataclass(frozen=True)
class Preset:
    """A matrix recipe: sizes, lengths and batches for every backbone x variant, and the effort."""

    name: str
    description: str
    size: str | None  # None: each backbone's default (canonical) size
    frames: tuple[int | None, ...]  # None: each backbone's canonical length
    batch: tuple[int, ...]
    settings: Settings
    metrics: tuple[str, ...] = METRIC_GROUPS


# Effort. The canonical models take seconds per forward on 2 CPU cores and their training steps
# several times that, so every repeat costs seconds per case (the default run should finish in
# under 5 minutes on 2 cores). Latency and the speed-up's pairs: 1 warm-up, then at least 3 timed
# calls (pairs) and 3 s, more until the median's 95 % CI is within 5 % or the phase's cap is spent.
# The cap is the case's share of a 140 s run budget, never below 12 s (bench.run.budget): the cheap
# cases end early with tight CIs, and the expensive ones get what they leave. A pruned case has one
# timed phase, the pairs: its latency is their pruned half (bench.scenarios.measure). Training: 1
# warm-up step (it creates AdamW's state), then at least 2 steps and 2 s, up to 4 s: an interval
# for every case, stable where 3 or more steps fit (docs/timing.md has the figures).
PAPER_SETTINGS = Settings(
    warmup=1, repeats=3, min_time_s=3.0, max_time_s=12.0, max_repeats=40,
    train_warmup=1, train_repeats=2, train_min_time_s=2.0, train_max_time_s=4.0, run_budget_s=140.0,
)
# The tiny models are too small for a second thread to pay for its synchronisation; one thread
# also keeps the smoke run steady on a shared CI runner, where spinning OpenMP threads that wait
# for each other can make a 2-thread run many times slower.
SMOKE_SETTINGS = Settings(
    warmup=2, repeats=6, min_time_s=0.5, max_time_s=2.0, max_repeats=60,
    train_warmup=1, train_repeats=6, train_min_time_s=0.2, train_max_time_s=1.0, speed=SpeedSettings(threads=1),
    stream=StreamSettings(seconds=1.0, probe_s=0.5),  # 1 s streams, 0.5 s max-fps probes
)

# The presets leave out the breakdown (a profiler pass per case, and with training measured a
# profiled training step: minutes per canonical case on 2 cores), flops_train and stream (seconds of
# wall time per camera rate and case, plus the max-fps search), so that the default run stays within
# 5 minutes; ask for them with --metrics ...,breakdown,flops_train,stream.
# tests/test_breakdown.py and tests/test_stream.py cover them on tiny models. pose_error trains
# weights (minutes per backbone at canonical size): a run adds it where it measures a precision
# other than fp32 (:func:`with_pose_error`), or when --metrics names it.
PRESET_METRICS = tuple(m for m in METRIC_GROUPS if m not in ("breakdown", "flops_train", "stream", "pose_error"))

PRESETS: dict[str, Preset] = {
    "smoke": Preset("smoke", "tiny sizes, T=27, every backbone x variant: does everything run?",
                    size="tiny", frames=(27,), batch=(1,), settings=SMOKE_SETTINGS, metrics=PRESET_METRICS),
    "paper": Preset("paper", "canonical configurations, batch 1, every backbone x variant (default)",
                    size=None, frames=(None,), batch=(1,), settings=PAPER_SETTINGS, metrics=PRESET_METRICS),
    "scaling": Preset("scaling", f"canonical sizes over T = {', '.join(map(str, SCALING_FRAMES))}",
                      size=None, frames=SCALING_FRAMES, batch=(1,), settings=PAPER_SETTINGS, metrics=PRESET_METRICS),
}  # fmt: skip
DEFAULT_PRESET = "paper"


def get_preset(name: str | None) -> Preset:
    """The preset called ``name`` (None: the default); UsageError naming the known ones."""
    name = name or DEFAULT_PRESET
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def build_matrix(
    preset: Preset,
    *,
    backbone_names: Sequence[str] | None = None,
    variants: Sequence[str] | None = None,
    frames: Sequence[int] | None = None,
    batch: Sequence[int] | None = None,
    size: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    runtimes: Sequence[str] = ("eager",),
    precisions: Sequence[str] | None = None,
) -> list[Case]:
    """The cases of ``preset`` with the user's overrides, in a fixed order, resolved where possible.

    Overrides replace the preset's axes. Names, variants, sizes, batches and dtypes that do not
    exist raise UsageError (a user mistake); ``precisions`` (None: the precision of ``dtype``)
    is an axis like ``runtimes``, fp16/bf16 setting the dtype; a length that a backbone cannot take is kept as an
    unresolved case, which :func:`bench.scenarios.measure.measure_case` records as skipped with the reason.
    A length given by the user that no selected backbone can take is a mistake, though.
    """
    names = list(backbone_names) if backbone_names else backbones.names()
    for n in names:
        if n not in backbones.names():
            raise UsageError(f"unknown backbone {n!r}; choose from {', '.join(backbones.names())}")
    variant_list = list(variants) if variants else list(backbones.VARIANTS)
    for v in variant_list:
        if v not in backbones.VARIANTS:
            raise UsageError(f"unknown variant {v!r}; choose from {', '.join(backbones.VARIANTS)}")
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    for r in runtimes:
        if r not in RUNTIMES:
            raise UsageError(f"unknown runtime {r!r}; choose from {', '.join(RUNTIMES)}")
    precision_list = check_precisions(precisions, dtype)
    batches = tuple(batch) if batch else preset.batch
    bad_batch = [b for b in batches if b < 1]
    if bad_batch:
        raise UsageError(f"batch must be >= 1, got {bad_batch[0]}")
    lengths: tuple[int | None, ...] = tuple(frames) if frames else preset.frames
    bad_frames = [t for t in lengths if t is not None and t < 1]
    if bad_frames:
        raise UsageError(f"frames must be >= 1, got {bad_frames[0]}")
    size = size or preset.size
    if size:
        lacking = [n for n in names if size not in backbones.spec(n).sizes]
        if lacking:
            have = ", ".join(f"{n}: {'/'.join(backbones.spec(n).sizes)}" for n in lacking)
            raise UsageError(f"size {size!r} does not exist for {', '.join(lacking)} ({have})")
    for asked in frames or ():  # the user's lengths; a preset's are skipped where they do not fit
        if all(backbones.spec(n).valid_frames(asked) for n in names):
            reasons = "; ".join(f"{n}: {backbones.spec(n).valid_frames(asked)}" for n in names)
            raise UsageError(f"no selected backbone can take {asked} frames ({reasons})")

    cases = []
    # The variants of one runtime (and precision) run one after the other: a pruned case and its
    # rectangle are timed close together in time, under the same machine load.
    axes = itertools.product(names, lengths, batches, runtimes, precision_list, variant_list)
    for name, t, b, runtime, precision, variant in axes:
        spec = backbones.spec(name)
        case = Case(
            backbone=name, variant=variant, frames=t or spec.frames, batch=b, device=device,
            dtype=PRECISION_DTYPES[precision], size=size or spec.default_size, runtime=runtime, precision=precision,
        )
        cases.append(prepare(case))
    return cases


def check_precisions(precisions: Sequence[str] | None, dtype: str = "float32") -> list[str]:
    """The precision axis (``--precision``; None: ``--dtype``'s); UsageError for an unknown name or both flags."""
    if not precisions:
        return [DTYPE_PRECISIONS[dtype]]
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise UsageError(f"unknown precision {bad[0]!r}; choose from {', '.join(PRECISIONS)}")
    if dtype != "float32":
        raise UsageError(f"--dtype {dtype} and --precision {','.join(precisions)}: give one (--precision fp16 and "
                         "bf16 are --dtype float16 and bfloat16)")  # fmt: skip
    return list(dict.fromkeys(precisions))


def with_pose_error(metrics: Sequence[str], cases: Sequence[Case]) -> list[str]:
    """``metrics`` plus pose_error where a case runs in a precision other than fp32 (the default metrics)."""
    if "pose_error" in metrics or all(c.precision == "fp32" and c.dtype == "float32" for c in cases):
        return list(metrics)
    return [*metrics, "pose_error"]


def prepare(case: Case) -> Case:
    """``case`` resolved (defaults filled in), or as it is when it cannot be: its id stays stable."""
    try:
        return case.resolve()
    except UsageError:
        return case



def with_strategies(
    cases: Sequence[Case], pruners: Sequence[str] | None = None, recoverers: Sequence[str] | None = None
) -> list[Case]:
    """Every pruned case once per pruner x recoverer (``--pruners``, ``--recoverers``); rectangles once.

    Names are checked against the registries (``backbones.pruners()``, built-in or registered by a
    plugin); seq2frame cases ignore recoverers. None keeps each variant's own.
    """
    for name in pruners or ():
        if name not in backbones.pruners():
            raise UsageError(f"unknown pruner {name!r}; choose from {', '.join(backbones.pruners())}")
    for name in recoverers or ():
        if name not in backbones.recoverers():
            raise UsageError(f"unknown recoverer {name!r}; choose from {', '.join(backbones.recoverers())}")
    if not pruners and not recoverers:
        return list(cases)
    out: list[Case] = []
    for case in cases:
        if case.variant == "rectangle":
            out.append(case)
            continue
        seq2frame = backbones.spec(case.backbone).pipeline == "seq2frame"
        recs = [case.recoverer] if seq2frame or not recoverers else list(recoverers)
        for p, r in itertools.product(pruners or [case.pruner], recs):
            out.append(prepare(replace(case, pruner=p, recoverer=r)))
    return list(dict.fromkeys(out))


def with_threads(settings: Settings, threads: int | None) -> Settings:
    """``settings`` with the CPU thread count of ``--threads`` (None keeps the preset's)."""
    if threads is None:
        return settings
    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    return dataclasses.replace(settings, speed=dataclasses.replace(settings.speed, threads=threads))


def with_min_time(settings: Settings, min_time: float | None) -> Settings:
    """``settings`` timing each timed metric at least ``min_time`` s and up to 3x that (``--min-time``)."""
    if min_time is None:
        return settings

    def most(old: float | None, old_min: float) -> float:
        return max(old if old is not None else old_min, 3 * min_time)

    cap = most(settings.max_time_s, settings.min_time_s)
    old_cap = settings.max_time_s if settings.max_time_s is not None else settings.min_time_s
    # the run's budget grows with the per-phase cap, so that it still has something to share out
    budget = settings.run_budget_s
    if budget is not None and old_cap:
        budget = round(budget * max(1.0, cap / old_cap), 1)
    return dataclasses.replace(
        settings, min_time_s=min_time, max_time_s=cap,
        train_min_time_s=min_time, train_max_time_s=most(settings.train_max_time_s, settings.train_min_time_s),
        max_repeats=max(settings.max_repeats, 1000), run_budget_s=budget,
    )
