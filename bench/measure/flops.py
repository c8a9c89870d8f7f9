"""FLOP counters: three ways of counting one forward pass, side by side.

    report = count_flops(model, x, "fvcore")     # -> FlopReport
    reports = count_all(model, x)                # {"fvcore": ..., "torch": ..., "paper": ...}
    reports = count_each(model, x)               # the same, an error in place of a failed counter

Every figure is in GFLOPs = 2 x multiply-adds (MACs), whatever the counter's own convention.
The counters differ in *what* they count, which is why all three are kept:

- ``fvcore``: fvcore's FlopCountAnalysis (a jit trace; 1 per MAC, doubled here) with handles
  added for the multiply-add ops it misses (scaled-dot-product attention, cdist, baddbmm). It also
  counts norms, upsampling and adaptive pooling by its own rough rules (see ``FVCORE_NON_MATMUL``).
- ``torch``: torch.utils.flop_counter.FlopCounterMode (dispatcher level; already 2 per MAC),
  given formulas for the fused CPU attention kernels it counts as 0 in torch 2.x, and for cdist.
  Matrix products and convolutions only. Its ``unsupported`` lists ops that read a weight matrix
  but have no formula (a fused kernel it cannot see into).

Every counter runs under no_grad with the ``nn.MultiheadAttention`` fast path off, so
``nn.TransformerEncoderLayer`` decomposes into ops with formulas. :func:`disagreements` turns
counters more than 2x apart into warnings naming the suspect ops (``bench.scenarios.measure`` prints them
and stores them in the records).
- ``paper``: the protocol of the papers' tables (HoT, MixSTE, MotionBERT...): thop 0.1.1's MACs
  x 2, i.e. per-module hooks on nn.Linear, convolutions, norms... Attention matmuls, and anything
  done with functional ops, are left out. Reimplemented here (thop 0.1.1 needs distutils, gone in
  Python 3.12, and its successor ultralytics-thop counts differently).

Which ops are free. Elementwise arithmetic, activations, softmax, reductions, indexing and sorting
cost no multiply-adds in any of the counters: their cost is memory traffic, not arithmetic, and
counting them would not make the numbers comparable with anything published. The fvcore counter
marks them as deliberately free (``FVCORE_FREE_OPS``) so that its ``unsupported`` field lists only
ops nobody has classified yet - a new backbone with an uncounted matmul-like op shows up there.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..core.errors import UsageError

COUNTERS = ("fvcore", "torch", "paper")

Inputs = torch.Tensor | Sequence[torch.Tensor]

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

# Ops without multiply-adds (see the module docstring), silenced in fvcore's unsupported list.
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


def count_flops(model: nn.Module, inputs: Inputs, counter: str = "fvcore") -> FlopReport:
    """Count the GFLOPs of ``model(*inputs)`` with ``counter`` (one of ``COUNTERS``).

    The model runs once in eval mode under no_grad; its training flag, parameters'
    ``requires_grad`` and hooks are as before afterwards.
    """
    if counter not in COUNTERS:
        raise UsageError(f"unknown FLOP counter {counter!r}; choose from {', '.join(COUNTERS)}")
    args = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    fn = {"fvcore": _count_fvcore, "torch": _count_torch, "paper": _count_paper}[counter]
    start = time.perf_counter()
    with _inference(model):
        report = fn(model, args)
    return replace(report, seconds=time.perf_counter() - start)


def count_all(model: nn.Module, inputs: Inputs) -> dict[str, FlopReport]:
    """All three counters on the same model and inputs, keyed by counter name; the first error raises."""
    reports = count_each(model, inputs)
    for r in reports.values():
        if isinstance(r, BaseException):
            raise r
    return {c: r for c, r in reports.items() if isinstance(r, FlopReport)}


def count_each(model: nn.Module, inputs: Inputs) -> dict[str, FlopReport | Exception]:
    """Every counter's report, or the error it raised, keyed by counter name, in two forwards.

    fvcore traces a forward of its own; torch's dispatch mode and the paper's module hooks see
    different levels of the same call, so they share one forward (a canonical model's forward
    takes seconds on a CPU). If that shared forward fails, each of the two runs alone, so that
    one counter's error does not take the other's figure with it.
    """
    args = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    out: dict[str, FlopReport | Exception] = {}
    try:
        out["fvcore"] = count_flops(model, args, "fvcore")
    except Exception as e:  # e.g. a trace error: the other counters still count
        out["fvcore"] = e
    start = time.perf_counter()
    try:
        with _inference(model), _torch_counting(model) as torch_report, _paper_counting(model) as paper_report:
            model(*args)
        seconds = time.perf_counter() - start
        out["torch"] = replace(torch_report(), seconds=seconds)
        out["paper"] = replace(paper_report(), seconds=seconds)
    except Exception:
        for counter in ("torch", "paper"):
            try:
                out[counter] = count_flops(model, args, counter)
            except Exception as e:
                out[counter] = e
    return {c: out[c] for c in COUNTERS}


DISAGREEMENT = 2.0  # counters further apart than this factor get a warning


def disagreements(reports: Mapping[str, FlopReport], factor: float = DISAGREEMENT) -> list[str]:
    """One warning per pair of counters whose totals differ by more than ``factor``, naming suspect ops.

    fvcore and torch both count every multiply-add (fvcore adds norms), so a factor of 2 between
    them means one misses real work: an op it has no formula for. The paper protocol leaves out
    attention matmuls by design, which at long T and small width is more than half the work; it
    being lower is only flagged when it saw modules it could not count. The suspects are what
    each of the two reports as ``unsupported`` (fvcore: ops without a handle; torch: uncounted
    ops that read a weight matrix; paper: module types without a rule that hold weights).
    """
    out = []
    names = [c for c in COUNTERS if c in reports] + sorted(set(reports) - set(COUNTERS))
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            lo, hi = sorted((reports[a], reports[b]), key=lambda r: r.total)
            if hi.total <= factor * lo.total or (lo.counter == "paper" and not lo.unsupported):
                continue
            apart = f"{hi.total / lo.total:.1f}x apart" if lo.total > 0 else "one is 0"
            suspects = [f"{op} ({r.counter}: uncounted)" for r in (lo, hi) for op in r.unsupported]
            out.append(
                f"FLOP counters disagree: {lo.counter} {lo.total:.4g} GFLOPs vs {hi.counter} {hi.total:.4g} "
                f"({apart}); suspect ops: {', '.join(suspects) if suspects else 'none reported, compare by_operator'}"
            )
    return out


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode, no_grad, parameters that do not require grad and no fused fast paths, restored afterwards.

    Turning ``requires_grad`` off matters for the torch counter: its module tracker hooks the
    backward of every input that requires grad and fails on views of parameters taken under
    no_grad (e.g. ``query.expand(...)``), which have requires_grad but no grad_fn.

    The fast path of ``nn.TransformerEncoderLayer`` and ``nn.MultiheadAttention`` (taken in eval
    mode without grad) runs whole layers as one fused kernel that no counter has a formula for
    (torch counts it as 0, fvcore flags it): with it off they decompose into linear layers and
    attention, which are counted. The arithmetic is the same either way.
    """
    training = model.training
    grads = [(p, p.requires_grad) for p in model.parameters()]
    fastpath = torch.backends.mha.get_fastpath_enabled()
    model.eval()
    for p, _ in grads:
        p.requires_grad_(False)
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(training)
        for p, flag in grads:
            p.requires_grad_(flag)


