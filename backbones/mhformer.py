"""MHFormer (Li et al., CVPR 2022): multi-hypothesis transformer, seq2frame.

Three parts, as in the official release:

1. Multi-hypothesis generation (MHG): three cascaded transformer encoders whose tokens are the
   2J joint-coordinate channels and whose feature is each channel's whole T-frame trajectory
   (so attention runs over 34 tokens of width T, with 9 heads). Each encoder refines the previous
   hypothesis residually; the three outputs are the three hypotheses.
2. Each hypothesis is embedded frame by frame to ``dim`` channels; from here on tokens are frames.
3. Self-hypothesis refinement (SHR, ``depth - 1`` blocks: self-attention within each hypothesis,
   then one MLP over the three side by side) and cross-hypothesis interaction (CHI, one block:
   each hypothesis attends with queries and keys taken from the others), a final norm and a
   BatchNorm + 1x1 conv regression of every frame token. The model returns the centre frame.

Token pruning acts on the frame tokens of the SHR/CHI blocks (``self.blocks``); the MHG encoders
have no frame tokens to prune. The three hypotheses travel side by side as one (B, T, 3*dim)
tensor, so one index, chosen from all three hypotheses together as HoT does, prunes them all in a
single gather. HoT (CVPR 2024) keeps 117 of 351 frames before SHR block 1 with TPC and the centre
frame always kept; its MHFormer adds no kept-token embedding, so its parameters equal the
rectangle's (31,516,125 at T=351).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import Attention, Block, DropPath, Mlp
from .registry import VariantSpec, pop_token_args, register
from .tokens import TokenHourglass

# The official release embeds short clips (T <= 27) with conv + BatchNorm + ReLU + dropout 0.25
# and longer ones with a bare 1x1 conv; the two layouts differ in parameters (BatchNorm's 2*dim).
SHORT_CLIP = 27
HYPOTHESES = 3  # fixed: CHI is defined for exactly three hypotheses


@dataclass(frozen=True)
class MHFormerConfig:
    dim: int = 512  # official --channel, per hypothesis
    mlp_hidden: int = 1024  # official --d_hid: the SHR/CHI MLP maps 3*dim -> d_hid -> 3*dim
    heads: int = 8  # SHR/CHI attention heads
    depth: int = 3  # official --layers: depth - 1 SHR blocks, then one CHI block
    mhg_depth: int = 4  # transformer blocks per MHG encoder
    mhg_heads: int = 9  # MHG attention runs over a T-wide feature; 9 divides 27, 81, 243, 351
    joints: int = 17
    in_channels: int = 2  # (x, y) of the 2D detections
    drop: float = 0.1  # official drop_rate: position-embedding, attention-projection and MLP dropout
    drop_path: float = 0.2  # max stochastic depth, rising linearly over each transformer's blocks


class HypothesisEncoder(nn.Module):
    """One MHG encoder: x + encoder(norm(x)) over (B, 2J, T), coordinate channels as tokens."""

    def __init__(self, cfg: MHFormerConfig, frames: int):
        super().__init__()
        coords = cfg.joints * cfg.in_channels
        self.norm_in = nn.LayerNorm(frames)  # the official norm_1/2/3 keep torch's default eps
        self.pos_embed = nn.Parameter(torch.zeros(1, coords, frames))
        self.drop = nn.Dropout(cfg.drop)
        rates = torch.linspace(0, cfg.drop_path, cfg.mhg_depth).tolist()
        self.blocks = nn.ModuleList(
            Block(frames, cfg.mhg_heads, 2 * frames, qkv_bias=True, drop=cfg.drop, drop_path=r) for r in rates
        )
        self.norm = nn.LayerNorm(frames, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.norm_in(x) + self.pos_embed)
        for blk in self.blocks:
            h = blk(h)
        return x + self.norm(h)


def frame_embedding(cfg: MHFormerConfig, frames: int) -> nn.Module:
    """Per-frame embedding of one hypothesis, (B, 2J, T) -> (B, dim, T); see SHORT_CLIP."""
    conv = nn.Conv1d(cfg.joints * cfg.in_channels, cfg.dim, kernel_size=1)
    if frames > SHORT_CLIP:
        return conv
    return nn.Sequential(conv, nn.BatchNorm1d(cfg.dim, momentum=0.1), nn.ReLU(), nn.Dropout(0.25))


class SHRBlock(nn.Module):
    """Self-hypothesis refinement on (B, T, 3*dim): attention within each hypothesis, a joint MLP."""

    def __init__(self, cfg: MHFormerConfig, drop_path: float):
        super().__init__()
        c = cfg.dim
        self.norms = nn.ModuleList(nn.LayerNorm(c, eps=1e-6) for _ in range(HYPOTHESES))
        self.attns = nn.ModuleList(
            Attention(c, cfg.heads, qkv_bias=True, proj_drop=cfg.drop) for _ in range(HYPOTHESES)
        )
        self.norm2 = nn.LayerNorm(HYPOTHESES * c, eps=1e-6)
        self.mlp = Mlp(HYPOTHESES * c, cfg.mlp_hidden, drop=cfg.drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.chunk(HYPOTHESES, dim=-1)
        x = torch.cat(
            [h + self.drop_path(attn(norm(h))) for h, norm, attn in zip(parts, self.norms, self.attns)], dim=-1
        )
        return x + self.drop_path(self.mlp(self.norm2(x)))

    @property
    def received(self) -> torch.Tensor | None:
        """Attention each frame received (B, T), averaged over the hypotheses; None unless tracked."""
        got = [a.received for a in self.attns if isinstance(a, Attention) and a.received is not None]
        return torch.stack(got).mean(dim=0) if got else None


class CrossHypothesisAttention(nn.Module):
    """Multi-head attention whose queries, keys and values come from three different tensors."""

    def __init__(self, dim: int, heads: int, proj_drop: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, n, c = q.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)  # -> (B, H, N, D)

        out = F.scaled_dot_product_attention(split(self.linear_q(q)), split(self.linear_k(k)), split(self.linear_v(v)))
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class CHIBlock(nn.Module):
    """Cross-hypothesis interaction on (B, T, 3*dim), then the joint MLP as in SHR."""

    # (query, key, value) hypotheses for the update of hypothesis 0, 1, 2 (the official order).
    SOURCES = ((1, 2, 0), (0, 2, 1), (0, 1, 2))

    def __init__(self, cfg: MHFormerConfig, drop_path: float):
        super().__init__()
        c = cfg.dim
        # norm_q[i], norm_k[i], norm_v[i] normalise the sources of hypothesis i's update.
        self.norm_q = nn.ModuleList(nn.LayerNorm(c, eps=1e-6) for _ in range(HYPOTHESES))
        self.norm_k = nn.ModuleList(nn.LayerNorm(c, eps=1e-6) for _ in range(HYPOTHESES))
        self.norm_v = nn.ModuleList(nn.LayerNorm(c, eps=1e-6) for _ in range(HYPOTHESES))
        self.attns = nn.ModuleList(CrossHypothesisAttention(c, cfg.heads, cfg.drop) for _ in range(HYPOTHESES))
        self.norm2 = nn.LayerNorm(HYPOTHESES * c, eps=1e-6)
        self.mlp = Mlp(HYPOTHESES * c, cfg.mlp_hidden, drop=cfg.drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = list(x.chunk(HYPOTHESES, dim=-1))
        # Updated in place one after another: hypothesis 1 already sees the updated hypothesis 0,
        # and hypothesis 2 both updated ones, exactly as the official block computes them.
        for i, (qi, ki, vi) in enumerate(self.SOURCES):
            q, k, v = self.norm_q[i](h[qi]), self.norm_k[i](h[ki]), self.norm_v[i](h[vi])
            h[i] = h[i] + self.drop_path(self.attns[i](q, k, v))
        x = torch.cat(h, dim=-1)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class MHFormer(nn.Module):
    """(B, T, J, C_in) 2D sequences -> (B, 1, J, 3) 3D pose of the centre frame."""

    pipeline = "seq2frame"

    def __init__(
        self,
        cfg: MHFormerConfig,
        frames: int,
        schedule: Sequence[tuple[int, int | float]] = (),
        pruner: str | None = None,
        recoverer: str | None = None,
        embed_kept: bool = False,
    ):
        super().__init__()
        if cfg.depth < 1:
            raise ValueError(f"depth must be >= 1 (depth - 1 SHR blocks and one CHI block), got {cfg.depth}")
        self.cfg, self.frames, self.in_channels = cfg, frames, cfg.in_channels
        width = HYPOTHESES * cfg.dim
        self.mhg = nn.ModuleList(HypothesisEncoder(cfg, frames) for _ in range(HYPOTHESES))
        self.embeds = nn.ModuleList(frame_embedding(cfg, frames) for _ in range(HYPOTHESES))
        self.pos_embed = nn.Parameter(torch.zeros(1, frames, width))  # one (T, dim) per hypothesis, side by side
        self.pos_drop = nn.Dropout(cfg.drop)
        rates = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList([*(SHRBlock(cfg, r) for r in rates[:-1]), CHIBlock(cfg, rates[-1])])
        # Seq2frame: no recoverer; the hourglass keeps the centre frame through every stage.
        self.tokens = TokenHourglass(
            frames=frames, depth=cfg.depth, dim=width, schedule=schedule, pruner=pruner,
            recoverer=recoverer, pipeline="seq2frame", embed_kept=embed_kept, heads=cfg.heads,
        )
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Sequential(nn.BatchNorm1d(width, momentum=0.1), nn.Conv1d(width, 3 * cfg.joints, kernel_size=1))
        for i, blk in enumerate(self.blocks):
            if isinstance(blk, SHRBlock) and self.tokens.wants_attention(i):  # CHI, the last, never can
                for attn in blk.attns:
                    if isinstance(attn, Attention):  # always; narrows the ModuleList item's type
                        attn.track_received = True

    @property
    def token_profile(self) -> list[int]:
        return self.tokens.profile

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, j, c = x.shape  # (B, T, J, C_in)
        x = x.permute(0, 2, 3, 1).reshape(b, j * c, t)  # -> (B, J*C_in, T), joint-major channels
        hypotheses = []
        for encoder in self.mhg:
            x = encoder(x)  # each hypothesis refines the one before
            hypotheses.append(x)
        x = torch.cat([emb(h) for emb, h in zip(self.embeds, hypotheses)], dim=1).transpose(1, 2)  # (B, T, 3*dim)
        x = self.pos_drop(x + self.pos_embed)
        pos = self.tokens.positions(x)
        received = None
        for i, blk in enumerate(self.blocks):
            x, pos = self.tokens.prune(i, x, pos, received)  # one index for all three hypotheses
            x = blk(x)
            received = blk.received if isinstance(blk, SHRBlock) else None
        # As in the official model, every kept frame is regressed (BatchNorm's training statistics
        # span them all) and the centre frame is picked afterwards.
        x = self.head(self.norm(x).transpose(1, 2))  # (B, 3*dim, K) -> (B, 3J, K)
        x = x.reshape(b, j, 3, -1).permute(0, 3, 1, 2)  # -> (B, K, J, 3)
        return self.tokens.centre_token(x, pos)  # (B, 1, J, 3)


def _frames_ok(t: int) -> str | None:
    # The centre frame is (T - 1) // 2, the official --pad, so even T works too (the left middle).
    if t % 9:
        return (
            "the multi-hypothesis encoders attend over a T-wide feature with 9 heads, so frames must be "
            "a multiple of 9 (e.g. 27, 81, 243, 351)"
        )
    return None


@register(
    "mhformer",
    pipeline="seq2frame",
    in_channels=2,
    frames=351,
    # HoT (CVPR 2024): keep 117 of 351 before SHR block 1 with TPC, centre frame always kept, no
    # kept-token embedding (trans_hypothesis_cluster.py); seq2frame needs no recoverer.
    single=VariantSpec(schedule=((1, 1 / 3),), pruner="tpc"),
    # With three blocks, the only two-stage pyramid that leaves block 0 at full length (and so
    # works with tpa too) prunes before block 1 and block 2: 351 -> 117 (SHR 1) -> 39 (CHI).
    hierarchical=VariantSpec(schedule=((1, 1 / 3), (2, 1 / 9)), pruner="tps"),
    sizes={
        "base": {},
        "tiny": {"dim": 32, "mlp_hidden": 64, "heads": 4, "mhg_depth": 1},
    },
    default_size="base",
    source="MHFormer, Li et al., CVPR 2022 (github.com/Vegetebird/MHFormer)",
    valid_frames=_frames_ok,
)
def mhformer(frames: int = 351, **kw) -> MHFormer:
    """MHFormer seq2frame lifter: 3 MHG encoders, 2 SHR + 1 CHI blocks, dim 512 per hypothesis, d_hid 1024."""
    token_args = pop_token_args(kw)
    return MHFormer(MHFormerConfig(**kw), frames, **token_args)
