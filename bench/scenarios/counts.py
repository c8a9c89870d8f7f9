"""The counted groups, nothing timed: ``params`` and ``flops`` (each FLOP counter's total, fvcore's per block)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn

from ..core.case import Case
from ..core.results import failure, record
from .base import failure_status


def params_records(run_id: str, case: Case, model: nn.Module) -> Iterator[dict[str, Any]]:
    yield record(run_id, case, "params", sum(p.numel() for p in model.parameters()))


def flops_records(run_id: str, case: Case, model: nn.Module, x: torch.Tensor) -> Iterator[dict[str, Any]]:
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
