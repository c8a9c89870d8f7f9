"""Transformer pieces shared by the backbones.

Attention goes through ``torch.nn.functional.scaled_dot_product_attention`` so every backend's
fused kernel is used, and the FLOP counters see one well-defined op. Module names (``qkv``,
``proj``, ``fc1``, ``fc2``, ``norm1``...) follow the common ViT layout of the official releases.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def init_joint_embedding(embedding: torch.Tensor, std: float) -> None:
    """Set a learned per-joint embedding: zeros for ``std`` 0, else a normal truncated at +-2.

    The released models start it at std 0.02 (or 0) next to token features of about unit size,
    which is fine for hundreds of epochs. The ``tiny`` sizes start it at std 1 (``joint_pos_std``)
    so a model trained for minutes tells its joints apart early: a joint-token transformer is
    otherwise blind to which joint a token is, beyond its 2D coordinates.
    """
    with torch.no_grad():
        if std > 0:
            nn.init.trunc_normal_(embedding, std=std)  # torch's (and timm's) default bounds, +-2
        else:
            embedding.zero_()


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample while training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int | None = None, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out or dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(1, 2)  # (B, N, C) -> (B, H, N, C/H)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)  # (B, H, N, D) -> (B, N, H*D)


class Attention(nn.Module):
    """Multi-head self-attention over dim 1 of (B, N, C).

    Set ``track_received = True`` to also store ``received`` (B, N): the attention each token
    receives, averaged over heads and summed over queries. The attention-based pruner (tpa) reads
    it; computing it needs the explicit softmax, so it is off unless a pruner asks.
    """

    def __init__(self, dim: int, heads: int = 8, qkv_bias: bool = False, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.track_received = False
        self.received: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, N, D)
        if self.track_received:
            attn = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)
            self.received = attn.mean(dim=1).sum(dim=1)  # (B, N)
            out = F.dropout(attn, self.attn_drop, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(_merge(out)))


class CrossAttention(nn.Module):
    """Multi-head attention of queries (B, Nq, C) over keys/values (B, Nk, C)."""

    def __init__(self, dim: int, heads: int = 8, qkv_bias: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.linear_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.linear_k = nn.Linear(dim, dim, bias=qkv_bias)
        self.linear_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = _heads(self.linear_q(query), self.heads)
        k = _heads(self.linear_k(context), self.heads)
        v = _heads(self.linear_v(context), self.heads)
        return self.proj(_merge(F.scaled_dot_product_attention(q, k, v)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    attn: Attention

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_hidden: int,
        qkv_bias: bool = False,
        drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, heads, qkv_bias=qkv_bias, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_hidden, drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
