"""Token pruning and recovering: the one module every backbone calls between its blocks.

Vocabulary (SPEC section 4):

- a *schedule* is a sequence of stages ``(block_index, keep)``: before block ``block_index`` the
  tokens are cut down to ``keep``. Blocks strictly increase, keeps strictly decrease; ``keep`` is a
  count or a ratio of T in (0, 1), so one schedule scales with the sequence length.
- a *pruner* picks which tokens survive a stage (``tps``, ``tpc``, ``tpa``, ``tpmo``);
- a *recoverer* brings the kept tokens back to all T frames at the end (``tri``, ``tra``).

Every kept token carries its absolute frame position (B, K) composed across stages, so recovery
knows where each token sits in time, and seq2frame models can always find the centre frame.

A backbone uses :class:`TokenHourglass` like this::

    pos = self.tokens.positions(x)                     # (B, T) absolute frame indices
    for i, block in enumerate(self.blocks):
        x, pos = self.tokens.prune(i, x, pos)          # no-op where no stage starts
        x = block(x)
    x = self.tokens.recover(x, pos)                    # (B, T, ...) again; no-op for the rectangle
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn as nn

from .blocks import CrossAttention

PRUNERS = ("tps", "tpc", "tpa", "tpmo")
RECOVERERS = ("tri", "tra")


# --------------------------------------------------------------------------- schedules


def parse_schedule(text: str) -> tuple[tuple[int, int | float], ...]:
    """Parse ``"BLOCK:KEEP,..."`` (KEEP a count or a ratio of T in (0, 1)); ``""`` is no schedule."""
    stages: list[tuple[int, int | float]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        block, sep, keep = part.partition(":")
        if not sep:
            raise ValueError(f"schedule stage {part!r} is not BLOCK:KEEP (e.g. 3:81 or 3:0.33)")
        try:
            b = int(block)
            k: int | float = int(keep) if keep.strip().isdigit() else float(keep)
        except ValueError:
            raise ValueError(
                f"schedule stage {part!r}: BLOCK must be an integer and KEEP a count or a ratio in (0, 1)"
            ) from None
        stages.append((b, k))
    return tuple(stages)


def format_schedule(stages: Iterable[tuple[int, int | float]]) -> str:
    """The inverse of :func:`parse_schedule`: ``[(3, 81), (5, 27)] -> "3:81,5:27"``."""
    return ",".join(f"{b}:{k:g}" if isinstance(k, float) else f"{b}:{k}" for b, k in stages)


def resolve_schedule(
    schedule: Sequence[tuple[int, int | float]], frames: int, depth: int
) -> list[tuple[int, int]]:
    """Validate a schedule and turn ratios into token counts for ``frames`` frames.

    Raises ValueError naming the problem: blocks not strictly increasing or outside
    ``0..depth-1``, a keep below 1, or a keep not below the tokens entering its stage.
    """
    resolved: list[tuple[int, int]] = []
    tokens, last_block = frames, -1
    for block, keep in schedule:
        if isinstance(keep, bool) or not isinstance(block, int):
            raise ValueError(f"schedule stage ({block!r}, {keep!r}): block must be an integer")
        if not 0 <= block < depth:
            raise ValueError(f"schedule block {block} is outside the depth {depth} (blocks 0..{depth - 1})")
        if block <= last_block:
            raise ValueError(
                f"schedule blocks must be strictly increasing, got block {block} after block {last_block}"
            )
        if isinstance(keep, float) and not keep.is_integer():
            if not 0.0 < keep < 1.0:
                raise ValueError(f"schedule keep ratio {keep} must lie in (0, 1)")
            count = max(1, round(keep * frames))
        else:
            count = int(keep)
        if count < 1:
            raise ValueError(f"schedule keep must be >= 1 token, got {keep} at block {block}")
        if count >= tokens:
            raise ValueError(
                f"schedule keep {count} at block {block} must be below the {tokens} tokens entering that stage"
            )
        resolved.append((block, count))
        tokens, last_block = count, block
    return resolved


def token_profile(stages: Sequence[tuple[int, int]], frames: int, depth: int) -> list[int]:
    """Tokens seen by each block, e.g. ``[243, 243, 243, 81, 81, 81, 81, 81]``."""
    keep_at = dict(stages)
    profile, tokens = [], frames
    for i in range(depth):
        tokens = keep_at.get(i, tokens)
        profile.append(tokens)
    return profile


# --------------------------------------------------------------------------- selection rules
# Each rule returns local indices (B, keep) into the current tokens, sorted by time.


def _pool_joints(x: torch.Tensor) -> torch.Tensor:
    """(B, T, J, C) -> (B, T, C) by averaging joints; (B, T, C) passes through."""
    return x.mean(dim=2) if x.dim() == 4 else x


def _top_sorted(score: torch.Tensor, keep: int) -> torch.Tensor:
    return score.topk(keep, dim=-1).indices.sort(dim=-1).values


def select_tps(batch: int, tokens: int, keep: int, device: torch.device | None = None) -> torch.Tensor:
    """Uniform sampling: round(linspace(0, tokens - 1, keep)), the same for every sample."""
    idx = torch.linspace(0, tokens - 1, keep, device=device).round().long()
    return idx.unsqueeze(0).expand(batch, keep)


def dpc_knn_scores(feat: torch.Tensor, k: int = 2) -> torch.Tensor:
    """Density-peaks score of every token (B, T, C) -> (B, T): local density x distance to denser.

    Density is exp(-mean squared distance to the k nearest tokens); the distance term is the
    distance to the nearest token of higher density (the largest distance for the densest token).
    Cluster centres score highest, so top-k picks one representative per cluster (DPC-kNN).
    """
    # Double precision: densities of close tokens differ far below float32's resolution near 1.
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
        return _top_sorted(dpc_knn_scores(_pool_joints(x), k), keep)


def select_tpa(received: torch.Tensor, keep: int) -> torch.Tensor:
    """Token pruning by attention: the ``keep`` tokens that received the most attention (B, T)."""
    return _top_sorted(received.detach(), keep)


def motion_scores(x: torch.Tensor) -> torch.Tensor:
    """Per-frame motion (B, T): mean feature change to the previous and next frame."""
    feat = _pool_joints(x).detach().float()
    step = (feat[:, 1:] - feat[:, :-1]).norm(dim=-1)  # (B, T-1)
    zero = step.new_zeros(step.shape[0], 1)
    before, after = torch.cat([zero, step], 1), torch.cat([step, zero], 1)
    count = torch.full_like(before, 2.0)
    count[:, 0] = count[:, -1] = 1.0
    return (before + after) / count


def select_tpmo(x: torch.Tensor, keep: int) -> torch.Tensor:
    """Token pruning by motion: the ``keep`` frames that move most, sorted by time."""
    return _top_sorted(motion_scores(x), keep)


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Pick tokens along dim 1: x (B, T, ...) and idx (B, K) -> (B, K, ...)."""
    batch = torch.arange(x.shape[0], device=x.device).unsqueeze(1)
    return x[batch, idx]


