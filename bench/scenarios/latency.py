"""The ``latency`` group: a case's forward prepared on its runtime and timed alone, and the records
its times make (latency, latency_p10, latency_p90, fps, clips_per_s).

The speed-up's pairs (bench.scenarios.speedup) prepare the forward and make the latency records
the same way, from here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..core.case import Case
from ..core.results import record
from ..measure import runtimes, timing
from ..measure.phase import Phase
from .base import Settings


def records(
    run_id: str, case: Case, model: nn.Module, x: torch.Tensor, settings: Settings
) -> Iterator[dict[str, Any]]:
    # The runtime decides what is timed (bench.measure.runtimes); the timing protocol is the same for all.
    prepared = prepare(case, model, x, settings)
    yield from preparation_records(run_id, case, prepared)
    if prepared.error:
        raise RuntimeError(prepared.error)  # the latency group fails with the same reason
    yield from timed_alone(run_id, case, model, prepared, settings)


def prepare(
    case: Case, model: nn.Module, x: torch.Tensor, settings: Settings, *, save: bool = True,
    parity_tolerance: float | None = None,
) -> runtimes.Prepared:
    """``model`` ready to be timed on the case's runtime (its .onnx saved where asked, with ``save``).

    An int8 case times the model's dynamic quantization (bench.measure.precision): a quantized copy
    on eager and compile, the quantized export on onnxruntime; ``model`` itself stays float.
    """
    save_dir = Path(settings.save_onnx) if settings.save_onnx and save else None
    extra: dict[str, Any] = {}
    if case.precision == "int8" and case.runtime != "onnxruntime":
        from ..measure.precision import EAGER_QUANTIZER, quantize_eager, quantized_linears

        model = quantize_eager(model)
        extra = {"quantizer": EAGER_QUANTIZER, "quantized_layers": quantized_linears(model)}
    prepared = runtimes.prepare(
        case.runtime, maybe_compiled(model, settings) if case.runtime == "eager" else model, x,
        device=case.device, save_dir=save_dir, name=_file_name(case), exporter=settings.onnx_exporter,
        precision=case.precision, parity_tolerance=parity_tolerance,
    )  # fmt: skip
    prepared.fields.update(extra)
    return prepared


def preparation_records(run_id: str, case: Case, prepared: runtimes.Prepared) -> Iterator[dict[str, Any]]:
    """compile_s, export_error...: what preparing the runtime measured, failed where it failed."""
    for rep in prepared.reports:
        status = "error" if rep.error else "ok"
        yield record(run_id, case, rep.metric, rep.value, method=rep.method, status=status, error=rep.error,
                     **rep.extra)  # fmt: skip


def latency_env(case: Case, settings: Settings, prepared: runtimes.Prepared) -> dict[str, Any]:
    env = timing.describe(settings.speed, case.device, case.dtype) | prepared.fields
    env["time_cap_s"] = settings.max_time_s  # the phase's budget (a run's budget shares it out: bench.run.budget)
    if case.runtime == "compile":
        env["compile"] = True
    return env


def timed_alone(
    run_id: str, case: Case, model: nn.Module, prepared: runtimes.Prepared, settings: Settings
) -> Iterator[dict[str, Any]]:
    with Phase(torch.get_num_threads(), case.device, with_reference=settings.reference) as phase:
        samples = timing.measure_latency(prepared.forward, device=case.device, reference=phase.reference,
                                         **settings.latency_effort())  # fmt: skip
    yield from latency_records(run_id, case, model, samples, settings, phase.fields(),
                               latency_env(case, settings, prepared))  # fmt: skip


def latency_records(
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


def maybe_compiled(model: nn.Module, settings: Settings) -> nn.Module:
    if not settings.speed.compile:
        return model
    compiled: nn.Module = torch.compile(model)  # type: ignore[assignment]  # an OptimizedModule
    return compiled


def _file_name(case: Case) -> str:
    """The case id as a file name (for the saved .onnx)."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", case.case_id).strip("_")
