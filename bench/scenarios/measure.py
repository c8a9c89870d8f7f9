"""Measure one case: the records of every requested metric, yielded as each one is measured.

    for rec in measure_case(case, ["params", "flops", "latency"], run_id, settings=Settings()):
        writer.write(rec)

Metric groups (the CLI's ``--metrics``) and the records they yield (SPEC section 6):

- ``params``: params.
- ``flops``: flops by each counter (method fvcore, torch, paper; GFLOPs = 2 x MACs; the fvcore
  record lists what it could not count in ``unsupported``), and flops_block per entry of
  ``model.blocks`` (fvcore, with ``block`` and ``tokens``).
- ``latency``: latency (median, method = the timer), latency_p10, latency_p90, fps, clips_per_s;
  with the speed settings (``threads``...) and every sample.
- ``speedup`` (pruned cases only; a rectangle is the reference and yields no speedup record):
  speedup (x, method ``paired``) = the median over pairs of rectangle ms / pruned ms, the case's
  own rectangle (same backbone, size, T, batch, dtype, device, threads, weights seeded alike)
  built in this process and called alternately with the case (bench.measure.timing.measure_paired);
  ``samples`` holds the per-pair ratios, ``samples_rectangle``/``samples_pruned`` the ms.
  With ``latency`` asked for too, a pruned case's latency records come from the same pairs (the
  pruned calls' ms; ``paired: true`` and ``reference`` say so) instead of a timed phase of their
  own: one timed phase per pruned case, and its latency and speed-up are of the same calls.
- runtime (``case.runtime``, see bench.measure.runtimes): latency and the speed-up's pairs time the eager
  model, its torch.compile or its ONNX Runtime session (the rectangle of a pair on the same
  runtime); compile adds compile_s (the first call), onnxruntime export_error (parity with eager;
  above the tolerance the latency group fails). Memory, training and the breakdown are measured
  for the eager runtime only (skipped records say so for the others).
- ``memory``: per phase (``phase`` inference | train): peak_mem_alloc, peak_mem_reserved and
  peak_mem_device on CUDA, peak_rss on CPU (a fresh process, see bench.measure.memory), and on both
  peak_mem_activations (the step's peak above the memory in use before it).
- ``breakdown`` (bench.measure.breakdown): machine_peak_gflops (a GEMM microbenchmark, once per run),
  achieved_gflops per FLOP counter (flops / latency), and time_by_part per (phase, part, block):
  a torch.profiler pass over labelled forwards, separate from the latency; over training steps
  too when training is measured as well (``train`` or ``flops_train``: a step costs several forwards);
  and mem_by_part (MiB allocated by part: one more profiled forward, and training step, with
  torch.profiler's memory profiling).
- ``flops_train``: flops_train, the torch counter over forward + loss + backward.
- ``train``: train_step (median ms of forward + loss + backward + AdamW step). On CPU with
  ``memory`` asked for too, the steps timed are those of the memory group's fresh process (its
  steady state is measured anyway; training is the most expensive part of a case), and the
  record says ``fresh_process: true``.

Every timed record (latency, train_step, speedup) also carries the statistics of
:func:`bench.measure.timing.stats_fields` (``n``, ``ci_low``, ``ci_high``, ``stable``...) and the load
that :class:`bench.measure.load.Monitor` measured while it was timed (``other_cores``, ``busy``...).

A metric that fails becomes a record with status error (or oom) and its reason, and the other
metrics go on; a case that cannot be built at all (e.g. frames its backbone cannot take) yields
one skipped record per requested metric group, so every (case, metric) that applies to the case
appears exactly once (speedup does not apply to a rectangle).
"""

from __future__ import annotations

import dataclasses
import gc
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

import backbones

from ..core.case import Case
from ..core.errors import UsageError
from ..core.progress import report_progress
from ..core.results import failure, record
from ..measure import load, memory, runtimes, timing
from ..measure.inputs import example_inputs

METRIC_GROUPS = ("params", "flops", "latency", "speedup", "memory", "train", "breakdown", "flops_train")

# The record standing for a group when the group fails or is skipped as a whole.
GROUP_METRIC = {"params": "params", "flops": "flops", "latency": "latency", "speedup": "speedup", "train": "train_step",
                "breakdown": "time_by_part", "flops_train": "flops_train"}  # fmt: skip
