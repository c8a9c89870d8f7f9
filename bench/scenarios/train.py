"""The ``train`` group: train_step, the median of timed training steps (forward + loss + backward +
AdamW step), and the record any set of such steps makes (also the memory group's fresh process's,
bench.scenarios.memory)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn

from ..core.case import Case
from ..core.results import record
from ..measure import timing
from ..measure.phase import Phase
from .base import Settings
from .latency import maybe_compiled


def records(
    run_id: str, case: Case, model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: Settings
) -> Iterator[dict[str, Any]]:
    step = timing.train_step_fn(maybe_compiled(model, settings), x, y)
    try:
        with Phase(torch.get_num_threads(), case.device, with_reference=settings.reference) as phase:
            samples = timing.measure_latency(step, device=case.device, reference=phase.reference,
                                             **settings.train_effort())  # fmt: skip
    finally:
        model.eval()
    yield train_record(run_id, case, samples, settings, fresh_process=False, load_fields=phase.fields())


def train_record(
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
