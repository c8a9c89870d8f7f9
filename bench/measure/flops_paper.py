"""The paper counter: the protocol of the papers' tables, thop 0.1.1's MACs x 2 from module hooks.

:func:`count_paper` counts one forward; :func:`paper_counting` counts the forwards run inside it
(:func:`bench.measure.flops.count_each` shares one forward with the torch counter). The rules per
module type (``PAPER_RULES``) and the tree walk are thop 0.1.1's, reimplemented here;
:func:`count_paper` says what is counted and what is left out. Both run under
:func:`bench.measure.flops._inference`, which sets the model up.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn as nn

from .flops_report import FlopReport, giga, model_blocks

# Per-module MAC rules of thop 0.1.1 (thop/vision/basic_hooks.py, calc_func.py), for the
# module types it registers. Each takes (module, input tuple, output) and returns MACs.


def _thop_linear(m: Any, x: tuple[torch.Tensor, ...], y: torch.Tensor) -> float:
    return m.in_features * y.numel()


def _thop_conv(m: Any, x: tuple[torch.Tensor, ...], y: torch.Tensor) -> float:
    return y.numel() * (x[0].shape[1] // m.groups) * math.prod(m.weight.shape[2:])


def _thop_norm(m: Any, x: tuple[torch.Tensor, ...], y: torch.Tensor) -> float:
    affine = getattr(m, "affine", False) or getattr(m, "elementwise_affine", False)
    return 2 * x[0].numel() * (2 if affine else 1)


def _thop_softmax(m: Any, x: tuple[torch.Tensor, ...], y: torch.Tensor) -> float:
    n = x[0].shape[m.dim]
    return (x[0].numel() // n) * (3 * n - 1)


def _thop_prelu(m: Any, x: tuple[torch.Tensor, ...], y: torch.Tensor) -> float:
    return 0 if m.training else x[0].numel()


def _thop_avgpool(m: Any, x: tuple[torch.Tensor, ...], y: torch.Tensor) -> float:
    return y.numel()


def _thop_adaptive_avgpool(m: Any, x: tuple[torch.Tensor, ...], y: torch.Tensor) -> float:
    kernel = math.prod(i / o for i, o in zip(x[0].shape[2:], y.shape[2:], strict=True))
    return int((kernel + 1) * y.numel())


_UPSAMPLE_OPS = {"nearest": 1, "linear": 5, "bilinear": 11, "bicubic": 224 + 35}


def _thop_upsample(m: Any, x: tuple[torch.Tensor, ...], y: torch.Tensor) -> float:
    return _UPSAMPLE_OPS.get(m.mode, 0) * y.numel()


def _thop_zero(m: Any, x: tuple[torch.Tensor, ...], y: torch.Tensor) -> float:
    return 0


# ``m`` is Any: each rule reads the attributes of its own module type.
_ThopRule = Callable[[Any, tuple[torch.Tensor, ...], torch.Tensor], float]
PAPER_RULES: dict[type[nn.Module], _ThopRule] = {
    nn.Linear: _thop_linear,
    **dict.fromkeys(
        (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
        _thop_conv,
    ),
    **dict.fromkeys(
        (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LayerNorm,
         nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d),
        _thop_norm,
    ),
    nn.PReLU: _thop_prelu,
    nn.Softmax: _thop_softmax,
    **dict.fromkeys((nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d), _thop_avgpool),
    **dict.fromkeys(
        (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d), _thop_adaptive_avgpool
    ),
    **dict.fromkeys((nn.Upsample, nn.UpsamplingBilinear2d, nn.UpsamplingNearest2d), _thop_upsample),
    **dict.fromkeys(
        (nn.ZeroPad2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
         nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Dropout, nn.Sequential,
         nn.PixelShuffle),
        _thop_zero,
    ),
}
# thop 0.1.1 also has rules for recurrent modules; they are not reproduced here, so a model
# using them is flagged in ``unsupported`` rather than silently undercounted.
_PAPER_UNREPRODUCED = (nn.RNNCell, nn.GRUCell, nn.LSTMCell, nn.RNN, nn.GRU, nn.LSTM)

_PAPER_NOTE = (
    "published protocol: thop 0.1.1 MACs x2 from hooks on modules of exactly the registered types "
    "(Linear: in_features per output; conv; norms 2-4 per element; Softmax, pooling, upsample); "
    "leaves out attention matmuls (QK^T, AV), functional ops and modules of any other type"
)


def count_paper(model: nn.Module, args: tuple[torch.Tensor, ...]) -> FlopReport:
    """thop 0.1.1's ``profile``: hook every module whose exact type has a rule, run once, sum.

    Counted, in MACs (then x2): Linear, in_features per output element (bias free); Conv and
    ConvTranspose 1-3d, output elements x in_channels/groups x kernel size; BatchNorm,
    LayerNorm, InstanceNorm, 2 per input element, 4 if affine; nn.Softmax, 3n-1 per row;
    AvgPool, 1 per output; AdaptiveAvgPool, (kernel + 1) per output; Upsample, 1/5/11/259 per
    output for nearest/linear/bilinear/bicubic; PReLU in eval, 1 per element. ReLU, ReLU6,
    LeakyReLU, Dropout, MaxPool, ZeroPad2d, PixelShuffle count 0.

    Left out: everything not done by a module of exactly those types - attention matmuls
    (Q K^T, A V), other tensor products (graph adjacency), GELU and every ``F.*`` call, added
    embeddings, subclasses of the registered types (e.g. MultiheadAttention's out_proj, whose
    in-projection is functional anyway). Recurrent modules, which thop has rules for, are not
    reproduced and are listed in ``unsupported`` instead, as are the calls of modules of other
    types that own a weight matrix (counted 0 here although they multiply with it).

    The sum follows thop's tree walk: a module with a rule (other than a Sequential) contributes
    its own count and hides its children; any other module contributes its children's. A module
    called several times counts every call.
    """
    with paper_counting(model) as finish:
        model(*args)
    return finish()


@contextmanager
def paper_counting(model: nn.Module) -> Iterator[Callable[[], FlopReport]]:
    """thop's hooks on ``model`` around the forwards run inside; yields the function that builds the report."""
    macs: dict[nn.Module, float] = defaultdict(float)
    unsupported: Counter[str] = Counter()

    def hook(rule: _ThopRule) -> Callable[..., None]:
        def fn(m: nn.Module, x: tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
            macs[m] += float(rule(m, x, y))

        return fn

    def flag(m: nn.Module, x: Any, y: Any) -> None:
        unsupported[type(m).__name__] += 1

    def finish() -> FlopReport:
        by_type: dict[str, float] = defaultdict(float)
        total = _subtree_macs(model, macs, by_type)
        blocks = tuple(giga(2 * _subtree_macs(b, macs)) for b in model_blocks(model))
        return FlopReport(
            counter="paper",
            total=giga(2 * total),
            blocks=blocks,
            by_operator={k: giga(2 * v) for k, v in sorted(by_type.items()) if v},
            unsupported=dict(unsupported),
            note=_PAPER_NOTE,
        )

    handles = []
    try:
        for m in model.modules():
            rule = PAPER_RULES.get(type(m))
            if rule is not None:
                handles.append(m.register_forward_hook(hook(rule)))
            elif type(m) in _PAPER_UNREPRODUCED or _holds_weights(m):
                handles.append(m.register_forward_hook(flag))
        yield finish
    finally:
        for h in handles:
            h.remove()


def _holds_weights(m: nn.Module) -> bool:
    """A module without a thop rule that owns a weight matrix (MultiheadAttention's in_proj_weight,
    a Linear subclass): the paper protocol counts nothing for it, which may be a lot."""
    return any("weight" in n and p.dim() >= 2 for n, p in m.named_parameters(recurse=False))


def _subtree_macs(
    module: nn.Module, macs: Mapping[nn.Module, float], by_type: dict[str, float] | None = None
) -> float:
    """thop's tree walk from ``module``: a module with a rule (not a Sequential) is a leaf."""
    own = macs.get(module, 0.0)
    if type(module) in PAPER_RULES and not isinstance(module, nn.Sequential):
        if by_type is not None and own:
            by_type[type(module).__name__] += own
        return own
    return own + sum((_subtree_macs(child, macs, by_type) for child in module.children()), 0.0)
