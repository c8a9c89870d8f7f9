"""The ``breakdown`` and ``flops_train`` groups (bench.measure.breakdown)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..core.case import Case
from ..core.errors import UsageError
from .base import Settings


def records(
    run_id: str, case: Case, model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: Settings,
    seen: Sequence[dict[str, Any]], run_dir: str | Path | None, train_too: bool,
) -> Iterator[dict[str, Any]]:
    from ..measure import breakdown  # torch.profiler loads only when a breakdown is asked for

    if settings.speed.compile:
        raise UsageError("the breakdown profiles the eager model; run it without compile")
    yield from breakdown.breakdown_records(run_id, case, model, x, y, settings, seen, run_dir, train=train_too)


def flops_train_records(
    run_id: str, case: Case, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seen: Sequence[dict[str, Any]]
) -> Iterator[dict[str, Any]]:
    from ..measure import breakdown

    yield from breakdown.flops_train_records(run_id, case, model, x, y, seen)