REFERENCE_VARIANT = "rectangle"  # what a speed-up is measured against


@dataclass(frozen=True)
class Settings:
    """How hard to measure: timing repeats (cost vs. noise) and the speed switches.

    ``repeats`` timed calls at least and ``min_time_s`` of them, after ``warmup`` untimed ones;
    then more until the median's CI is tight (bench.measure.timing) or ``max_time_s`` of timed calls
    (None: ``min_time_s``) or ``max_repeats`` calls are spent; the same for training steps with
    the ``train_*`` fields, and for the speed-up's pairs with the latency fields (a pair's time
    counts). The presets choose these per cost (see bench.run.presets).
    """

    warmup: int = 2
    repeats: int = 5
    min_time_s: float = 1.0
    max_repeats: int = 50
    train_warmup: int = 1
    train_repeats: int = 3
    train_min_time_s: float = 1.0
    max_time_s: float | None = None
    train_max_time_s: float | None = None
    speed: timing.SpeedSettings = field(default_factory=timing.SpeedSettings)
    save_onnx: str | None = None  # a directory: the onnxruntime runtime writes each case's .onnx there
    onnx_exporter: str = "auto"  # bench.measure.runtimes.EXPORTERS, or auto: the first that exports the model

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Settings:
        d = dict(d)
        d["speed"] = timing.SpeedSettings(**d.get("speed", {}))
        return cls(**d)


def memory_metric(device: str) -> str:
    """The record standing for the memory group on ``device``."""
    return "peak_mem_alloc" if torch.device(device).type == "cuda" else "peak_rss"


def group_metric(group: str, device: str) -> str:
    return memory_metric(device) if group == "memory" else GROUP_METRIC[group]


def failure_status(exc: BaseException) -> str:
    """"oom" for running out of memory (CUDA or CPU), "error" otherwise."""
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return "oom"
    if isinstance(exc, memory.PeakRssError):
        return exc.status
    text = str(exc).lower()
    if isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text):
        return "oom"  # the CPU allocator's and older CUDA versions' wording
    return "error"


def check_device(device: str) -> None:
    """UsageError unless ``device`` names a device this machine has."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UsageError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise UsageError(f"unknown device {device!r}; use cpu, cuda or cuda:N")


def measure_case(
    case: Case,
    metrics: Sequence[str],
    run_id: str,
    *,
    settings: Settings | None = None,
    model: nn.Module | None = None,
    run_dir: str | Path | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the records of ``metrics`` (groups of :data:`METRIC_GROUPS`) for ``case``, one by one.

    ``model`` is the case's model if the caller built it already (``case.build()`` after
    ``torch.manual_seed(0)``); otherwise it is built here. ``run_dir``: where run-wide figures
    are cached (the breakdown group's GEMM peak, in ``meta.json``).
    """
    settings = settings or Settings()
    bad = [m for m in metrics if m not in METRIC_GROUPS]
    if bad:
        raise ValueError(f"unknown metric group {bad[0]!r}; choose from {', '.join(METRIC_GROUPS)}")
    if case.backbone not in backbones.names():
        case.resolve()  # raises the UsageError that names the known backbones
    groups = [g for g in METRIC_GROUPS if g in metrics]  # a fixed order: training changes the weights
    if case.variant == REFERENCE_VARIANT:
        groups = [g for g in groups if g != "speedup"]
    try:
        case = case.resolve()
        check_device(case.device)
        runtimes.check(case.runtime, case.device, case.dtype)  # installed, and takes this dtype here
        if model is None:
            torch.manual_seed(0)  # the same weights for every run of a case (tpc's choices depend on them)
            model = case.build()
        model = model.to(case.device, getattr(torch, case.dtype)).eval()
    except UsageError as e:
        for group in groups:
            yield failure(run_id, case, group_metric(group, case.device), str(e), status="skipped")
        return
    except Exception as e:  # a backbone that fails to build must not end the run
        for group in groups:
            yield failure(run_id, case, group_metric(group, case.device), e, status=failure_status(e))
        return
    applies = METRIC_GROUPS if case.runtime == "eager" else runtimes.ANY_RUNTIME_GROUPS
    for group in [g for g in groups if g not in applies]:
        why = f"{group} is measured on the eager runtime only (the {case.runtime} case times latency and speed-up)"
        yield failure(run_id, case, group_metric(group, case.device), why, status="skipped")
    groups = [g for g in groups if g in applies]
    x, y = example_inputs(case, model)
    on_cpu = torch.device(case.device).type == "cpu"
    if on_cpu and "memory" in groups and "train" in groups and not settings.speed.compile:
        # The fresh process of the memory group runs steady-state training steps anyway: time
        # those instead of running the (most expensive) training steps a second time here.
        groups = [g if g != "memory" else "memory+train" for g in groups if g != "train"]
    if case.variant != REFERENCE_VARIANT and {"latency", "speedup"} <= set(groups):
        # The pairs time the pruned model anyway: its latency is the pruned half of them.
        groups = [g if g != "latency" else "latency+speedup" for g in groups if g != "speedup"]
    seen: list[dict[str, Any]] = []  # this case's records so far: later groups reuse them
    train_too = bool({"train", "flops_train"} & set(metrics))  # the breakdown of a training step too
    with timing.applied(settings.speed):
        for group in groups:
            report_progress(group)  # on the local executor's bar: what this case is measuring
            for rec in _guarded(group, run_id, case, model, x, y, settings, seen, run_dir, train_too):
                seen.append(rec)
                yield rec
    if torch.device(case.device).type == "cuda":
        del model, x, y
        gc.collect()
        torch.cuda.empty_cache()  # the next case starts with the device's memory free


