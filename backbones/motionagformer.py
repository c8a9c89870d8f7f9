"""MotionAGFormer-B (Mehraban et al., WACV 2024): attention and graph streams fused per layer, seq2seq.

Each of the 16 layers runs two streams on the same input (B, T, J, C) and mixes them with learned
per-token weights:

- the attention stream: a spatial MetaFormer block (self-attention over the 17 joints of a frame)
  then a temporal one (self-attention over the frames of a joint);
- the graph stream: a spatial GCN over the skeleton, then a temporal GCN over a k-nearest-neighbour
  graph of frames built on the fly from feature similarity (k = 2 in the base config).

The temporal GCN normalises each frame position with its own BatchNorm statistics, the one place
where the model knows absolute time (it has no temporal position embedding). Pruned tokens keep
their absolute frame positions, so they use the statistics of their own frames (:func:`frame_batch_norm`);
this keeps one weight layout for all variants. HoT's release instead gives pruned layers a
BatchNorm over the 81 kept slots, which is why its parameter count is 2,916 below ours;
``hot_slot_norm=True`` builds that layout (HoT's exact parameters, for its checkpoints).

HoT prunes to 81 of 243 tokens before layer 7 (TPC, plus a learnable embedding of the kept tokens)
and recovers with TRA after the final norm, before the representation head.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import Attention, DropPath, Mlp, init_joint_embedding
from .registry import VariantSpec, pop_token_args, register
from .tokens import TokenHourglass

# Out-neighbours of each Human3.6M joint in the official spatial graph. Rows 0 (hip) and 8 (thorax)
# leave out some limbs that point back at them, so the graph is directed, as released.
SKELETON = (
    (1, 7), (2, 0), (3, 1), (2,), (5, 0), (6, 4), (5,), (0, 8), (7, 9),
    (8, 10), (9,), (12, 8), (13, 11), (12,), (15, 8), (16, 14), (15,),
)


@dataclass(frozen=True)
class MotionAGFormerConfig:
    """Defaults are MotionAGFormer-B, configs/h36m/MotionAGFormer-base.yaml of the official release."""

    dim: int = 128  # dim_feat
    depth: int = 16  # n_layers
    heads: int = 8  # HoT's copy runs with 4; parameters and paper-protocol FLOPs do not depend on it
    mlp_ratio: float = 4.0
    dim_rep: int = 512  # width of the tanh representation before the regression head
    neighbours: int = 2  # k of the temporal kNN graph (neighbour_num); HoT's copy runs with 4
    joints: int = 17
    in_channels: int = 3  # (x, y, confidence)
    drop_path: float = 0.0  # the same rate in every layer, as released
    qkv_bias: bool = False
    layer_scale: float = 1e-5  # initial value of the MetaFormer layer scales
    joint_pos_std: float = 0.0  # initial spread of the per-joint position embedding (0: zeros, as released)
    # HoT's layout: a pruned layer's temporal BatchNorm has one channel per kept *slot* (81), not
    # per frame (243). Exactly HoT's parameters and checkpoints, but a rectangle checkpoint no
    # longer loads into the pruned variants, and a slot is a different frame in every clip.
    hot_slot_norm: bool = False


# --------------------------------------------------------------------------- mixers


class AxisAttention(Attention):
    """Self-attention of (B, T, J, C) along the joints (spatial) or along the frames (temporal)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool, temporal: bool):
        super().__init__(dim, heads, qkv_bias=qkv_bias)
        self.temporal = temporal

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        b, t, j, c = x.shape
        if self.temporal:
            y = super().forward(x.transpose(1, 2).reshape(b * j, t, c))  # (B*J, T, C)
            return y.reshape(b, j, t, c).transpose(1, 2)
        return super().forward(x.reshape(b * t, j, c)).reshape(b, t, j, c)  # over (B*T, J, C)