def ensure_centre(idx: torch.Tensor, pos: torch.Tensor, centre: int, score: torch.Tensor | None) -> torch.Tensor:
    """Make sure the token at absolute frame ``centre`` is among ``idx`` (seq2frame pipelines).

    Where it is missing, it replaces the selected token closest to it in time (for ``tps``) or
    the lowest-scored selected token (score given), keeping the indices sorted.
    """
    local = (pos == centre).float().argmax(dim=1, keepdim=True)  # (B, 1) local index of the centre
    present = (idx == local).any(dim=1, keepdim=True)
    if bool(present.all()):
        return idx
    if score is None:
        victim = (idx - local).abs().argmin(dim=1, keepdim=True)
    else:
        victim = torch.gather(score, 1, idx).argmin(dim=1, keepdim=True)
    replaced = idx.scatter(1, victim, local)
    return torch.where(present, idx, replaced).sort(dim=1).values


# --------------------------------------------------------------------------- recoverers


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
    right = torch.searchsorted(p, t).clamp(1, k - 1)  # (B, T)
    left = right - 1
    p_left, p_right = torch.gather(p, 1, left), torch.gather(p, 1, right)
    w = ((t - p_left) / (p_right - p_left).clamp_min(1e-6)).clamp(0.0, 1.0)
    w = w.to(x.dtype).reshape(b, frames, *([1] * (x.dim() - 2)))
    return gather_tokens(x, left) * (1 - w) + gather_tokens(x, right) * w


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        joints = x.dim() == 4
        if joints:
            b, k, j, c = x.shape
            x = x.permute(0, 2, 1, 3).reshape(b * j, k, c)  # (B, K, J, C) -> (B*J, K, C)
        q = self.query.expand(x.shape[0], -1, -1)
        out = q + self.attn(q, x)
        if joints:
            out = out.reshape(b, j, -1, c).permute(0, 2, 1, 3)  # -> (B, T, J, C)
        return out


# --------------------------------------------------------------------------- the module