def _guarded(
    group: str, run_id: str, case: Case, model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: Settings,
    seen: Sequence[dict[str, Any]] = (), run_dir: str | Path | None = None, train_too: bool = True,
) -> Iterator[dict[str, Any]]:
    """The group's records; if it raises, a failure record for the group (unless already written)."""
    records = {
        "params": lambda: _params(run_id, case, model),
        "flops": lambda: _flops(run_id, case, model, x),
        "latency": lambda: _latency(run_id, case, model, x, settings),
        "speedup": lambda: _speedup(run_id, case, model, x, settings),
        "latency+speedup": lambda: _speedup(run_id, case, model, x, settings, with_latency=True),
        "memory": lambda: _memory(run_id, case, model, x, y, settings),
        "memory+train": lambda: _memory_cpu(run_id, case, settings, timed=True),
        "train": lambda: _train(run_id, case, model, x, y, settings),
        "breakdown": lambda: _breakdown(run_id, case, model, x, y, settings, seen, run_dir, train_too),
        "flops_train": lambda: _flops_train(run_id, case, model, x, y, seen),
    }[group]
    produced: set[str] = set()
    try:
        for rec in records():
            produced.add(rec["metric"])
            yield rec
    except Exception as e:
        status = failure_status(e)
        if status == "oom" and torch.device(case.device).type == "cuda":
            torch.cuda.empty_cache()
        for g in group.split("+"):
            metric = group_metric(g, case.device)
            if metric not in produced:
                yield failure(run_id, case, metric, e, status=status)


# --------------------------------------------------------------------------- the metrics


def _params(run_id: str, case: Case, model: nn.Module) -> Iterator[dict[str, Any]]:
    yield record(run_id, case, "params", sum(p.numel() for p in model.parameters()))


def _flops(run_id: str, case: Case, model: nn.Module, x: torch.Tensor) -> Iterator[dict[str, Any]]:
    from ..measure import flops  # fvcore and the counters load only when FLOPs are asked for

    profile = list(getattr(model, "token_profile", []))
    # All three first: their disagreement goes into each record. One counter failing (e.g. a
    # trace error) leaves the others.
    reports = flops.count_each(model, x)
    warnings = flops.disagreements({c: r for c, r in reports.items() if isinstance(r, flops.FlopReport)})
    for w in warnings:
        print(f"warning: {case.case_id}: {w}", file=sys.stderr)
    for counter, rep in reports.items():
        if not isinstance(rep, flops.FlopReport):
            rec = failure(run_id, case, "flops", rep, status=failure_status(rep))
            rec["method"] = counter
            yield rec
            continue
        extra: dict[str, Any] = {"note": rep.note} if rep.note else {}
        if counter == "fvcore" or rep.unsupported:
            extra["unsupported"] = dict(rep.unsupported)
        mine = [w for w in warnings if f" {counter} " in w]
        if mine:
            extra["warning"] = "; ".join(mine)
        yield record(run_id, case, "flops", rep.total, method=counter, **extra)
        if counter == "fvcore":
            for i, g in enumerate(rep.blocks):
                tokens = profile[i] if i < len(profile) else None
                yield record(run_id, case, "flops_block", g, method="fvcore", block=i, tokens=tokens)


