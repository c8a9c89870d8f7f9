"""The ``speedup`` group of a reduced-precision case (fp16, bf16, int8): speed-ups over fp32, paired.

The case is timed in rounds with its fp32 counterparts on the same runtime, one call of each per
round, in one process (bench.measure.timing.measure_rounds, measure_paired for more than two forwards):

- every reduced-precision case with its fp32 case (same variant, schedule, runtime...):
  ``precision_speedup`` (x, method ``paired``, ``reference`` the fp32 case's id,
  ``against: "fp32"``): what the precision alone buys;
- a pruned case also with the fp32 rectangle: ``precision_speedup`` (method ``paired_rectangle``,
  ``against: "fp32 rectangle"``): pruning and precision together, so "int8 hierarchical vs fp32
  rectangle" is one ratio with a CI; and with its own-precision rectangle: ``speedup`` (method
  ``paired``, as for an fp32 case: pruning at this precision).

With ``latency`` asked for too, the case's latency records come from its calls in the same rounds
(``paired: true``), as a pruned fp32 case's come from its pairs. The references are built with the
same seed as their own cases and prepared on the same runtime (exported, quantized, compiled);
a reference that cannot run there fails the group with the reason, and the case's latency is
then timed alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn

from ..core.case import Case
from ..core.results import record
from ..measure import load, timing
from ..measure.inputs import example_inputs
from ..measure.timing import measure_rounds
from .base import REFERENCE_VARIANT, Settings
from .latency import latency_env, latency_records, preparation_records, prepare, timed_alone
from .speedup import reference_case


def fp32_case(case: Case) -> Case:
    """``case`` in fp32: the reference of its precision speed-up (and of its pose error)."""
    return dataclasses.replace(case, precision="fp32", dtype="float32").resolve()


def reduced(case: Case) -> bool:
    """Whether ``case`` runs in a precision other than fp32 (either spelling: --precision or --dtype)."""
    return case.precision != "fp32" or case.dtype != "float32"


def records(
    run_id: str, case: Case, model: nn.Module, x: torch.Tensor, settings: Settings, *, with_latency: bool = False
) -> Iterator[dict[str, Any]]:
    """The speed-ups over fp32 of a reduced-precision ``case`` (module docstring); ``with_latency``:
    first its latency records (and its runtime's export_error / compile_s) from the same rounds."""
    new = prepare(case, model, x, settings)
    if with_latency:
        yield from preparation_records(run_id, case, new)
    if new.error:
        raise RuntimeError(new.error)
    pruned = case.variant != REFERENCE_VARIANT
    refs: list[tuple[str, Case]] = []  # (role, case), in the order they are called in a round
    if pruned:
        refs.append(("rectangle", reference_case(case)))
        refs.append(("fp32 rectangle", reference_case(fp32_case(case))))
    refs.append(("fp32", fp32_case(case)))
    prepared = []
    for role, ref_case in refs:
        torch.manual_seed(0)  # the weights its own case would have
        ref_model = ref_case.build().to(case.device, getattr(torch, ref_case.dtype)).eval()
        ref_x = example_inputs(ref_case, ref_model)[0]
        ref = prepare(ref_case, ref_model, ref_x, settings, save=False)  # its own case saves its .onnx
        if ref.error:
            if with_latency:  # the case's own latency still stands
                yield from timed_alone(run_id, case, model, new, settings)
            raise RuntimeError(f"the {role} reference {ref_case.case_id} cannot run on {case.runtime}: {ref.error}")
        prepared.append(ref)

    with load.Monitor(torch.get_num_threads()) as mon:
        ms = measure_rounds([*(p.forward for p in prepared), new.forward], device=case.device,
                            **settings.latency_effort())  # fmt: skip
    new_ms, by_role = ms[-1], {role: m for (role, _), m in zip(refs, ms, strict=False)}
    env = latency_env(case, settings, new)
    load_fields = mon.fields()
    ids = {role: c.case_id for role, c in refs}
    rounds = {"rounds_with": [c.case_id for _, c in refs]}
    if with_latency:
        paired = {"paired": True, "reference": ids["fp32"], **rounds}
        yield from latency_records(run_id, case, model, new_ms, settings, load_fields, env | paired)
    common = {"timer": timing.timer_name(case.device), "warmup": settings.warmup, **rounds, **env}
    if pruned:
        yield _ratio_record(run_id, case, "speedup", "paired", ids["rectangle"], by_role["rectangle"], new_ms,
                            load_fields, common, samples_rectangle=by_role["rectangle"], samples_pruned=new_ms)  # fmt: skip
    yield _ratio_record(run_id, case, "precision_speedup", "paired", ids["fp32"], by_role["fp32"], new_ms, load_fields,
                        common, against="fp32")  # fmt: skip
    if pruned:
        yield _ratio_record(run_id, case, "precision_speedup", "paired_rectangle", ids["fp32 rectangle"],
                            by_role["fp32 rectangle"], new_ms, load_fields, common, against="fp32 rectangle")  # fmt: skip


def _ratio_record(
    run_id: str, case: Case, metric: str, method: str, reference: str, ref_ms: list[float], new_ms: list[float],
    load_fields: dict[str, Any], common: dict[str, Any], **extra: Any,
) -> dict[str, Any]:
    """A speed-up record: the median of the per-round ratios reference ms / case ms, with their statistics."""
    ratios = [r / n for r, n in zip(ref_ms, new_ms, strict=True)]
    return record(
        run_id, case, metric, timing.summarise(ratios).median, method=method, reference=reference, samples=ratios,
        samples_reference=ref_ms, samples_case=new_ms, latency_reference_ms=timing.summarise(ref_ms).median,
        latency_case_ms=timing.summarise(new_ms).median, **extra, **timing.stats_fields(ratios, load=load_fields),
        **common,
    )  # fmt: skip
