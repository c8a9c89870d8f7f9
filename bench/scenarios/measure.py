"""Measure one case: the records of every requested metric, yielded as each one is measured.

    for rec in measure_case(case, ["params", "flops", "latency"], run_id, settings=Settings()):
        writer.write(rec)

This module is the dispatcher: which groups run for a case, in which order, and which share their
measurements. Each group's records come from a module of its own: bench.scenarios.counts (params,
flops), .latency, .speedup, .stream, .memory, .train and .breakdown (breakdown, flops_train); what they share
(Settings, the groups' standing records, failure records) is bench.scenarios.base.

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
- ``stream`` (bench.scenarios.stream): the model following a live camera on the wall clock, per
  camera rate (``settings.stream``): stream_latency, stream_rtf, stream_dropped (``fps_in`` tells
  the rates apart); stream_max_fps once; stream_speedup for a pruned case (paired with its
  rectangle on one stream). On every runtime.
- precision (``case.precision``: fp32, fp16, bf16, int8; bench.measure.precision says where each
  runs, and a case it cannot run is skipped with the reason): the ``speedup`` group of a
  reduced-precision case (its rectangle too) times it in rounds with its fp32 case, and a pruned
  one with the fp32 rectangle and its own-precision rectangle as well (bench.scenarios.precision):
  precision_speedup (method ``paired``: over fp32; ``paired_rectangle``: over the fp32 rectangle)
  and speedup. An int8 case measures params, flops (of the float model), latency, speedup and
  pose_error; its memory, training and breakdown are skipped.
- ``pose_error`` (bench.scenarios.pose_error): pose_error (mm), the MPJPE of the case's poses
  against fp32 eager poses of the same trained weights, with ``weights`` and ``mpjpe_delta``.
- ``memory``: per phase (``phase`` inference | train): peak_mem_alloc, peak_mem_reserved and
  peak_mem_device on CUDA, peak_rss on CPU (a fresh process, see bench.measure.memory), and on both
  peak_mem_activations (the step's peak above the memory in use before it).
- ``breakdown`` (bench.scenarios.breakdown): machine_peak_gflops (a GEMM microbenchmark, once per run),
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

import gc
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

import backbones

from ..core.case import Case
from ..core.errors import UsageError
from ..core.progress import report_progress
from ..core.results import failure
from ..measure import allocator, runtimes, timing
from ..measure import precision as precision_support
from ..measure.inputs import example_inputs
from . import breakdown, counts, latency, memory, pose_error, precision, speedup, stream, train
from .base import METRIC_GROUPS, REFERENCE_VARIANT, Settings, check_device, failure_status, group_metric


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
    if case.variant == REFERENCE_VARIANT and not precision.reduced(case):
        groups = [g for g in groups if g != "speedup"]  # a reduced-precision rectangle has its fp32 one
    allocator.apply(settings.allocator)  # this process's malloc, before the model's tensors exist
    try:
        case = case.resolve()
        check_device(case.device)
        why = precision_support.unsupported(case.precision, case.runtime, case.device)
        if why:
            raise UsageError(why)  # e.g. fp16 on a CPU without native half matmul: skipped, with the reason
        runtimes.check(case.runtime, case.device, case.dtype)  # installed, and takes this dtype here
        if model is None:
            torch.manual_seed(0)  # the same weights for every run of a case (tpc's choices depend on them)
            model = case.build()
        model = model.to(case.device, getattr(torch, case.dtype)).eval()
    except UsageError as e:
        for group in groups:
            yield failure(run_id, case, _standing(group, case), str(e), status="skipped")
        return
    except Exception as e:  # a backbone that fails to build must not end the run
        for group in groups:
            yield failure(run_id, case, _standing(group, case), e, status=failure_status(e))
        return
    applies = METRIC_GROUPS if case.runtime == "eager" else runtimes.ANY_RUNTIME_GROUPS
    for group in [g for g in groups if g not in applies]:
        why = f"{group} is measured on the eager runtime only (the {case.runtime} case times latency and speed-up)"
        yield failure(run_id, case, group_metric(group, case.device), why, status="skipped")
    groups = [g for g in groups if g in applies]
    if case.precision == "int8":
        for group in [g for g in groups if g not in INT8_GROUPS]:
            why = f"{group} is measured in float precisions only (int8 dynamic quantization is for inference)"
            yield failure(run_id, case, group_metric(group, case.device), why, status="skipped")
        groups = [g for g in groups if g in INT8_GROUPS]
    x, y = example_inputs(case, model)
    on_cpu = torch.device(case.device).type == "cpu"
    if on_cpu and "memory" in groups and "train" in groups and not settings.speed.compile:
        # The fresh process of the memory group runs steady-state training steps anyway: time
        # those instead of running the (most expensive) training steps a second time here.
        groups = [g if g != "memory" else "memory+train" for g in groups if g != "train"]
    if (case.variant != REFERENCE_VARIANT or precision.reduced(case)) and {"latency", "speedup"} <= set(groups):
        # The pairs (rounds) time the case's model anyway: its latency is its half (share) of them.
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


def _standing(group: str, case: Case) -> str:
    """The record standing for ``group`` of ``case`` when the group fails or is skipped as a whole."""
    if group == "speedup" and case.variant == REFERENCE_VARIANT:
        return "precision_speedup"  # only a reduced-precision rectangle has a speed-up: over fp32
    return group_metric(group, case.device)


# What an int8 case measures: the float model's counts, the quantized model's speed and pose error.
INT8_GROUPS = ("params", "flops", "latency", "speedup", "pose_error")


def _guarded(
    group: str, run_id: str, case: Case, model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: Settings,
    seen: Sequence[dict[str, Any]] = (), run_dir: str | Path | None = None, train_too: bool = True,
) -> Iterator[dict[str, Any]]:
    """The group's records; if it raises, a failure record for the group (unless already written)."""
    paired: Any = precision if precision.reduced(case) else speedup  # over fp32 too, or over the rectangle
    records = {
        "params": lambda: counts.params_records(run_id, case, model),
        "flops": lambda: counts.flops_records(run_id, case, model, x),
        "latency": lambda: latency.records(run_id, case, model, x, settings),
        "speedup": lambda: paired.records(run_id, case, model, x, settings),
        "stream": lambda: stream.records(run_id, case, model, x, settings),
        "latency+speedup": lambda: paired.records(run_id, case, model, x, settings, with_latency=True),
        "pose_error": lambda: pose_error.records(run_id, case, settings, run_dir),
        "memory": lambda: memory.records(run_id, case, model, x, y, settings),
        "memory+train": lambda: memory.cpu_records(run_id, case, settings, timed=True),
        "train": lambda: train.records(run_id, case, model, x, y, settings),
        "breakdown": lambda: breakdown.records(run_id, case, model, x, y, settings, seen, run_dir, train_too),
        "flops_train": lambda: breakdown.flops_train_records(run_id, case, model, x, y, seen),
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
            metric = _standing(g, case)
            if metric not in produced:
                yield failure(run_id, case, metric, e, status=status)