def _blocks(model: nn.Module) -> list[nn.Module]:
    blocks = getattr(model, "blocks", None)
    return list(blocks) if isinstance(blocks, nn.ModuleList) else []


def _giga(x: float) -> float:
    return x / 1e9


# --------------------------------------------------------------------------- fvcore


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


def _count_fvcore(model: nn.Module, args: tuple[torch.Tensor, ...]) -> FlopReport:
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
        total=_giga(2 * total),
        blocks=tuple(_giga(2 * by_module.get(f"blocks.{i}", 0)) for i in range(len(_blocks(model)))),
        by_operator={op: _giga(2 * n) for op, n in sorted(analysis.by_operator().items())},
        unsupported=dict(sorted(analysis.unsupported_ops().items())),
        note=_FVCORE_NOTE,
    )


# --------------------------------------------------------------------------- torch


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


def _torch_custom_mapping() -> dict[Any, Callable[..., int]]:
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


def _count_torch(model: nn.Module, args: tuple[torch.Tensor, ...]) -> FlopReport:
    with _torch_counting(model) as finish:
        model(*args)
    return finish()


@contextmanager
def _torch_counting(model: nn.Module) -> Iterator[Callable[[], FlopReport]]:
    """FlopCounterMode around the forwards run inside; yields the function that builds the report."""
    from torch.utils.flop_counter import FlopCounterMode

    mode = FlopCounterMode(display=False, custom_mapping=_torch_custom_mapping())
    readers = _UncountedWeightReaders(model, set(mode.flop_registry))

    def finish() -> FlopReport:
        counts = mode.get_flop_counts()
        root = type(model).__name__
        return FlopReport(
            counter="torch",
            total=_giga(mode.get_total_flops()),
            blocks=tuple(_giga(_subtree_flops(counts, f"{root}.blocks.{i}")) for i in range(len(_blocks(model)))),
            by_operator={str(op): _giga(n) for op, n in sorted(counts.get("Global", {}).items(), key=str)},
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


# --------------------------------------------------------------------------- paper (thop 0.1.1)
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


def _count_paper(model: nn.Module, args: tuple[torch.Tensor, ...]) -> FlopReport:
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
    with _paper_counting(model) as finish:
        model(*args)
    return finish()


@contextmanager
def _paper_counting(model: nn.Module) -> Iterator[Callable[[], FlopReport]]:
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
        blocks = tuple(_giga(2 * _subtree_macs(b, macs)) for b in _blocks(model))
        return FlopReport(
            counter="paper",
            total=_giga(2 * total),
            blocks=blocks,
            by_operator={k: _giga(2 * v) for k, v in sorted(by_type.items()) if v},
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
