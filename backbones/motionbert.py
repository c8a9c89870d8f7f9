"""MotionBERT's DSTformer (Zhu et al., ICCV 2023): dual-stream spatio-temporal transformer, seq2seq.

Each of the ``depth`` blocks runs two streams on the same input and fuses them:

- ST: spatial attention over the 17 joints of every frame, then temporal attention over the frames
  of every joint (each followed by its MLP);
- TS: the same two halves in the opposite order;
- fusion: a per-token softmax over two learned weights, ``alpha = softmax(W [x_st, x_ts])``,
  ``x = alpha_0 x_st + alpha_1 x_ts``.

After the blocks come a norm, the representation layer (``pre_logits``: Linear to ``dim_rep`` +
tanh) and the regression head. HoT prunes to 81 tokens before block 1 (after block 0's fusion),
adds a learnable embedding to the kept tokens, and recovers with TRA between the final norm and
the representation layer; the pruned variants here put pruning and recovery at the same places.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn as nn

from .blocks import Block, init_joint_embedding
from .registry import VariantSpec, pop_token_args, register
from .tokens import TokenHourglass


@dataclass(frozen=True)
class DSTformerConfig:
    dim: int = 256  # dim_feat of MotionBERT-Lite (configs/pretrain/MB_lite.yaml), what HoT measured
    depth: int = 5
    heads: int = 8
    mlp_hidden: int = 1024  # Lite's mlp_ratio 4
    dim_rep: int = 512  # width of the tanh representation layer, the same in Lite and base
    joints: int = 17
    in_channels: int = 3  # (x, y, confidence) of the 2D detections
    drop_path: float = 0.0  # the official H36M fine-tuning builds DSTformer without stochastic depth
    qkv_bias: bool = True
    joint_pos_std: float = 0.02  # initial spread of the per-joint position embedding


def _spatial(block: Block, x: torch.Tensor) -> torch.Tensor:
    """Attention over joints: (B, T, J, C) -> (B*T, J, C) -> (B, T, J, C)."""
    b, t, j, c = x.shape
    return block(x.reshape(b * t, j, c)).reshape(b, t, j, c)


def _temporal(block: Block, x: torch.Tensor) -> torch.Tensor:
    """Attention over frames: (B, T, J, C) -> (B*J, T, C) -> (B, T, J, C)."""
    b, t, j, c = x.shape
    y = block(x.transpose(1, 2).reshape(b * j, t, c))
    return y.reshape(b, j, t, c).transpose(1, 2)


class Stream(nn.Module):
    """One stream of a DSTformer block: a spatial and a temporal pre-norm transformer layer.

    ``order`` is ``"st"`` (spatial first) or ``"ts"``. The official release holds both halves in
    one module (``norm1_s``, ``attn_s``, ``mlp_s``, ``norm1_t``...); two ``Block`` s carry the same
    parameters.
    """

    spatial: Block
    temporal: Block

    def __init__(self, cfg: DSTformerConfig, order: str, drop_path: float):
        super().__init__()
        if order not in ("st", "ts"):
            raise ValueError(f"stream order must be 'st' or 'ts', got {order!r}")
        self.order = order
        args = (cfg.dim, cfg.heads, cfg.mlp_hidden)
        self.spatial = Block(*args, qkv_bias=cfg.qkv_bias, drop_path=drop_path)
        self.temporal = Block(*args, qkv_bias=cfg.qkv_bias, drop_path=drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.order == "st":
            return _temporal(self.temporal, _spatial(self.spatial, x))
        return _spatial(self.spatial, _temporal(self.temporal, x))


class DSTBlock(nn.Module):
    """One DSTformer block: the ST and TS streams and their learned per-token fusion."""

    st: Stream
    ts: Stream

    def __init__(self, cfg: DSTformerConfig, drop_path: float):
        super().__init__()
        self.st = Stream(cfg, "st", drop_path)
        self.ts = Stream(cfg, "ts", drop_path)
        # The official ``ts_attn[i]``: zero weights and equal biases, so training starts from the
        # plain average of the two streams and learns per token which one to trust.
        self.fusion = nn.Linear(2 * cfg.dim, 2)
        self.reset_fusion()

    def reset_fusion(self) -> None:
        nn.init.zeros_(self.fusion.weight)
        nn.init.constant_(self.fusion.bias, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_st, x_ts = self.st(x), self.ts(x)
        alpha = self.fusion(torch.cat([x_st, x_ts], dim=-1)).softmax(dim=-1)  # (B, T, J, 2)
        return x_st * alpha[..., 0:1] + x_ts * alpha[..., 1:2]

    def received(self) -> torch.Tensor | None:
        """Attention each token received in the temporal halves of both streams, averaged (B*J, T).

        The fusion starts as an equal mix of the streams, so neither temporal attention is the
        block's; tpa weighs them equally. None unless ``track_received`` is set on both.
        """
        a, b = self.st.temporal.attn.received, self.ts.temporal.attn.received
        return None if a is None or b is None else (a + b) / 2


class DSTformer(nn.Module):
    pipeline = "seq2seq"

    def __init__(
        self,
        cfg: DSTformerConfig,
        frames: int,
        schedule: Sequence[tuple[int, int | float]] = (),
        pruner: str | None = None,
        recoverer: str | None = None,
        embed_kept: bool = False,
    ):
        super().__init__()
        self.cfg, self.frames, self.in_channels = cfg, frames, cfg.in_channels
        c = cfg.dim
        self.joints_embed = nn.Linear(cfg.in_channels, c)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.joints, c))  # per joint
        self.temp_embed = nn.Parameter(torch.zeros(1, frames, 1, c))  # per frame (official maxlen = T)
        rates = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(DSTBlock(cfg, r) for r in rates)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pre_logits = nn.Sequential(OrderedDict(fc=nn.Linear(c, cfg.dim_rep), act=nn.Tanh()))
        self.head = nn.Linear(cfg.dim_rep, 3)
        self.apply(_init_weights)  # before the fusion and token modules, which set their own
        for blk in self.dst_blocks:
            blk.reset_fusion()
        init_joint_embedding(self.pos_embed, cfg.joint_pos_std)
        nn.init.trunc_normal_(self.temp_embed, std=0.02)
        self.tokens = TokenHourglass(
            frames=frames, depth=cfg.depth, dim=c, schedule=schedule, pruner=pruner,
            recoverer=recoverer, embed_kept=embed_kept, heads=cfg.heads, qkv_bias=cfg.qkv_bias,
        )
        for i, blk in enumerate(self.dst_blocks):
            track = self.tokens.wants_attention(i)
            blk.st.temporal.attn.track_received = track
            blk.ts.temporal.attn.track_received = track

    @property
    def token_profile(self) -> list[int]:
        return self.tokens.profile

    @property
    def dst_blocks(self) -> list[DSTBlock]:
        return cast(list[DSTBlock], list(self.blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, j, _ = x.shape  # (B, T, J, C_in)
        x = self.joints_embed(x) + self.pos_embed + self.temp_embed  # (B, T, J, C)
        pos = self.tokens.positions(x)
        received = None
        for i, blk in enumerate(self.dst_blocks):
            x, pos = self.tokens.prune(i, x, pos, received)
            x = blk(x)
            received = blk.received()
            if received is not None:
                received = received.reshape(b, j, -1).mean(dim=1)  # attention received per frame
        x = self.tokens.recover(self.norm(x), pos)  # (B, T, J, C); HoT recovers after the norm
        return self.head(self.pre_logits(x))


def _init_weights(m: nn.Module) -> None:
    """The official initialisation: truncated-normal linear weights, zero biases, unit norms."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)