class TokenHourglass(nn.Module):
    """Prunes tokens at the scheduled blocks and recovers them at the end.

    Holds the resolved schedule, the optional learnable embeddings of the kept tokens (HoT adds
    one per stage) and the recoverer's parameters; all of them live under this module, so a
    rectangle checkpoint loads into a pruned variant missing only these.
    """

    def __init__(
        self,
        *,
        frames: int,
        depth: int,
        dim: int,
        schedule: Sequence[tuple[int, int | float]] = (),
        pruner: str | None = None,
        recoverer: str | None = None,
        pipeline: str = "seq2seq",
        embed_kept: bool = False,
        heads: int = 8,
        qkv_bias: bool = True,
        knn: int = 2,
    ):
        super().__init__()
        self.frames, self.depth, self.pipeline, self.knn = frames, depth, pipeline, knn
        self.stages = resolve_schedule(schedule, frames, depth)
        if self.stages:
            if pruner not in PRUNERS:
                raise ValueError(f"unknown pruner {pruner!r}; choose from {', '.join(PRUNERS)}")
            if pipeline == "seq2seq" and recoverer not in RECOVERERS:
                raise ValueError(f"unknown recoverer {recoverer!r}; choose from {', '.join(RECOVERERS)}")
            if pruner == "tpa" and self.stages[0][0] == 0:
                raise ValueError("pruner 'tpa' needs a block before the first prune point (block >= 1)")
        self.pruner = pruner if self.stages else None
        self.recoverer = recoverer if self.stages and pipeline == "seq2seq" else None
        self.centre = (frames - 1) // 2
        self.keep_at = dict(self.stages)
        self.embeds = nn.ParameterDict()
        if embed_kept:
            for block, keep in self.stages:
                self.embeds[str(block)] = nn.Parameter(torch.zeros(1, keep, dim))
                nn.init.trunc_normal_(self.embeds[str(block)], std=0.02)
        self.tra = (
            AttentionRecoverer(frames, dim, heads, qkv_bias) if self.recoverer == "tra" else None
        )

    @property
    def profile(self) -> list[int]:
        return token_profile(self.stages, self.frames, self.depth)

    @property
    def schedule_text(self) -> str:
        return format_schedule(self.stages)

    def wants_attention(self, block: int) -> bool:
        """Whether block ``block``'s temporal attention must report attention received (tpa)."""
        return self.pruner == "tpa" and (block + 1) in self.keep_at

    def positions(self, x: torch.Tensor) -> torch.Tensor:
        """Absolute frame index of every token of a full-length input x (B, T, ...) -> (B, T)."""
        return torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)

    def select(
        self, block: int, x: torch.Tensor, pos: torch.Tensor, received: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Local indices (B, keep) of the tokens that survive the stage at ``block``; None if none.

        ``x`` is the feature the pruner judges, (B, T, J, C) or (B, T, C); ``received`` is the
        attention each token received in the preceding temporal block (B, T), for ``tpa``.
        """
        keep = self.keep_at.get(block)
        if keep is None:
            return None
        b, t = pos.shape
        score: torch.Tensor | None = None
        if self.pruner == "tps":
            idx = select_tps(b, t, keep, pos.device)
        elif self.pruner == "tpc":
            score = dpc_knn_scores(_pool_joints(x).detach(), self.knn)
        elif self.pruner == "tpa":
            if received is None:
                raise RuntimeError(f"pruner 'tpa' at block {block} got no attention from the block before")
            score = received.detach().float()
        else:
            score = motion_scores(x)
        if score is not None:
            if self.pipeline == "seq2frame":
                score = score.masked_fill(pos == self.centre, float("inf"))
            idx = _top_sorted(score, keep)
        if self.pipeline == "seq2frame":
            idx = ensure_centre(idx, pos, self.centre, score)
        return idx

    def embed(self, block: int, x: torch.Tensor) -> torch.Tensor:
        """Add the stage's learnable kept-token embedding (1, K, C), broadcast over joints."""
        key = str(block)
        if key not in self.embeds:
            return x
        e = self.embeds[key]
        return x + (e.unsqueeze(2) if x.dim() == 4 else e)

    def prune(
        self, block: int, x: torch.Tensor, pos: torch.Tensor, received: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Select, gather and embed in one call for models with a single token stream."""
        idx = self.select(block, x, pos, received)
        if idx is None:
            return x, pos
        return self.embed(block, gather_tokens(x, idx)), gather_tokens(pos, idx)

    def recover(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Back to all T frames (B, T, ...) from kept tokens (B, K, ...); identity if nothing was pruned."""
        if x.shape[1] == self.frames or self.recoverer is None:
            return x
        if self.tra is not None:
            return self.tra(x)
        return interpolate_tokens(x, pos, self.frames)

    def centre_token(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The token of the centre frame, x (B, K, ...) -> (B, 1, ...), for seq2frame outputs."""
        local = (pos == self.centre).float().argmax(dim=1, keepdim=True)
        return gather_tokens(x, local)
