"""The ``breakdown`` and ``flops_train`` groups: where the time, the memory and the FLOPs of a
case go, as records (the labelling and profiling are bench.measure.profiler's, the GEMM peak
bench.measure.gemm's).

breakdown: machine_peak_gflops, achieved_gflops per FLOP counter (flops / latency), time_by_part
and mem_by_part per (phase, part, block). The profiled call is slower than an unprofiled one (the
profiler's overhead per op), so the parts are measured in a separate pass from the latency figure,
and each record carries both sums: ``sum_ms`` (the parts) and ``latency_ms`` (the unprofiled
median); they agree within ``PART_TOLERANCE`` on a quiet machine. On CUDA the parts are kernel time,
so the sum can fall short of the latency (see bench.measure.profiler).

Where the memory goes: one more profiled call (a forward, and a training step when that is broken
down too) with ``profile_memory=True``, apart from the timed pass so that its bookkeeping does not
slow the parts down, is split by the same ranges into ``mem_by_part`` (MiB allocated by part, see
bench.measure.profiler).

flops_train: the torch counter over one training step's forward + loss + backward.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..core.case import Case
from ..core.errors import UsageError
from ..core.results import record
from ..measure import timing
from ..measure.gemm import machine_peak
from ..measure.profiler import (
    Key,
    Stats,
    flops_by_part,
    inference_call,
    labelled,
    profile_calls,
    profile_memory_calls,
    stats,
    summarise_parts,
    train_call,
)
from .base import Settings

PART_TOLERANCE = 0.2  # |sum of parts - latency| / latency a breakdown is expected to stay within


def records(
    run_id: str, case: Case, model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: Settings,
    seen: Sequence[dict[str, Any]], run_dir: str | Path | None, train_too: bool,
) -> Iterator[dict[str, Any]]:
    """The breakdown group as measure_case runs it: of the eager model only (not with ``compile``)."""
    if settings.speed.compile:
        raise UsageError("the breakdown profiles the eager model; run it without compile")
    yield from breakdown_records(run_id, case, model, x, y, settings, seen, run_dir, train=train_too)


def _seen_value(seen: Sequence[dict[str, Any]], metric: str, **match: Any) -> dict[str, Any] | None:
    """The ok record of ``metric`` measured earlier for this case (matching ``match``), if any."""
    for r in seen:
        if r["metric"] == metric and r["status"] == "ok" and all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def _part_records(
    run_id: str, case: Case, phase: str, summary: dict[Key, list[float]], latency: Stats | None,
    env: dict[str, Any], flops: dict[tuple[str, int | None], float] | None = None,
) -> Iterator[dict[str, Any]]:
    total = sum(float(np.median(v)) for v in summary.values())
    adds_up = abs(total - latency.median) <= PART_TOLERANCE * latency.median if latency else None
    for (step, part, block), samples in summary.items():
        extra: dict[str, Any] = {"step": step} if phase == "train" else {}
        if flops is not None:
            extra["flops_g"] = flops.get((part, block), 0.0)
        yield record(
            run_id, case, "time_by_part", float(np.median(samples)), method="torch.profiler", part=part,
            block=block, phase=phase, sum_ms=total, latency_ms=latency.median if latency else None,
            tolerance=PART_TOLERANCE, adds_up=adds_up, **timing.stats_fields(samples), **extra, **env,
        )  # fmt: skip


def _mem_what(device: str) -> str:
    kind = "device" if torch.device(device).type == "cuda" else "CPU"
    return (f"positive self {kind} memory usage of the profiled events (profile_memory=True): per op, the bytes it "
            "allocated net of what it freed before returning; frees of earlier ops' tensors not subtracted. "
            "Allocations, not a peak (peak_mem_activations is the peak)")  # fmt: skip


def _mem_records(run_id: str, case: Case, phase: str, summary: dict[Key, list[float]]) -> Iterator[dict[str, Any]]:
    total = sum(float(np.median(v)) for v in summary.values())
    summed = _mem_what(case.device)
    for (step, part, block), samples in summary.items():
        extra: dict[str, Any] = {"step": step} if phase == "train" else {}
        yield record(
            run_id, case, "mem_by_part", float(np.median(samples)), method="torch.profiler", part=part, block=block,
            phase=phase, summed=summed, total_mib=total, n=len(samples), **extra,
        )  # fmt: skip


def breakdown_records(
    run_id: str, case: Case, model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: Settings,
    seen: Sequence[dict[str, Any]] = (), run_dir: str | Path | None = None, *, train: bool = True,
) -> Iterator[dict[str, Any]]:
    """The ``breakdown`` group: machine_peak_gflops, achieved_gflops per counter, time_by_part, mem_by_part.

    ``train``: break a training step down too (phase train; forward, backward, optimizer).
    mem_by_part comes from one more profiled call per phase, with memory profiling on.
    Reuses the case's latency, train_step and flops records in ``seen`` when those groups ran;
    otherwise it times (and counts with the torch counter) here. The model's weights are restored
    after the profiled training steps.
    """
    from ..measure.flops import count_flops

    device, threads = case.device, torch.get_num_threads()
    env = timing.describe(settings.speed, device, case.dtype)
    peak = machine_peak(device, case.dtype, threads, run_dir)
    yield record(
        run_id, case, "machine_peak_gflops", peak["value"], method="gemm", size=peak["size"],
        by_size=peak["by_size"], cached=peak["cached"], threads=threads, dtype=case.dtype,
    )
    model.eval()
    lat_rec = _seen_value(seen, "latency")
    if lat_rec is not None and lat_rec.get("samples"):
        latency = stats(lat_rec["samples"], lat_rec)
    else:
        def forward() -> None:
            with torch.inference_mode():
                model(x)

        latency = stats(timing.measure_latency(
            forward, warmup=settings.warmup, repeats=settings.repeats, device=device,
            min_time_s=settings.min_time_s, max_repeats=settings.max_repeats,
        ))  # fmt: skip
    counted = {r["method"]: r["value"] for r in seen if r["metric"] == "flops" and r["status"] == "ok"}
    if not counted:
        counted = {"torch": count_flops(model, x, "torch").total}
    for counter, gflops in counted.items():
        achieved = gflops / (latency.median / 1e3)
        yield record(
            run_id, case, "achieved_gflops", achieved, method=counter, flops=gflops, latency_ms=latency.median,
            n=latency.n, ci_low=gflops / (latency.ci_high / 1e3), ci_high=gflops / (latency.ci_low / 1e3),
            stable=latency.stable, unstable_reason=latency.unstable_reason, machine_peak_gflops=peak["value"],
            of_peak=achieved / peak["value"], **env,
        )
    backbone = case.backbone
    part_flops = flops_by_part(model, x, backbone)
    with labelled(model, backbone):
        forward = inference_call(model, x, device)
        calls = profile_calls(forward, calls=max(3, settings.repeats), device=device, warmup=1)
        mem = profile_memory_calls(forward, device=device)
    yield from _part_records(run_id, case, "inference", summarise_parts(calls), latency, env, part_flops)
    yield from _mem_records(run_id, case, "inference", summarise_parts(mem))
    if not train:
        return
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        with labelled(model, backbone):
            step = train_call(model, x, y)
            calls = profile_calls(step, calls=max(2, settings.train_repeats), device=device,
                                  warmup=max(1, settings.train_warmup))  # fmt: skip
            train_rec = _seen_value(seen, "train_step")
            if train_rec is not None and train_rec.get("samples"):
                train_latency = stats(train_rec["samples"], train_rec)
            else:
                train_latency = stats(timing.measure_latency(
                    step, warmup=0, repeats=max(1, settings.train_repeats), device=device,
                    min_time_s=settings.train_min_time_s, max_repeats=settings.max_repeats,
                ))  # fmt: skip
            train_mem = profile_memory_calls(step, device=device)  # the same optimizer: its state exists
    finally:
        model.load_state_dict(saved)
        model.zero_grad(set_to_none=True)
        model.eval()
    yield from _part_records(run_id, case, "train", summarise_parts(calls), train_latency, env)
    yield from _mem_records(run_id, case, "train", summarise_parts(train_mem))


def flops_train_records(
    run_id: str, case: Case, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seen: Sequence[dict[str, Any]] = ()
) -> Iterator[dict[str, Any]]:
    """The ``flops_train`` group: one record, with the forward's torch count beside it."""
    from ..measure.flops import count_flops
    from ..measure.flops_torch import count_train_step

    fwd = _seen_value(seen, "flops", method="torch")
    forward = fwd["value"] if fwd else count_flops(model, x, "torch").total
    total = count_train_step(model, x, y)
    yield record(run_id, case, "flops_train", total, method="torch", flops_inference=forward,
                 train_over_inference=total / forward if forward else None)  # fmt: skip