def normalise_adjacency(adj: torch.Tensor) -> torch.Tensor:
    """D^-1/2 A D^-1/2 with D the row degrees (..., N, N).

    The official release multiplies by dense diagonal matrices (two extra T^3 bmm's per temporal
    GCN, ~15.7 GFLOPs under fvcore at T=243); scaling rows and columns is the same result.
    """
    scale = adj.sum(dim=-1).pow(-0.5)
    return scale.unsqueeze(-1) * adj * scale.unsqueeze(-2)


def frame_batch_norm(bn: nn.BatchNorm1d, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """BatchNorm over frame positions for kept tokens: x (B, J, K, C) at absolute positions pos (B, K).

    ``bn`` has one channel per frame of the full sequence. Each kept token is normalised with the
    statistics of its own frame: in training, the mean and variance over the tokens of that frame
    in the batch (running statistics of the frames seen are updated); in eval, the running ones.
    With all frames kept this is exactly ``bn`` applied to (B*J, T, C).
    """
    b, j, k, c = x.shape
    idx = pos.reshape(-1)
    if bn.training:
        xf, frames = x.float(), bn.num_features

        def per_frame(values: torch.Tensor) -> torch.Tensor:  # (B, J, K, C) summed into (frames,)
            return xf.new_zeros(frames).index_add_(0, idx, values.sum(dim=(1, 3)).reshape(-1))

        count = torch.bincount(idx, minlength=frames).float() * (j * c)  # values per frame
        safe = count.clamp_min(1.0)
        mean = per_frame(xf) / safe
        centred = xf - mean[pos].reshape(b, 1, k, 1)
        sq = per_frame(centred.pow(2))
        var = sq / safe  # biased, for normalising, as BatchNorm does
        with torch.no_grad():
            seen = count > 0
            m = bn.momentum if bn.momentum is not None else 0.1
            unbiased = sq / (count - 1).clamp_min(1.0)
            rm, rv = bn.running_mean, bn.running_var
            if rm is not None and rv is not None:  # frames no sample kept keep their statistics
                rm.copy_(torch.where(seen, (1 - m) * rm + m * mean, rm))
                rv.copy_(torch.where(seen, (1 - m) * rv + m * unbiased, rv))
            if bn.num_batches_tracked is not None:
                bn.num_batches_tracked += 1
        y = centred * torch.rsqrt(var[pos] + bn.eps).reshape(b, 1, k, 1)
    else:
        assert bn.running_mean is not None and bn.running_var is not None
        mean, var = bn.running_mean[pos], bn.running_var[pos]
        y = (x - mean.reshape(b, 1, k, 1)) * torch.rsqrt(var + bn.eps).reshape(b, 1, k, 1)
    if bn.affine:
        y = y * bn.weight[pos].reshape(b, 1, k, 1) + bn.bias[pos].reshape(b, 1, k, 1)
    return y.to(x.dtype)


class GraphMixer(nn.Module):
    """GCN layer relu(x + BN(A V(x) + U(x))) over the skeleton (spatial) or a kNN graph of frames (temporal).

    Spatial: A is the fixed skeleton graph. Temporal: A links every frame of a joint to the
    ``neighbours`` frames whose features are most similar (dot product), rebuilt every forward and
    for whatever number of tokens arrives (k is capped at the token count). BatchNorm runs over the
    nodes: 17 joints, or every frame position of the full sequence.
    """

    adj: torch.Tensor

    def __init__(self, dim: int, *, temporal: bool, frames: int, joints: int, neighbours: int):
        super().__init__()
        self.temporal, self.neighbours = temporal, neighbours
        self.U = nn.Linear(dim, dim)  # the node itself
        self.V = nn.Linear(dim, dim)  # what its neighbours send
        self.batch_norm = nn.BatchNorm1d(frames if temporal else joints)
        for lin in (self.U, self.V):  # He-normal, as released
            nn.init.normal_(lin.weight, std=(2.0 / dim) ** 0.5)
        if not temporal:
            if joints != len(SKELETON):
                raise ValueError(f"the spatial graph is the 17-joint Human3.6M skeleton, got joints={joints}")
            adj = torch.zeros(joints, joints)
            for i, row in enumerate(SKELETON):
                adj[i, list(row)] = 1.0
            # Not persistent: a constant of the architecture, rebuilt on construction.
            self.register_buffer("adj", normalise_adjacency(adj), persistent=False)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        b, t, j, c = x.shape
        if not self.temporal:
            x = x.reshape(b * t, j, c)  # (B*T, J, C)
            adj = self.adj.to(x.dtype).expand(b * t, j, j)  # batched, so FLOP counters see every sample
            y = self.batch_norm(adj @ self.V(x) + self.U(x))
            return F.relu(x + y).reshape(b, t, j, c)
        x = x.transpose(1, 2).reshape(b * j, t, c)  # (B*J, T, C)
        similarity = x @ x.transpose(1, 2)  # (B*J, T, T)
        k = min(self.neighbours, t)
        threshold = similarity.topk(k, dim=-1).values[..., -1:]
        adj = normalise_adjacency((similarity >= threshold).to(x.dtype))
        y = adj @ self.V(x) + self.U(x)
        if t == self.batch_norm.num_features:  # every frame present: the plain module (thop sees it)
            y = self.batch_norm(y)
        else:
            if pos is None:
                raise ValueError(f"temporal GCN got {t} tokens of {self.batch_norm.num_features} without positions")
            y = frame_batch_norm(self.batch_norm, y.reshape(b, j, t, c), pos).reshape(b * j, t, c)
        return F.relu(x + y).reshape(b, j, t, c).transpose(1, 2)


# --------------------------------------------------------------------------- blocks


class MetaBlock(nn.Module):
    """MetaFormer block with layer scale: x + s1 * mixer(norm(x)), then x + s2 * mlp(norm(x))."""

    def __init__(self, dim: int, mixer: nn.Module, cfg: MotionAGFormerConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = mixer
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))
        self.drop_path = DropPath(cfg.drop_path)
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), cfg.layer_scale))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), cfg.layer_scale))

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1 * self.mixer(self.norm1(x), pos))
        return x + self.drop_path(self.layer_scale_2 * self.mlp(self.norm2(x)))


