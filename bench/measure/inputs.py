"""The example input of a case: what every measurement feeds the model.

Its own module so that the memory child process (:mod:`bench.measure.rss`) builds the same input as
the measurements made in-process without importing them (they import ``memory``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..core.case import Case

JOINTS = 17  # the Human3.6M skeleton every backbone lifts (the model contract's input layout)


def example_inputs(case: Case, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic input (B, T, 17, C_in) and a 3D target of the model's output shape."""
    m: Any = model  # the model contract's attributes (pipeline, frames, in_channels)
    gen = torch.Generator().manual_seed(0)
    b, t = case.batch, int(case.frames or m.frames)
    x = torch.randn(b, t, JOINTS, int(m.in_channels), generator=gen)
    out_t = t if m.pipeline == "seq2seq" else 1
    y = torch.randn(b, out_t, JOINTS, 3, generator=gen)
    dtype = getattr(torch, case.dtype)
    return x.to(case.device, dtype), y.to(case.device, dtype)