@register(
    "motionbert",
    pipeline="seq2seq",
    in_channels=3,
    frames=243,
    # HoT (CVPR 2024): keep 81 of 243 before block 1, TPC + TRA, kept tokens get a position embedding.
    single=VariantSpec(schedule=((1, 1 / 3),), pruner="tpc", recoverer="tra", embed_kept=True),
    # Pyramid 243 -> 81 -> 27 (each stage keeps a third, as for MixSTE) before blocks 1 and 4: blocks
    # see 243, 81, 81, 81, 27 tokens: -57.3 % paper-protocol FLOPs at T=243 (Lite 131.4 -> 56.1 G,
    # HoT's single stage gives -51.8 %); parameter-free tps + tri.
    hierarchical=VariantSpec(schedule=((1, 1 / 3), (4, 1 / 9)), pruner="tps", recoverer="tri"),
    sizes={
        "lite": {},
        "base": {"dim": 512, "mlp_hidden": 1024},  # configs/pose3d/MB_ft_h36m.yaml: mlp_ratio 2
        "tiny": {"dim": 32, "heads": 4, "mlp_hidden": 64, "dim_rep": 32, "joint_pos_std": 1.0},  # joint_pos_std: blocks.init_joint_embedding
    },
    default_size="lite",
    source="MotionBERT, Zhu et al., ICCV 2023 (github.com/Walter0807/MotionBERT, lib/model/DSTformer.py)",
)
def motionbert(frames: int = 243, **kw) -> DSTformer:
    """MotionBERT DSTformer seq2seq lifter: 5 dual-stream blocks; Lite dim 256 (MLP 1024), base dim 512."""
    token_args = pop_token_args(kw)
    return DSTformer(DSTformerConfig(**kw), frames, **token_args)