class AGLayer(nn.Module):
    """One MotionAGFormer layer: attention stream and graph stream on the same input, adaptively fused."""

    def __init__(self, cfg: MotionAGFormerConfig, frames: int):
        super().__init__()
        c = cfg.dim
        graph = {"frames": frames, "joints": cfg.joints, "neighbours": cfg.neighbours}
        self.att_spatial = MetaBlock(c, AxisAttention(c, cfg.heads, cfg.qkv_bias, temporal=False), cfg)
        self.att_temporal = MetaBlock(c, AxisAttention(c, cfg.heads, cfg.qkv_bias, temporal=True), cfg)
        self.graph_spatial = MetaBlock(c, GraphMixer(c, temporal=False, **graph), cfg)
        self.graph_temporal = MetaBlock(c, GraphMixer(c, temporal=True, **graph), cfg)
        # Per-token weights of the two streams; zero weights and equal biases start at an even mix.
        self.fusion = nn.Linear(2 * c, 2)
        nn.init.zeros_(self.fusion.weight)
        nn.init.constant_(self.fusion.bias, 0.5)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x_attn = self.att_temporal(self.att_spatial(x), pos)
        x_graph = self.graph_temporal(self.graph_spatial(x), pos)
        alpha = self.fusion(torch.cat((x_attn, x_graph), dim=-1)).softmax(dim=-1)  # (B, T, J, 2)
        return x_attn * alpha[..., 0:1] + x_graph * alpha[..., 1:2]

    @property
    def temporal_attention(self) -> AxisAttention:
        """The temporal self-attention, whose received attention the tpa pruner reads."""
        return cast(AxisAttention, self.att_temporal.mixer)


# --------------------------------------------------------------------------- model