def _latency(
    run_id: str, case: Case, model: nn.Module, x: torch.Tensor, settings: Settings
) -> Iterator[dict[str, Any]]:
    # The runtime decides what is timed (bench.measure.runtimes); the timing protocol is the same for all.
    prepared = _prepare(case, model, x, settings)
    yield from _preparation_records(run_id, case, prepared)
    if prepared.error:
        raise RuntimeError(prepared.error)  # the latency group fails with the same reason
    yield from _timed_alone(run_id, case, model, prepared, settings)


def _prepare(
    case: Case, model: nn.Module, x: torch.Tensor, settings: Settings, *, save: bool = True
) -> runtimes.Prepared:
    """``model`` ready to be timed on the case's runtime (its .onnx saved where asked, with ``save``)."""
    save_dir = Path(settings.save_onnx) if settings.save_onnx and save else None
    return runtimes.prepare(
        case.runtime, _maybe_compiled(model, settings) if case.runtime == "eager" else model, x,
        device=case.device, save_dir=save_dir, name=_file_name(case), exporter=settings.onnx_exporter,
    )  # fmt: skip


def _preparation_records(run_id: str, case: Case, prepared: runtimes.Prepared) -> Iterator[dict[str, Any]]:
    """compile_s, export_error...: what preparing the runtime measured, failed where it failed."""
    for rep in prepared.reports:
        status = "error" if rep.error else "ok"
        yield record(run_id, case, rep.metric, rep.value, method=rep.method, status=status, error=rep.error,
                     **rep.extra)  # fmt: skip


def _latency_env(case: Case, settings: Settings, prepared: runtimes.Prepared) -> dict[str, Any]:
    env = timing.describe(settings.speed, case.device, case.dtype) | prepared.fields
    if case.runtime == "compile":
        env["compile"] = True
    return env


def _timed_alone(
    run_id: str, case: Case, model: nn.Module, prepared: runtimes.Prepared, settings: Settings
) -> Iterator[dict[str, Any]]:
    with load.Monitor(torch.get_num_threads()) as mon:
        samples = timing.measure_latency(
            prepared.forward, warmup=settings.warmup, repeats=settings.repeats, device=case.device,
            min_time_s=settings.min_time_s, max_repeats=settings.max_repeats, max_time_s=settings.max_time_s,
        )
    yield from _latency_records(run_id, case, model, samples, settings, mon.fields(),
                                _latency_env(case, settings, prepared))  # fmt: skip


def _latency_records(
    run_id: str, case: Case, model: nn.Module, samples: list[float], settings: Settings,
    load_fields: dict[str, Any], env: dict[str, Any],
) -> Iterator[dict[str, Any]]:
    """latency (with its statistics), latency_p10, latency_p90, fps and clips_per_s from ``samples`` (ms)."""
    s = timing.summarise(samples)
    method = timing.timer_name(case.device)
    stats = timing.stats_fields(samples, load=load_fields)
    yield record(run_id, case, "latency", s.median, method=method, samples=samples, warmup=settings.warmup,
                 **stats, **env)  # fmt: skip
    yield record(run_id, case, "latency_p10", s.p10, method=method, threads=env["threads"])
    yield record(run_id, case, "latency_p90", s.p90, method=method, threads=env["threads"])
    m: Any = model
    fps, clips = timing.throughput(s.median, str(m.pipeline), case.batch, int(case.frames or m.frames))
    yield record(run_id, case, "fps", fps, threads=env["threads"])
    yield record(run_id, case, "clips_per_s", clips, threads=env["threads"])


def _breakdown(
    run_id: str, case: Case, model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: Settings,
    seen: Sequence[dict[str, Any]], run_dir: str | Path | None, train_too: bool,
) -> Iterator[dict[str, Any]]:
    from ..measure import breakdown  # torch.profiler loads only when a breakdown is asked for

    if settings.speed.compile:
        raise UsageError("the breakdown profiles the eager model; run it without compile")
    yield from breakdown.breakdown_records(run_id, case, model, x, y, settings, seen, run_dir, train=train_too)


