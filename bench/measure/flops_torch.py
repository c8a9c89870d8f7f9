"""The torch counter: FlopCounterMode, with formulas for fused CPU attention and for cdist.

:func:`count_torch` counts one forward; :func:`torch_counting` counts the forwards run inside it
(:func:`bench.measure.flops.count_each` shares one forward with the paper counter). Dispatcher
level, already 2 per MAC; matrix products and convolutions only. The ops that read a weight
matrix but have no formula are its ``unsupported`` (:class:`_UncountedWeightReaders`). Both run
under :func:`bench.measure.flops._inference`, which sets the model up; :mod:`bench.measure.profiler`
counts its parts with the same formulas (:func:`torch_custom_mapping`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .flops_report import FlopReport, giga, model_blocks


def _sdpa_flops_shapes(query: Sequence[int], key: Sequence[int], value: Sequence[int], *args: Any,
                       out_shape: Any = None, **kwargs: Any) -> int:
    """2 x (Q K^T + A V) for fused attention kernels that take (B, H, N, D) tensors."""
    batch = math.prod(query[:-2])  # per query head, so grouped-query attention counts right
    return 2 * batch * query[-2] * key[-2] * (query[-1] + value[-1])


def _cdist_flops_shapes(x1: Sequence[int], x2: Sequence[int], *args: Any, out_shape: Any = None,
                        **kwargs: Any) -> int:
    """2 x one multiply-add per pair and channel, (..., P, M) x (..., R, M)."""
    batch = math.prod(torch.broadcast_shapes(tuple(x1[:-2]), tuple(x2[:-2])))
    return 2 * batch * x1[-2] * x2[-2] * x1[-1]


def torch_custom_mapping() -> dict[Any, Callable[..., int]]:
    """Formulas torch's counter lacks: fused CPU attention (counted as 0 otherwise) and cdist.

    CUDA's flash / efficient / cudnn attention already have formulas in torch and keep them.
    cdist reaches the dispatcher as ``_cdist_forward`` (small inputs) or ``_euclidean_dist`` (its
    matmul path); both get fvcore's count, one multiply-add per pair and channel.
    """
    aten = torch.ops.aten
    mapping: dict[Any, Callable[..., int]] = {
        aten._cdist_forward: _cdist_flops_shapes,
        aten._euclidean_dist: _cdist_flops_shapes,
    }
    fused_cpu = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable")
    for name in fused_cpu:
        if hasattr(aten, name):
            mapping[getattr(aten, name)] = _sdpa_flops_shapes
        if hasattr(aten, name + "_backward"):  # a training step's count (flops_train)
            mapping[getattr(aten, name + "_backward")] = _sdpa_backward_flops_shapes
    return mapping


def _sdpa_backward_flops_shapes(grad_out: Sequence[int], query: Sequence[int], key: Sequence[int],
                                value: Sequence[int], *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """Twice the forward: dV = A^T dO, dA = dO V^T, dQ = dS K, dK = dS^T Q (torch's own rule on CUDA)."""
    return 2 * _sdpa_flops_shapes(query, key, value)


_TORCH_NOTE = (
    "torch.utils.flop_counter.FlopCounterMode (2 per MAC) with formulas added for fused CPU "
    "attention (QK^T + AV) and cdist; matmuls, attention and convolutions only (no norms)"
)


def count_torch(model: nn.Module, args: tuple[torch.Tensor, ...]) -> FlopReport:
    with torch_counting(model) as finish:
        model(*args)
    return finish()


@contextmanager
def torch_counting(model: nn.Module) -> Iterator[Callable[[], FlopReport]]:
    """FlopCounterMode around the forwards run inside; yields the function that builds the report."""
    from torch.utils.flop_counter import FlopCounterMode

    mode = FlopCounterMode(display=False, custom_mapping=torch_custom_mapping())
    readers = _UncountedWeightReaders(model, set(mode.flop_registry))

    def finish() -> FlopReport:
        counts = mode.get_flop_counts()
        root = type(model).__name__
        return FlopReport(
            counter="torch",
            total=giga(mode.get_total_flops()),
            blocks=tuple(giga(_subtree_flops(counts, f"{root}.blocks.{i}")) for i in range(len(model_blocks(model)))),
            by_operator={str(op): giga(n) for op, n in sorted(counts.get("Global", {}).items(), key=str)},
            unsupported=dict(sorted(readers.seen.items())),
            note=_TORCH_NOTE,
        )

    with mode, readers:
        yield finish


# Ops that read a weight matrix without multiplying with it: copies, casts, lookups, joins.
_DATA_MOVEMENT = frozenset({
    "clone", "_to_copy", "copy_", "detach", "embedding", "index", "index_select", "gather", "cat", "stack",
    "expand", "repeat", "zeros_like", "ones_like", "empty_like", "lift_fresh", "alias", "_unsafe_view",
})  # fmt: skip


class _UncountedWeightReaders(TorchDispatchMode):
    """Record the ops that read a weight matrix of the model but have no FLOP formula.

    Such an op is where a counter goes blind: a fused kernel doing a layer's arithmetic in one
    call (``_native_multi_head_attention``, ``_transformer_encoder_layer_fwd``). Pointwise ops,
    views and data movement read weights too (embeddings added, transposes) and are left out.
    The torch report lists what this finds as ``unsupported``.
    """

    def __init__(self, model: nn.Module, counted: set[Any]):
        super().__init__()
        self.weights = {p.untyped_storage().data_ptr() for p in model.parameters() if p.dim() >= 2}
        self.counted = counted
        self.seen: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        packet = func._overloadpacket
        if (
            packet not in self.counted
            and not func.is_view
            and torch.Tag.pointwise not in func.tags
            and packet.__name__ not in _DATA_MOVEMENT
            and any(
                isinstance(a, torch.Tensor) and a.dim() >= 2 and a.untyped_storage().data_ptr() in self.weights
                for a in tree_leaves((args, kwargs))
            )
        ):
            self.seen[f"aten.{packet.__name__}"] += 1
        return func(*args, **kwargs)


def _subtree_flops(counts: Mapping[str, Mapping[Any, int]], name: str) -> int:
    """FLOPs under module ``name`` from FlopCounterMode's per-module counts.

    A module only gets an entry when its own forward runs; a container whose children are called
    directly by the parent (MixSTE's spatial+temporal pair) has none, so sum its outermost
    descendants that have one (each op is listed under every enclosing module that ran).
    """
    if name in counts:
        return sum(counts[name].values())
    inner = [k for k in counts if k.startswith(name + ".")]
    outer = [k for k in inner if not any(k.startswith(o + ".") for o in inner)]
    return sum(sum(counts[k].values()) for k in outer)


def count_train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """GFLOPs of one training step's forward + loss + backward by torch's counter (which counts backward).

    The optimizer step is left out (elementwise, no multiply-adds in the counter's sense); the
    model's gradients are cleared and its mode restored afterwards.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from .timing import mpjpe_loss

    training = model.training
    model.train()
    mode = FlopCounterMode(display=False, custom_mapping=torch_custom_mapping())
    try:
        with mode:
            mpjpe_loss(model(x), y).backward()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(training)
    return mode.get_total_flops() / 1e9
