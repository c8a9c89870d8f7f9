"""Pruners and recoverers: two small registries and the built-in strategies.

A *pruner* decides which tokens survive a stage of the schedule. It is a plain function that
receives one :class:`PruneInput` and returns one of three things:

- scores, a float tensor (B, T): higher is kept; the ``keep`` best survive, in time order;
- indices, an integer tensor (B, keep): the local indices of the tokens that survive;
- :class:`Merged`: the new tokens themselves (B, keep, ...) with their absolute frame positions
  (B, keep) and, optionally, how many original tokens each one stands for (merging).

::

    @backbones.register_pruner("energy")
    def energy(t: backbones.PruneInput) -> torch.Tensor:
        return t.x.detach().norm(dim=-1).mean(dim=-1)  # (B, T, J, C) -> scores (B, T)

Register with ``attention=True`` to receive ``t.received``, the attention each token received
in the temporal attention of the block before the stage (the backbone computes it only then).
Where a pipeline needs the centre frame (seq2frame), the hourglass keeps it whatever scores or
indices say; a merging pruner must keep ``t.centre`` itself.

A *recoverer* brings the kept tokens back to all T frames at the end of a seq2seq model. It is
registered as a factory, called with the keyword arguments ``frames``, ``dim``, ``heads``,
``qkv_bias``, that returns an ``nn.Module`` whose ``forward(x, pos)`` maps kept tokens
(B, K, ...) at absolute positions (B, K) to (B, frames, ...). Its parameters are stored under
``tokens.<name>.`` in a checkpoint (``tokens.tra.query`` for HoT's TRA).

Built-ins: pruners ``tps`` (uniform sampling), ``tpc`` (DPC-kNN clustering, HoT), ``tpa``
(attention received), ``tpmo`` (motion), ``tome`` (token merging over time); recoverers ``tri``
(linear interpolation, H2OT) and ``tra`` (cross-attention, HoT).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import CrossAttention

# --------------------------------------------------------------------------- the protocol


@dataclass(frozen=True)
class PruneInput:
    """What a pruner receives at one stage (T = tokens entering the stage).

    ``x``: the features it judges, (B, T, J, C) or (B, T, C); ``pos``: the absolute frame index
    of every token (B, T), sorted; ``keep``: how many tokens survive; ``size``: how many original
    frames each token stands for (B, T), all ones unless an earlier stage merged; ``received``:
    the attention each token received in the preceding temporal block (B, T), only for pruners
    registered with ``attention=True``; ``centre``: the absolute frame a seq2frame pipeline
    needs to keep (None for seq2seq); ``block``: the index of the block the stage starts at.
    """

    x: torch.Tensor
    pos: torch.Tensor
    keep: int
    size: torch.Tensor
    received: torch.Tensor | None = None
    centre: int | None = None
    block: int = 0


class Merged(NamedTuple):
    """A pruner's answer when it builds new tokens instead of choosing some (token merging)."""

    x: torch.Tensor  # (B, keep, ...)
    pos: torch.Tensor  # (B, keep) absolute frame of each token, the frame it is recovered at
    size: torch.Tensor | None = None  # (B, keep) original frames each token stands for


PruneResult = torch.Tensor | Merged
PrunerFn = Callable[[PruneInput], PruneResult]


@dataclass(frozen=True)
class PrunerSpec:
    name: str
    fn: PrunerFn
    attention: bool = False  # wants ``received`` from the block before the stage
    doc: str = ""


@dataclass(frozen=True)
class RecovererSpec:
    name: str
    build: Callable[..., nn.Module]  # (frames=, dim=, heads=, qkv_bias=) -> module(x, pos)
    doc: str = ""


_PRUNERS: dict[str, PrunerSpec] = {}
_RECOVERERS: dict[str, RecovererSpec] = {}

# A name appears in schedules (BLOCK:KEEP:NAME), case ids and, for recoverers, module attribute names.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_name(kind: str, name: str, registry: Container[str]) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{kind} name {name!r} must be a Python identifier (letters, digits, _)")
    if name in registry:
        raise ValueError(f"{kind} {name!r} is already registered")


