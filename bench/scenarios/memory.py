"""The ``memory`` group: peak memory per phase (inference, train). On CUDA the allocator's peaks in
this process (bench.measure.memory.cuda_peak_memory); on CPU peak_rss from a fresh process, whose
steady-state training steps can be timed too (the ``memory+train`` fusion of measure_case)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn

from ..core.case import Case
from ..core.results import record
from ..measure import load, memory, timing
from .base import Settings, failure_status, failure_with
from .train import train_record


def records(
    run_id: str, case: Case, model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: Settings
) -> Iterator[dict[str, Any]]:
    if torch.device(case.device).type != "cuda":
        yield from cpu_records(run_id, case, settings, timed=False)
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


def cpu_records(run_id: str, case: Case, settings: Settings, *, timed: bool) -> Iterator[dict[str, Any]]:
    """peak_rss per phase from a fresh process; with ``timed`` also train_step from the same steps."""
    error: memory.PeakRssError | None = None
    train_timing = settings.train_effort() if timed else None
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
    yield train_record(run_id, case, peaks["train_samples"], settings, fresh_process=True, load_fields=load_fields)
