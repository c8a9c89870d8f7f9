"""The ``speedup`` group: a pruned case against its own rectangle (:func:`reference_case`), the two
forwards called alternately (bench.measure.timing.measure_paired); with ``latency`` asked for too,
the case's latency records come from the pruned half of the same pairs."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn

from ..core.case import Case
from ..core.results import record
from ..measure import timing
from ..measure.phase import Phase
from .base import REFERENCE_VARIANT, Settings
from .latency import latency_env, latency_records, preparation_records, prepare, timed_alone


def reference_case(case: Case) -> Case:
    """The rectangle ``case`` is compared with: the same case but the variant and its pruning."""
    return dataclasses.replace(case, variant=REFERENCE_VARIANT, schedule="", pruner="", recoverer="").resolve()


def records(
    run_id: str, case: Case, model: nn.Module, x: torch.Tensor, settings: Settings, *, with_latency: bool = False
) -> Iterator[dict[str, Any]]:
    """The paired speed-up on the case's runtime; ``with_latency``: first the case's latency records
    (and its runtime's compile_s / export_error), from the pruned calls."""
    new = prepare(case, model, x, settings)
    if with_latency:
        yield from preparation_records(run_id, case, new)
    if new.error:
        raise RuntimeError(new.error)  # latency and speedup fail with the runtime's reason
    ref_case = reference_case(case)
    torch.manual_seed(0)  # the rectangle's weights as its own case would have them
    ref_model = ref_case.build().to(case.device, getattr(torch, case.dtype)).eval()
    ref = prepare(ref_case, ref_model, x, settings, save=False)  # its own case saves its .onnx
    if ref.error:
        if with_latency:  # the case's own latency still stands
            yield from timed_alone(run_id, case, model, new, settings)
        raise RuntimeError(f"the rectangle {ref_case.case_id} cannot run on {case.runtime}: {ref.error}")

    with Phase(torch.get_num_threads(), case.device, with_reference=settings.reference) as phase:
        ref_ms, new_ms = timing.measure_paired(
            ref.forward, new.forward, device=case.device, reference=phase.reference, **settings.latency_effort()
        )
    ratios = [r / n for r, n in zip(ref_ms, new_ms, strict=True)]
    env = latency_env(case, settings, new)
    load_fields = phase.fields()
    if with_latency:
        paired = {"paired": True, "reference": ref_case.case_id}
        yield from latency_records(run_id, case, model, new_ms, settings, load_fields, env | paired)
    yield record(
        run_id, case, "speedup", timing.summarise(ratios).median, method="paired", reference=ref_case.case_id,
        samples=ratios, samples_rectangle=ref_ms, samples_pruned=new_ms,
        latency_rectangle_ms=timing.summarise(ref_ms).median, latency_pruned_ms=timing.summarise(new_ms).median,
        timer=timing.timer_name(case.device), warmup=settings.warmup,
        **timing.stats_fields(ratios, load=load_fields, ratio=True), **env,
    )
