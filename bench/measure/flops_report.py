"""What a FLOP counter reports: :class:`FlopReport`, and the helpers every counter fills it with.

Its own module so that the three counters (:mod:`bench.measure.flops_fvcore`,
:mod:`bench.measure.flops_torch`, :mod:`bench.measure.flops_paper`) and the entry points that run
them side by side (:mod:`bench.measure.flops`) share one report without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch.nn as nn


@dataclass(frozen=True)
class FlopReport:
    """One counter's view of one forward pass, in GFLOPs (= 2 x multiply-adds).

    ``blocks`` has one entry per element of ``model.blocks`` (empty for models without
    ``blocks``); ``by_operator`` splits the total by op (fvcore, torch) or module type (paper);
    ``unsupported`` maps what the counter saw but could not count to how often it saw it.
    """

    counter: str
    total: float
    blocks: tuple[float, ...] = ()
    by_operator: Mapping[str, float] = field(default_factory=dict)
    unsupported: Mapping[str, int] = field(default_factory=dict)
    note: str = ""
    seconds: float = 0.0  # wall time the count took


def model_blocks(model: nn.Module) -> list[nn.Module]:
    blocks = getattr(model, "blocks", None)
    return list(blocks) if isinstance(blocks, nn.ModuleList) else []


def giga(x: float) -> float:
    return x / 1e9