def _flops_train(
    run_id: str, case: Case, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seen: Sequence[dict[str, Any]]
) -> Iterator[dict[str, Any]]:
    from ..measure import breakdown

    yield from breakdown.flops_train_records(run_id, case, model, x, y, seen)


def _train(
    run_id: str, case: Case, model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: Settings
) -> Iterator[dict[str, Any]]:
    step = timing.train_step_fn(_maybe_compiled(model, settings), x, y)
    try:
        with load.Monitor(torch.get_num_threads()) as mon:
            samples = timing.measure_latency(
                step, warmup=settings.train_warmup, repeats=settings.train_repeats, device=case.device,
                min_time_s=settings.train_min_time_s, max_repeats=settings.max_repeats,
                max_time_s=settings.train_max_time_s,
            )
    finally:
        model.eval()
    yield _train_record(run_id, case, samples, settings, fresh_process=False, load_fields=mon.fields())


def _train_record(
    run_id: str, case: Case, samples: list[float], settings: Settings, *, fresh_process: bool,
    load_fields: dict[str, Any],
) -> dict[str, Any]:
    s = timing.summarise(samples)
    env = timing.describe(settings.speed, case.device, case.dtype)
    return record(
        run_id, case, "train_step", s.median, method=timing.timer_name(case.device), p10=s.p10, p90=s.p90,
        samples=samples, warmup=settings.train_warmup, optimizer="AdamW", loss="mpjpe",
        fresh_process=fresh_process, **timing.stats_fields(samples, load=load_fields), **env,
    )


def reference_case(case: Case) -> Case:
    """The rectangle ``case`` is compared with: the same case but the variant and its pruning."""
    return dataclasses.replace(case, variant=REFERENCE_VARIANT, schedule="", pruner="", recoverer="").resolve()


def _speedup(
    run_id: str, case: Case, model: nn.Module, x: torch.Tensor, settings: Settings, *, with_latency: bool = False
) -> Iterator[dict[str, Any]]:
    """The paired speed-up on the case's runtime; ``with_latency``: first the case's latency records
    (and its runtime's compile_s / export_error), from the pruned calls."""
    new = _prepare(case, model, x, settings)
    if with_latency:
        yield from _preparation_records(run_id, case, new)
    if new.error:
        raise RuntimeError(new.error)  # latency and speedup fail with the runtime's reason
    ref_case = reference_case(case)
    torch.manual_seed(0)  # the rectangle's weights as its own case would have them
    ref_model = ref_case.build().to(case.device, getattr(torch, case.dtype)).eval()
    ref = _prepare(ref_case, ref_model, x, settings, save=False)  # its own case saves its .onnx
    if ref.error:
        if with_latency:  # the case's own latency still stands
            yield from _timed_alone(run_id, case, model, new, settings)
        raise RuntimeError(f"the rectangle {ref_case.case_id} cannot run on {case.runtime}: {ref.error}")

    with load.Monitor(torch.get_num_threads()) as mon:
        ref_ms, new_ms = timing.measure_paired(
            ref.forward, new.forward, warmup=settings.warmup, repeats=settings.repeats, device=case.device,
            min_time_s=settings.min_time_s, max_repeats=settings.max_repeats, max_time_s=settings.max_time_s,
        )
    ratios = [r / n for r, n in zip(ref_ms, new_ms, strict=True)]
    env = _latency_env(case, settings, new)
    load_fields = mon.fields()
    if with_latency:
        paired = {"paired": True, "reference": ref_case.case_id}
        yield from _latency_records(run_id, case, model, new_ms, settings, load_fields, env | paired)
    yield record(
        run_id, case, "speedup", timing.summarise(ratios).median, method="paired", reference=ref_case.case_id,
        samples=ratios, samples_rectangle=ref_ms, samples_pruned=new_ms,
        latency_rectangle_ms=timing.summarise(ref_ms).median, latency_pruned_ms=timing.summarise(new_ms).median,
        timer=timing.timer_name(case.device), warmup=settings.warmup,
        **timing.stats_fields(ratios, load=load_fields), **env,
    )


