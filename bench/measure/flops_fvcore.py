"""The fvcore counter: fvcore's FlopCountAnalysis, with handles for the multiply-add ops it misses.

:func:`count_fvcore` traces one forward (1 per MAC, doubled here). ``FVCORE_ADDED_HANDLES`` count
scaled-dot-product attention, cdist and baddbmm; the ops without multiply-adds are marked free
(``FVCORE_FREE_OPS``) so that ``unsupported`` lists only ops nobody has classified yet. It runs
through :func:`bench.measure.flops.count_flops`, which sets the model up (eval, no_grad, no fused
fast paths). fvcore is imported on the first count, not with this module.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from .flops_report import FlopReport, giga, model_blocks

# What fvcore counts beyond multiply-adds: norms, resampling and pooling by its own per-element
# rules. torch's counter and the matmul comparison leave these out.
FVCORE_NON_MATMUL = (
    "layer_norm",
    "batch_norm",
    "group_norm",
    "instance_norm",
    "upsample_nearest2d",
    "upsample_bilinear2d",
    "adaptive_avg_pool2d",
    "grid_sampler",
)

# Ops without multiply-adds (see the docstring of bench.measure.flops), silenced in fvcore's unsupported list.
FVCORE_FREE_OPS = tuple(
    f"aten::{op}"
    for op in (
        # elementwise arithmetic
        "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "pow", "sqrt",
        "rsqrt", "exp", "log", "abs", "reciprocal", "clamp_min", "clamp_max", "where", "maximum",
        "minimum", "lerp", "sign", "round", "floor", "ceil", "bernoulli_",
        # activations and softmax
        "gelu", "silu", "sigmoid", "tanh", "leaky_relu", "hardswish", "elu", "softmax",
        "log_softmax", "softplus",
        # reductions
        "mean", "sum", "amax", "amin", "min", "argmax", "argmin", "norm", "linalg_vector_norm",
        "var", "std", "cumsum", "any", "all",
        # indexing, sorting, comparison, creation
        "topk", "sort", "argsort", "searchsorted", "index_select", "scatter", "masked_select",
        "lt", "le", "ne", "repeat", "repeat_interleave", "expand_as", "clone", "eye", "linspace",
        "empty_like", "ones_like", "rand", "randn", "tile", "flip", "diag_embed", "logical_not",
        "unflatten", "view_as", "adaptive_avg_pool1d", "avg_pool1d", "max_pool1d",
    )
)


def _jit_shape(value: Any) -> list[int]:
    from fvcore.nn.jit_handles import get_shape

    shape = get_shape(value)
    if shape is None:
        raise ValueError("fvcore handle got a tensor of unknown shape")
    return list(shape)


def _sdpa_macs_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """Q K^T and A V of ``scaled_dot_product_attention``: batch * Nq * Nk * (D + Dv) MACs.

    Softmax, scaling and masking are elementwise and free. Batch dims come from the output so
    that broadcast keys/values and grouped-query attention are counted per query head.
    """
    q, k = _jit_shape(inputs[0]), _jit_shape(inputs[1])
    out = _jit_shape(outputs[0])
    return math.prod(out[:-2]) * q[-2] * k[-2] * (q[-1] + out[-1])


def _cdist_macs_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """Pairwise distances (B, P, M) x (B, R, M): one multiply-add per pair and channel."""
    x = _jit_shape(inputs[0])
    out = _jit_shape(outputs[0])
    return math.prod(out) * x[-1]


def _baddbmm_macs_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """beta * input + batch1 @ batch2: the bmm's multiply-adds, (B, N, M) x (B, M, P)."""
    a = _jit_shape(inputs[1])
    out = _jit_shape(outputs[0])
    return math.prod(out) * a[-1]


FVCORE_ADDED_HANDLES: dict[str, Callable[[list[Any], list[Any]], int]] = {
    "aten::scaled_dot_product_attention": _sdpa_macs_jit,
    "aten::cdist": _cdist_macs_jit,
    "aten::baddbmm": _baddbmm_macs_jit,
}

_FVCORE_NOTE = (
    "fvcore FlopCountAnalysis x2; adds handles for scaled_dot_product_attention (QK^T + AV), cdist "
    "and baddbmm; counts norms/upsample/adaptive pooling by fvcore's per-element rules; "
    "elementwise ops, activations, softmax, reductions and indexing are free"
)


def count_fvcore(model: nn.Module, args: tuple[torch.Tensor, ...]) -> FlopReport:
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, args)
    analysis.set_op_handle(**FVCORE_ADDED_HANDLES, **dict.fromkeys(FVCORE_FREE_OPS))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jit tracer warnings about data-dependent pruning
        total = analysis.total()
    by_module = analysis.by_module()
    return FlopReport(
        counter="fvcore",
        total=giga(2 * total),
        blocks=tuple(giga(2 * by_module.get(f"blocks.{i}", 0)) for i in range(len(model_blocks(model)))),
        by_operator={op: giga(2 * n) for op, n in sorted(analysis.by_operator().items())},
        unsupported=dict(sorted(analysis.unsupported_ops().items())),
        note=_FVCORE_NOTE,
    )
