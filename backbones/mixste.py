"""MixSTE (Zhang et al., CVPR 2022): alternating spatial and temporal transformer blocks, seq2seq.

Each of the ``depth`` blocks is a spatial block over the 17 joints of every frame followed by a
temporal block over the frames of every joint. Pruning happens before a block's spatial half;
HoT prunes to 81 tokens before block 3 and recovers with TRA before the regression head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn as nn

from .blocks import Block, init_joint_embedding
from .registry import VariantSpec, pop_token_args, register
from .tokens import TokenHourglass


@dataclass(frozen=True)
class MixSTEConfig:
    dim: int = 512  # channel of the official release
    depth: int = 8  # spatial+temporal block pairs
    heads: int = 8
    mlp_hidden: int = 1024  # MLP ratio 2
    joints: int = 17
    in_channels: int = 2  # (x, y) of the 2D detections
    drop_path: float = 0.1  # max stochastic depth, linearly increasing over blocks
    qkv_bias: bool = True
    joint_pos_std: float = 0.02  # initial spread of the spatial (per-joint) position embedding


class STBlock(nn.Module):
    """One MixSTE block: spatial attention over joints, then temporal attention over frames."""

    spatial: Block
    temporal: Block

    def __init__(self, cfg: MixSTEConfig, drop_path: float):
        super().__init__()
        self.spatial = Block(cfg.dim, cfg.heads, cfg.mlp_hidden, qkv_bias=cfg.qkv_bias, drop_path=drop_path)
        self.temporal = Block(cfg.dim, cfg.heads, cfg.mlp_hidden, qkv_bias=cfg.qkv_bias, drop_path=drop_path)


class MixSTE(nn.Module):
    pipeline = "seq2seq"

    def __init__(
        self,
        cfg: MixSTEConfig,
        frames: int,
        schedule: Sequence[tuple[int, int | float]] = (),
        pruner: str | None = None,
        recoverer: str | None = None,
        embed_kept: bool = False,
    ):
        super().__init__()
        self.cfg, self.frames, self.in_channels = cfg, frames, cfg.in_channels
        c = cfg.dim
        self.embed = nn.Linear(cfg.in_channels, c)
        self.spatial_pos = nn.Parameter(torch.zeros(1, cfg.joints, c))
        self.temporal_pos = nn.Parameter(torch.zeros(1, frames, c))
        rates = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(STBlock(cfg, r) for r in rates)
        # The official model applies one shared norm after every spatial and every temporal block.
        self.spatial_norm = nn.LayerNorm(c, eps=1e-6)
        self.temporal_norm = nn.LayerNorm(c, eps=1e-6)
        self.tokens = TokenHourglass(
            frames=frames, depth=cfg.depth, dim=c, schedule=schedule, pruner=pruner,
            recoverer=recoverer, embed_kept=embed_kept, heads=cfg.heads, qkv_bias=cfg.qkv_bias,
        )
        self.head = nn.Sequential(nn.LayerNorm(c), nn.Linear(c, 3))
        for i, blk in enumerate(self.st_blocks):
            blk.temporal.attn.track_received = self.tokens.wants_attention(i)
        init_joint_embedding(self.spatial_pos, cfg.joint_pos_std)
        nn.init.trunc_normal_(self.temporal_pos, std=0.02)

    @property
    def token_profile(self) -> list[int]:
        return self.tokens.profile

    @property
    def st_blocks(self) -> list[STBlock]:
        return cast(list[STBlock], list(self.blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, j, _ = x.shape  # (B, T, J, C_in)
        x = self.embed(x) + self.spatial_pos  # (B, T, J, C)
        pos = self.tokens.positions(x)
        received = None
        for i, blk in enumerate(self.st_blocks):
            x, pos = self.tokens.prune(i, x, pos, received)
            k, c = x.shape[1], x.shape[3]
            x = self.spatial_norm(blk.spatial(x.reshape(b * k, j, c)))  # (B*K, J, C)
            x = x.reshape(b, k, j, c).transpose(1, 2)  # -> (B, J, K, C)
            if i == 0:  # as in the official model, time is embedded after the first spatial block
                x = x + self.temporal_pos[0][pos].unsqueeze(1)
            x = self.temporal_norm(blk.temporal(x.reshape(b * j, k, c)))
            received = blk.temporal.attn.received
            if received is not None:
                received = received.reshape(b, j, k).mean(dim=1)  # attention received per frame
            x = x.reshape(b, j, k, c).transpose(1, 2)  # -> (B, K, J, C)
        x = self.tokens.recover(x, pos)  # (B, T, J, C)
        return self.head(x)



@register(
    "mixste",
    pipeline="seq2seq",
    in_channels=2,
    frames=243,
    # HoT (CVPR 2024): keep 81 of 243 before block 3, TPC + TRA, kept tokens get a position embedding.
    single=VariantSpec(schedule=((3, 1 / 3),), pruner="tpc", recoverer="tra", embed_kept=True),
    # Pyramid 243 -> 81 -> 27 (each stage keeps a third): -58 % paper-protocol FLOPs at T=243,
    # inside the 55-60 % that H2OT reports for MixSTE; parameter-free tps + tri.
    hierarchical=VariantSpec(schedule=((2, 1 / 3), (5, 1 / 9)), pruner="tps", recoverer="tri"),
    sizes={
        "base": {},
        "tiny": {"dim": 32, "heads": 4, "mlp_hidden": 64, "joint_pos_std": 1.0},  # joint_pos_std: blocks.init_joint_embedding
    },
    default_size="base",
    source="MixSTE, Zhang et al., CVPR 2022 (github.com/JinluZhang1126/MixSTE)",
)
def mixste(frames: int = 243, **kw) -> MixSTE:
    """MixSTE seq2seq lifter: 8 spatial+temporal blocks, dim 512, 8 heads, MLP ratio 2."""
    token_args = pop_token_args(kw)
    return MixSTE(MixSTEConfig(**kw), frames, **token_args)