def register_pruner(name: str, *, attention: bool = False) -> Callable[[PrunerFn], PrunerFn]:
    """Register ``fn(PruneInput) -> scores | indices | Merged`` as pruner ``name`` (see the module doc).

    ``attention=True``: the backbone reports the attention each token received in the temporal
    block before the stage (``PruneInput.received``); such a pruner cannot start at block 0.
    """

    def decorator(fn: PrunerFn) -> PrunerFn:
        _check_name("pruner", name, _PRUNERS)
        _PRUNERS[name] = PrunerSpec(name, fn, attention, (fn.__doc__ or "").strip())
        return fn

    return decorator


def register_recoverer(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a recoverer factory ``build(*, frames, dim, heads, qkv_bias) -> module(x, pos)``."""

    def decorator(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _check_name("recoverer", name, _RECOVERERS)
        _RECOVERERS[name] = RecovererSpec(name, build, (build.__doc__ or "").strip())
        return build

    return decorator


def pruners() -> list[str]:
    """Names of the registered pruners: the built-ins first, then the user's, in registration order."""
    return list(_PRUNERS)


def recoverers() -> list[str]:
    """Names of the registered recoverers, built-ins first, in registration order."""
    return list(_RECOVERERS)


def pruner_spec(name: str) -> PrunerSpec:
    """The registration of pruner ``name``; ValueError naming the known ones otherwise."""
    try:
        return _PRUNERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown pruner {name!r}; choose from {', '.join(pruners())}") from None


def recoverer_spec(name: str) -> RecovererSpec:
    """The registration of recoverer ``name``; ValueError naming the known ones otherwise."""
    try:
        return _RECOVERERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown recoverer {name!r}; choose from {', '.join(recoverers())}") from None


def unregister_pruner(name: str) -> None:
    """Remove a pruner (for tests and notebooks that register throw-away ones)."""
    _PRUNERS.pop(name, None)


def unregister_recoverer(name: str) -> None:
    """Remove a recoverer (for tests and notebooks)."""
    _RECOVERERS.pop(name, None)


# --------------------------------------------------------------------------- helpers


def pool_joints(x: torch.Tensor) -> torch.Tensor:
    """(B, T, J, C) -> (B, T, C) by averaging joints; (B, T, C) passes through."""
    return x.mean(dim=2) if x.dim() == 4 else x


def top_sorted(score: torch.Tensor, keep: int) -> torch.Tensor:
    """Local indices (B, keep) of the ``keep`` highest scores, in time order."""
    return score.topk(keep, dim=-1).indices.sort(dim=-1).values


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Pick tokens along dim 1: x (B, T, ...) and idx (B, K) -> (B, K, ...).

    One ``index_select`` over the flattened batch: several times faster on CPU than advanced
    indexing ``x[batch, idx]`` for wide tokens (joints x channels).
    """
    b, n = x.shape[:2]
    flat = idx + torch.arange(b, device=idx.device).unsqueeze(1) * n  # (B, K) rows of (B*T, ...)
    return x.reshape(b * n, *x.shape[2:]).index_select(0, flat.flatten()).reshape(b, idx.shape[1], *x.shape[2:])


# --------------------------------------------------------------------------- built-in pruners


def select_tps(batch: int, tokens: int, keep: int, device: torch.device | None = None) -> torch.Tensor:
    """Uniform sampling: round(linspace(0, tokens - 1, keep)), the same for every sample."""
    if keep == 1:  # linspace's one step is its start; exported to ONNX it would divide by keep - 1 = 0
        idx = torch.zeros(1, dtype=torch.long, device=device)
    else:
        idx = torch.linspace(0, tokens - 1, keep, device=device).round().long()
    return idx.unsqueeze(0).expand(batch, keep)


def dpc_knn_scores(feat: torch.Tensor, k: int = 2) -> torch.Tensor:
    """Density-peaks score of every token (B, T, C) -> (B, T): local density x distance to denser.

    Density is exp(-mean squared distance to the k nearest tokens); the distance term is the
    distance to the nearest token of higher density (the largest distance for the densest token).
    Cluster centres score highest, so top-k picks one representative per cluster (DPC-kNN).
    """
    # Double precision: densities of close tokens differ far below float32's resolution near 1, and
    # float32 distances (a matrix product, which cancels for close tokens) change the selections even
    # on the tests' inputs; tests/benchmarks/tpc_precision.py measures it (docs: What TPC costs).
    feat = feat.double()
    c = feat.shape[-1]
    dist = torch.cdist(feat, feat) / math.sqrt(c)  # (B, T, T)
    # As in HoT, the k nearest include the token itself (distance 0): k=2 means "self + nearest".
    knn = dist.topk(min(k, dist.shape[-1]), dim=-1, largest=False).values
    density = torch.exp(-(knn**2).mean(dim=-1))
    # Mutual nearest neighbours have equal densities: break such ties by position, so the choice is
    # deterministic (HoT adds random noise instead).
    t = density.shape[-1]
    density = density + torch.arange(t, device=feat.device, dtype=density.dtype) * 1e-12
    denser = density[:, None, :] > density[:, :, None]  # [b, i, j]: j is denser than i
    dmax = dist.flatten(1).max(dim=-1).values[:, None, None]
    delta = torch.where(denser, dist, dmax).min(dim=-1).values
    return delta * density


def select_tpc(x: torch.Tensor, keep: int, k: int = 2) -> torch.Tensor:
    """Token pruning by clustering (HoT): the ``keep`` DPC-kNN cluster centres, sorted by time."""
    with torch.no_grad():
        return top_sorted(dpc_knn_scores(pool_joints(x), k), keep)


def select_tpa(received: torch.Tensor, keep: int) -> torch.Tensor:
    """Token pruning by attention: the ``keep`` tokens that received the most attention (B, T)."""
    return top_sorted(received.detach(), keep)


def motion_scores(x: torch.Tensor) -> torch.Tensor:
    """Per-frame motion (B, T): mean feature change to the previous and next frame."""
    feat = pool_joints(x).detach().float()
    step = (feat[:, 1:] - feat[:, :-1]).norm(dim=-1)  # (B, T-1)
    zero = step.new_zeros(step.shape[0], 1)
    before, after = torch.cat([zero, step], 1), torch.cat([step, zero], 1)
    count = torch.full_like(before, 2.0)
    count[:, 0] = count[:, -1] = 1.0
    return (before + after) / count


def select_tpmo(x: torch.Tensor, keep: int) -> torch.Tensor:
    """Token pruning by motion: the ``keep`` frames that move most, sorted by time."""
    return top_sorted(motion_scores(x), keep)


@register_pruner("tps")
def tps(t: PruneInput) -> torch.Tensor:
    """Sampling (H2OT): uniform positions round(linspace(0, T-1, keep)); parameter-free."""
    b, n = t.pos.shape
    return select_tps(b, n, t.keep, t.pos.device)


@register_pruner("tpc")
def tpc(t: PruneInput) -> torch.Tensor:
    """Clustering (HoT): DPC-kNN density-peak scores of joint-pooled features (k = 2)."""
    return dpc_knn_scores(pool_joints(t.x).detach(), k=2)


@register_pruner("tpa", attention=True)
def tpa(t: PruneInput) -> torch.Tensor:
    """Attention: the tokens that received the most attention in the preceding temporal block."""
    assert t.received is not None  # the hourglass checks, naming the block
    return t.received.detach().float()


@register_pruner("tpmo")
def tpmo(t: PruneInput) -> torch.Tensor:
    """Motion: the frames whose features change most to their neighbours."""
    return motion_scores(t.x)


def _centre_to_dst(a_idx: torch.Tensor, b_idx: torch.Tensor, pos: torch.Tensor, centre: int) -> tuple[
    torch.Tensor, torch.Tensor
]:
    """Move the centre frame's token from the source set A into the destination set B.

    Sources disappear into destinations; a destination keeps its frame. Swapping the centre with
    its neighbour in time keeps both sets' sizes, so every sample of the batch merges alike.
    """
    n = pos.shape[1]
    local = (pos == centre).long().argmax(dim=1)  # (B,) the centre's local index
    in_a = local % 2 == 0
    if not bool(in_a.any()):
        return a_idx, b_idx
    neighbour = torch.where(local + 1 < n, local + 1, local - 1)
    rows = torch.nonzero(in_a).squeeze(1)
    a_idx, b_idx = a_idx.clone(), b_idx.clone()
    a_idx[rows, local[rows] // 2] = neighbour[rows]
    b_idx[rows, (neighbour[rows] - 1) // 2] = local[rows]
    return a_idx, b_idx


def bipartite_merge(
    x: torch.Tensor, pos: torch.Tensor, size: torch.Tensor, r: int, centre: int | None = None,
    metric: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One round of ToMe's bipartite soft matching along time: n tokens -> n - r.

    x (B, n, ...), pos (B, n), size (B, n); ``metric`` (B, n, D) is what similarity is judged on
    (default: x flattened). Tokens alternate into sets A (even) and B (odd); each A token finds
    its most similar B token (cosine); the ``r`` best-matched A tokens are averaged into their
    match, weighted by size, and the merged token keeps its B token's frame. ``r`` is at most the
    size of A. Tokens stay in time order.
    """
    b, n = pos.shape
    shape = x.shape[2:]
    x = x.reshape(b, n, -1)
    a_idx = torch.arange(0, n, 2, device=x.device).expand(b, -1)
    b_idx = torch.arange(1, n, 2, device=x.device).expand(b, -1)
    if centre is not None:
        a_idx, b_idx = _centre_to_dst(a_idx, b_idx, pos, centre)
    with torch.no_grad():
        m = F.normalize((x if metric is None else metric).detach().float(), dim=-1)
        scores = gather_tokens(m, a_idx) @ gather_tokens(m, b_idx).transpose(1, 2)  # (B, Na, Nb)
        best, match = scores.max(dim=-1)  # (B, Na)
        order = best.argsort(dim=-1, descending=True, stable=True)[:, :r]
        src = a_idx.gather(1, order)  # (B, r) local indices of the merged-away tokens
        dst = b_idx.gather(1, match.gather(1, order))  # (B, r) local indices of their matches
        survivors = torch.ones(b, n, dtype=torch.bool, device=x.device).scatter(1, src, False)
        kept = torch.arange(n, device=x.device).expand(b, n)[survivors].view(b, n - r)  # in time order
    rows = torch.arange(b, device=x.device).unsqueeze(1) * n  # flat (B*n) row of each sample's token 0
    weighted = (x * size.unsqueeze(-1).to(x.dtype)).reshape(b * n, -1)
    # Size-weighted sums into the destinations, divided by their summed sizes.
    # In place: ``weighted`` is fresh, and index_select keeps only its shape for the backward pass.
    weighted.index_add_(0, (dst + rows).flatten(), weighted.index_select(0, (src + rows).flatten()))
    size = size.scatter_add(1, dst, size.gather(1, src))
    size_out = size.gather(1, kept)
    x_out = weighted.index_select(0, (kept + rows).flatten()).reshape(b, n - r, -1) / size_out.unsqueeze(-1).to(x.dtype)
    return x_out.reshape(b, n - r, *shape), pos.gather(1, kept), size_out


@register_pruner("tome")
def tome(t: PruneInput) -> Merged:
    """Merging (ToMe over time): bipartite soft matching of similar frames, size-weighted averages.

    Rounds of :func:`bipartite_merge` until ``keep`` tokens remain (one round halves at most),
    frames compared by their joint-pooled features (as ``tpc`` does). A merged token sits at its
    representative's (destination's) frame, so ``tri`` recovers it there; sizes carry over to
    later stages. The centre frame of seq2frame pipelines is never merged away. Unlike ToMe in
    ViTs, attention is not re-weighted by size (proportional attention): the backbones' blocks are
    used unchanged.
    """
    x, pos, size = t.x, t.pos, t.size.to(t.x.dtype)
    while pos.shape[1] > t.keep:
        m = pos.shape[1]
        x, pos, size = bipartite_merge(x, pos, size, min(m - t.keep, (m + 1) // 2), t.centre, pool_joints(x))
    return Merged(x, pos, size)


# --------------------------------------------------------------------------- built-in recoverers


def interpolate_tokens(x: torch.Tensor, pos: torch.Tensor, frames: int) -> torch.Tensor:
    """Linear interpolation along time from kept positions to all ``frames`` positions.

    x (B, K, ...) at sorted absolute positions pos (B, K) -> (B, frames, ...). Frames before the
    first or after the last kept position take that token's value (no extrapolation).
    """
    b, k = pos.shape
    if k == 1:
        return x.expand(b, frames, *x.shape[2:]).clone()
    t = torch.arange(frames, device=x.device, dtype=torch.float32).expand(b, frames).contiguous()
    p = pos.to(torch.float32).contiguous()
    # searchsorted(p, t) (the first kept position >= t) as a count of positions below t: the same
    # indices, but exportable to ONNX (which has no searchsorted) at a (B, T, K) comparison's cost.
    right = (p.unsqueeze(1) < t.unsqueeze(2)).sum(dim=2).clamp(1, k - 1)  # (B, T)
    left = right - 1
    p_left, p_right = torch.gather(p, 1, left), torch.gather(p, 1, right)
    w = ((t - p_left) / (p_right - p_left).clamp_min(1e-6)).clamp(0.0, 1.0)
    w = w.to(x.dtype).reshape(b, frames, *([1] * (x.dim() - 2)))
    return gather_tokens(x, left) * (1 - w) + gather_tokens(x, right) * w


class InterpolationRecoverer(nn.Module):
    """Token recovering by interpolation (H2OT's TRI): linear in time between kept frames."""

    def __init__(self, frames: int):
        super().__init__()
        self.frames = frames

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return interpolate_tokens(x, pos, self.frames)


class AttentionRecoverer(nn.Module):
    """Token recovering by attention (HoT's TRA): T learnable queries cross-attend to the kept tokens.

    Works per joint: kept (B, K, J, C) -> (B*J, K, C) keys/values; the output is the query plus
    the attended value (a residual), (B, T, J, C). Position-free: the queries learn where in time
    they sit, which is why TRA needs no positions.
    """

    def __init__(self, frames: int, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, frames, dim))
        self.attn = CrossAttention(dim, heads, qkv_bias=qkv_bias)
        nn.init.trunc_normal_(self.query, std=0.02)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        joints = x.dim() == 4
        if joints:
            b, k, j, c = x.shape
            x = x.permute(0, 2, 1, 3).reshape(b * j, k, c)  # (B, K, J, C) -> (B*J, K, C)
        q = self.query.expand(x.shape[0], -1, -1)
        out = q + self.attn(q, x)
        if joints:
            out = out.reshape(b, j, -1, c).permute(0, 2, 1, 3)  # -> (B, T, J, C)
        return out


@register_recoverer("tri")
def tri(*, frames: int, **_: object) -> nn.Module:
    """Interpolation (H2OT): linear along time from the kept frames; parameter-free."""
    return InterpolationRecoverer(frames)


@register_recoverer("tra")
def tra(*, frames: int, dim: int, heads: int = 8, qkv_bias: bool = True, **_: object) -> nn.Module:
    """Attention (HoT): T learnable queries cross-attend to the kept tokens, per joint."""
    return AttentionRecoverer(frames, dim, heads, qkv_bias)