def _memory(
    run_id: str, case: Case, model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: Settings
) -> Iterator[dict[str, Any]]:
    if torch.device(case.device).type != "cuda":
        yield from _memory_cpu(run_id, case, settings, timed=False)
        return
    for phase in memory.PHASES:
        try:
            rep = _cuda_phase(phase, case, model, x, y)
        except Exception as e:  # e.g. OOM in the training phase: the inference figures stand
            status = failure_status(e)
            torch.cuda.empty_cache()
            yield failure_with(run_id, case, "peak_mem_alloc", e, status, phase=phase, method="torch.cuda")
            continue
        yield record(run_id, case, "peak_mem_alloc", rep.alloc_mib, method="torch.cuda", phase=phase)
        if rep.alloc_mib is not None and rep.baseline_mib is not None:
            yield record(run_id, case, "peak_mem_activations", rep.alloc_mib - rep.baseline_mib,
                         method="torch.cuda", phase=phase, baseline_mib=rep.baseline_mib)  # fmt: skip
        yield record(run_id, case, "peak_mem_reserved", rep.reserved_mib, method="torch.cuda", phase=phase)
        if rep.device_mib is None:
            yield failure_with(run_id, case, "peak_mem_device", rep.note, "skipped", phase=phase, method="nvml")
        else:
            yield record(run_id, case, "peak_mem_device", rep.device_mib, method="nvml", phase=phase)


def _cuda_phase(phase: str, case: Case, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> memory.MemoryReport:
    if phase == "inference":
        def inference() -> None:
            with torch.inference_mode():
                model(x)

        return memory.cuda_peak_memory(inference, case.device)
    step = timing.train_step_fn(model, x, y)
    try:
        step()  # AdamW's state exists from here on: the reported training step is the steady state
        model.zero_grad(set_to_none=True)  # as the step does first: gradients are not in the baseline
        return memory.cuda_peak_memory(step, case.device)
    finally:
        model.eval()
        model.zero_grad(set_to_none=True)  # gradients and optimizer state go with ``step``


def _memory_cpu(run_id: str, case: Case, settings: Settings, *, timed: bool) -> Iterator[dict[str, Any]]:
    """peak_rss per phase from a fresh process; with ``timed`` also train_step from the same steps."""
    error: memory.PeakRssError | None = None
    train_timing = None
    if timed:
        train_timing = {"warmup": settings.train_warmup, "repeats": settings.train_repeats,
                        "min_time_s": settings.train_min_time_s, "max_repeats": settings.max_repeats,
                        "max_time_s": settings.train_max_time_s}  # fmt: skip
    with load.Monitor(torch.get_num_threads()) as mon:
        try:
            peaks = memory.peak_rss(
                dataclasses.asdict(case), memory.PHASES, threads=torch.get_num_threads(), train_timing=train_timing
            )
        except memory.PeakRssError as e:  # the phases measured before the failure still count
            peaks, error = e.partial, e
    for phase in memory.PHASES:
        if phase in peaks:
            yield record(
                run_id, case, "peak_rss", peaks[phase], method="process", phase=phase,
                baseline_mib=peaks.get("baseline_mib"), fresh_process=True,
            )
            if f"activations_{phase}" in peaks:
                yield record(run_id, case, "peak_mem_activations", peaks[f"activations_{phase}"],
                             method="rss_delta", phase=phase, fresh_process=True)  # fmt: skip
        else:
            assert error is not None
            yield failure_with(run_id, case, "peak_rss", error, error.status, phase=phase, method="process")
    if not timed:
        return
    if "train_samples" not in peaks:
        assert error is not None
        yield failure_with(run_id, case, "train_step", error, error.status, method=timing.TIMER_CPU)
        return
    # The fresh process measured the load around its own timed steps (where they ran); the monitor
    # here is the fallback for a server that did not.
    load_fields = peaks.get("train_load") or mon.fields()
    yield _train_record(run_id, case, peaks["train_samples"], settings, fresh_process=True, load_fields=load_fields)


def failure_with(
    run_id: str, case: Case, metric: str, why: BaseException | str, status: str, **extra: Any
) -> dict[str, Any]:
    """A failure record with extra fields (``phase``, ``method``...)."""
    rec = failure(run_id, case, metric, why, status=status)
    rec.update(extra)
    return rec


def _file_name(case: Case) -> str:
    """The case id as a file name (for the saved .onnx)."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", case.case_id).strip("_")


def _maybe_compiled(model: nn.Module, settings: Settings) -> nn.Module:
    if not settings.speed.compile:
        return model
    compiled: nn.Module = torch.compile(model)  # type: ignore[assignment]  # an OptimizedModule
    return compiled