class MotionAGFormer(nn.Module):
    pipeline = "seq2seq"

    def __init__(
        self,
        cfg: MotionAGFormerConfig,
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
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.joints, c))
        init_joint_embedding(self.pos_embed, cfg.joint_pos_std)
        self.tokens = TokenHourglass(
            frames=frames, depth=cfg.depth, dim=c, schedule=schedule, pruner=pruner,
            recoverer=recoverer, embed_kept=embed_kept, heads=cfg.heads, qkv_bias=cfg.qkv_bias,
        )
        norm_frames = self.tokens.profile if cfg.hot_slot_norm else [frames] * cfg.depth
        self.blocks = nn.ModuleList(AGLayer(cfg, n) for n in norm_frames)
        self.norm = nn.LayerNorm(c)
        # Named like the release so its checkpoints load with only ``layers.`` renamed to ``blocks.``.
        self.rep_logit = nn.Sequential(OrderedDict(fc=nn.Linear(c, cfg.dim_rep), act=nn.Tanh()))
        self.head = nn.Linear(cfg.dim_rep, 3)
        for i, blk in enumerate(self.layers):
            blk.temporal_attention.track_received = self.tokens.wants_attention(i)

    @property
    def token_profile(self) -> list[int]:
        return self.tokens.profile

    @property
    def layers(self) -> list[AGLayer]:
        """``self.blocks`` as the layers they are (the ModuleList is untyped)."""
        return cast("list[AGLayer]", list(self.blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, j, _ = x.shape  # (B, T, J, C_in)
        x = self.joints_embed(x) + self.pos_embed  # (B, T, J, C)
        pos = self.tokens.positions(x)
        received = None
        for i, blk in enumerate(self.layers):
            x, pos = self.tokens.prune(i, x, pos, received)
            x = blk(x, pos)
            received = blk.temporal_attention.received
            if received is not None:
                received = received.reshape(b, j, -1).mean(dim=1)  # attention received per frame (B, K)
        x = self.tokens.recover(self.norm(x), pos)  # (B, T, J, C); HoT recovers after the final norm
        return self.head(self.rep_logit(x))



@register(
    "motionagformer",
    pipeline="seq2seq",
    in_channels=3,
    frames=243,
    # HoT (CVPR 2024): keep 81 of 243 before layer 7, TPC + TRA, kept tokens get a learnable embedding.
    single=VariantSpec(schedule=((7, 1 / 3),), pruner="tpc", recoverer="tra", embed_kept=True),
    # Pyramid 243 -> 81 -> 27 before layers 4 and 10 (MixSTE's pyramid stretched to 16 layers):
    # -58.0 % paper-protocol FLOPs at T=243 (96.60 -> 40.56 GFLOPs, thop); the layers alone give
    # 1 - (4 + 6/3 + 6/9) / 16 = -58.3 %, the full-length heads after recovery the rest.
    hierarchical=VariantSpec(schedule=((4, 1 / 3), (10, 1 / 9)), pruner="tps", recoverer="tri"),
    # configs/h36m/MotionAGFormer-{xsmall,small,base,large}.yaml: 8 heads, 2 neighbours, MLP ratio 4,
    # dim_rep 512 in all four; the releases run XS at T=27, S at T=81, B and L at T=243.
    sizes={
        "base": {},
        "xsmall": {"dim": 64, "depth": 12},
        "small": {"dim": 64, "depth": 26},
        "large": {"depth": 26},
        "tiny": {"dim": 32, "heads": 4, "mlp_ratio": 2.0, "dim_rep": 64, "joint_pos_std": 1.0},  # joint_pos_std: blocks.init_joint_embedding
    },
    default_size="base",
    source="MotionAGFormer, Mehraban et al., WACV 2024 (github.com/TaatiTeam/MotionAGFormer)",
)
def motionagformer(frames: int = 243, **kw) -> MotionAGFormer:
    """MotionAGFormer-B seq2seq lifter: 16 attention+graph layers, dim 128, 8 heads, MLP ratio 4."""
    token_args = pop_token_args(kw)
    return MotionAGFormer(MotionAGFormerConfig(**kw), frames, **token_args)
