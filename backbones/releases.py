"""The official releases' layouts: their names for our parameters, their order, what their tensors tell.

Every key of a release maps to one parameter here by *name*, never by position (:data:`NAME_MAPS`,
ours -> official). The trap this avoids: official MixSTE registers all spatial blocks, then all
temporal blocks (``STEblocks.*`` then ``TTEblocks.*``), while ``mixste`` interleaves them
(``blocks.i.spatial``, ``blocks.i.temporal``); the shapes are equal, so a load by order succeeds
and builds the wrong model. :data:`ORDER` is the releases' own order, which exported dicts follow.

What the tensors tell is inferred (:data:`INFER`, an :class:`Inferred` per backbone): frames
(temporal position embedding or MHFormer's T-wide norms), width, depth, MLP width, MotionBERT lite
vs base, MotionAGFormer XS/S/B/L, the kept-token embedding (HoT's ``pos_embed_token``: single
variant, its keep count) and TRA (``x_token``, ``cross_attention``); what each source's copy runs
with that its tensors do not show is :data:`CONVENTIONS`. Loading and export by these tables:
:mod:`backbones.official`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from .mhformer import SHORT_CLIP, MHFormerConfig
from .mixste import MixSTEConfig
from .motionagformer import MotionAGFormerConfig
from .motionbert import DSTformerConfig


class CheckpointMismatch(ValueError):
    """The checkpoint's keys or shapes do not match the model its tensors describe."""


# --------------------------------------------------------------------------- name maps (ours -> official)
# Each returns the official name of one of our state_dict keys, or a list of (name, channel slice)
# when one of our tensors is several of theirs side by side (MHFormer's per-hypothesis embeddings).

NameMap = Callable[[nn.Module, str], "str | list[tuple[str, slice]]"]


def _tokens(key: str) -> str | None:
    """HoT's names for the hourglass parameters, common to its four models."""
    if re.fullmatch(r"tokens\.embeds\.\d+", key):
        return "pos_embed_token"
    if key == "tokens.tra.query":
        return "x_token"
    if key.startswith("tokens.tra.attn."):
        return "cross_attention." + key.removeprefix("tokens.tra.attn.")
    return None


def _mixste_name(model: nn.Module, key: str) -> str:
    if (t := _tokens(key)) is not None:
        return t
    if m := re.fullmatch(r"blocks\.(\d+)\.(spatial|temporal)\.(.+)", key):
        return f"{'STE' if m[2] == 'spatial' else 'TTE'}blocks.{m[1]}.{m[3]}"
    head, _, rest = key.partition(".")
    renamed = {"embed": "Spatial_patch_to_embedding", "spatial_pos": "Spatial_pos_embed",
               "temporal_pos": "Temporal_pos_embed", "spatial_norm": "Spatial_norm",
               "temporal_norm": "Temporal_norm"}  # fmt: skip
    return ".".join(filter(None, (renamed.get(head, head), rest)))


def _motionbert_name(model: nn.Module, key: str) -> str:
    if (t := _tokens(key)) is not None:
        return t
    if m := re.fullmatch(r"blocks\.(\d+)\.(st|ts)\.(spatial|temporal)\.(norm1|attn|norm2|mlp)\.(.+)", key):
        return f"blocks_{m[2]}.{m[1]}.{m[4]}_{m[3][0]}.{m[5]}"  # the release holds both halves in one Block
    if m := re.fullmatch(r"blocks\.(\d+)\.fusion\.(.+)", key):
        return f"ts_attn.{m[1]}.{m[2]}"
    return key


def _mhformer_name(model: nn.Module, key: str) -> str | list[tuple[str, slice]]:
    hyp = "Transformer_hypothesis"
    cfg: Any = model.cfg
    if m := re.fullmatch(r"mhg\.(\d)\.(norm_in|pos_embed|blocks|norm)(.*)", key):
        k = int(m[1]) + 1
        return f"norm_{k}{m[3]}" if m[2] == "norm_in" else f"Transformer_encoder_{k}.{m[2]}{m[3]}"
    if m := re.fullmatch(r"embeds\.(\d)\.(.+)", key):
        return f"embedding_{int(m[1]) + 1}.{m[2]}"
    if key == "pos_embed":
        c = cfg.dim
        return [(f"{hyp}.pos_embed_{h + 1}", slice(h * c, (h + 1) * c)) for h in range(3)]
    if m := re.fullmatch(r"blocks\.(\d+)\.(.+)", key):
        i, rest = int(m[1]), m[2]
        if i < cfg.depth - 1:  # self-hypothesis refinement
            if r := re.fullmatch(r"(norms|attns)\.(\d)\.(.+)", rest):
                return f"{hyp}.SHR_blocks.{i}.{'norm1' if r[1] == 'norms' else 'attn'}_{int(r[2]) + 1}.{r[3]}"
            return f"{hyp}.SHR_blocks.{i}.{rest}"
        # cross-hypothesis interaction: norm3_<h><1 q, 2 k, 3 v> normalise the sources of hypothesis h
        if r := re.fullmatch(r"norm_(q|k|v)\.(\d)\.(.+)", rest):
            return f"{hyp}.CHI_blocks.0.norm3_{int(r[2]) + 1}{'qkv'.index(r[1]) + 1}.{r[3]}"
        if r := re.fullmatch(r"attns\.(\d)\.(.+)", rest):
            return f"{hyp}.CHI_blocks.0.attn_{int(r[1]) + 1}.{r[2]}"
        return f"{hyp}.CHI_blocks.0.{rest}"
    if key.startswith("norm."):
        return f"{hyp}.{key}"
    if key.startswith("head."):
        return "regression." + key.removeprefix("head.")
    return key


def _motionagformer_name(model: nn.Module, key: str) -> str:
    if (t := _tokens(key)) is not None:
        return t
    if key.startswith("blocks."):
        return "layers." + key.removeprefix("blocks.")
    return key


NAME_MAPS: dict[str, NameMap] = {
    "mixste": _mixste_name,
    "motionbert": _motionbert_name,
    "mhformer": _mhformer_name,
    "motionagformer": _motionagformer_name,
}

# Registration order of the releases' top-level parameters and modules (a module's own parameters
# come first in a state_dict): exported dicts follow it, so in particular MixSTE's spatial blocks
# all come before its temporal blocks, as in the official files.
ORDER: dict[str, tuple[str, ...]] = {
    "mixste": ("pos_embed_token", "Spatial_pos_embed", "Temporal_pos_embed", "x_token", "Spatial_patch_to_embedding",
               "STEblocks", "TTEblocks", "cross_attention", "Spatial_norm", "Temporal_norm", "head"),
    "motionbert": ("pos_embed_token", "x_token", "temp_embed", "pos_embed", "joints_embed", "blocks_st", "blocks_ts",
                   "norm", "cross_attention", "pre_logits", "head", "ts_attn"),
    "mhformer": ("norm_", "Transformer_encoder_", "embedding_", "Transformer_hypothesis", "regression"),
    "mhformer/hot": ("embedding_", "Transformer_hypothesis", "regression", "norm_", "Transformer_encoder_"),
    "motionagformer": ("pos_embed_token", "pos_embed", "x_token", "joints_embed", "norm", "layers",
                       "cross_attention", "rep_logit", "head"),
}  # fmt: skip


def rank(backbone: str, source: str | None, name: str) -> int:
    """Where the official key ``name`` comes in its release's registration order (:data:`ORDER`)."""
    head = name.split(".")[0]
    order = ORDER.get(f"{backbone}/{source}", ORDER.get(backbone, ()))
    for i, prefix in enumerate(order):
        if head == prefix or (prefix.endswith("_") and head.startswith(prefix)):
            return i
    return len(order)


# --------------------------------------------------------------------------- what the tensors tell


@dataclass(frozen=True)
class Inferred:
    """What a release's tensors say about the model: create() arguments and the release's name."""

    frames: int
    config: dict[str, Any]  # the backbone's config fields the tensors fix (dim, depth, ...)
    kept: tuple[tuple[int, int], ...] = ()  # (block, keep) of stages whose embedding/norms are stored
    embed_kept: bool = False
    tra: bool = False
    source: str | None = None  # a source the tensors imply (None: either)
    release: str = ""


def _shape(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointMismatch(f"expected key {key!r} is missing (keys start: {', '.join(list(sd)[:6])})")
    return tuple(sd[key].shape)


def _count(sd: Mapping[str, torch.Tensor], pattern: str) -> int:
    found = {m[1] for k in sd if (m := re.match(pattern, k))}
    return len(found)


def _hot_parts(sd: Mapping[str, torch.Tensor]) -> tuple[bool, bool, int | None]:
    embed = sd.get("pos_embed_token")
    return embed is not None, "x_token" in sd, (int(embed.shape[1]) if embed is not None else None)


def _infer_mixste(sd: Mapping[str, torch.Tensor]) -> Inferred:
    dim, cin = _shape(sd, "Spatial_patch_to_embedding.weight")
    embed, tra, keep = _hot_parts(sd)
    cfg = {"dim": dim, "in_channels": cin, "joints": _shape(sd, "Spatial_pos_embed")[1],
           "depth": _count(sd, r"STEblocks\.(\d+)\."), "mlp_hidden": _shape(sd, "STEblocks.0.mlp.fc1.weight")[0],
           "qkv_bias": "STEblocks.0.attn.qkv.bias" in sd}  # fmt: skip
    return Inferred(frames=_shape(sd, "Temporal_pos_embed")[1], config=cfg, embed_kept=embed, tra=tra,
                    kept=((3, keep),) if keep else (), source="hot" if embed or tra else None,
                    release="HoT-MixSTE" if embed or tra else "MixSTE")  # fmt: skip


def _infer_motionbert(sd: Mapping[str, torch.Tensor]) -> Inferred:
    dim, cin = _shape(sd, "joints_embed.weight")
    embed, tra, keep = _hot_parts(sd)
    cfg = {"dim": dim, "in_channels": cin, "joints": _shape(sd, "pos_embed")[1],
           "depth": _count(sd, r"ts_attn\.(\d+)\."), "mlp_hidden": _shape(sd, "blocks_st.0.mlp_s.fc1.weight")[0],
           "dim_rep": _shape(sd, "pre_logits.fc.weight")[0], "qkv_bias": "blocks_st.0.attn_s.qkv.bias" in sd}  # fmt: skip
    name = {256: "MotionBERT-lite", 512: "MotionBERT (base)"}.get(dim, "MotionBERT")
    return Inferred(frames=_shape(sd, "temp_embed")[1], config=cfg, embed_kept=embed, tra=tra,
                    kept=((1, keep),) if keep else (), source="hot" if embed or tra else None,
                    release="HoT-MotionBERT" if embed or tra else name)  # fmt: skip


def _infer_mhformer(sd: Mapping[str, torch.Tensor]) -> Inferred:
    frames = _shape(sd, "norm_1.weight")[0]
    conv = "embedding_1.weight" if frames > SHORT_CLIP else "embedding_1.0.weight"
    dim, coords, _ = _shape(sd, conv)
    joints = _shape(sd, "regression.1.weight")[0] // 3
    cfg = {"dim": dim, "joints": joints, "in_channels": coords // joints,
           "depth": _count(sd, r"Transformer_hypothesis\.SHR_blocks\.(\d+)\.") + 1,
           "mlp_hidden": _shape(sd, "Transformer_hypothesis.CHI_blocks.0.mlp.fc1.weight")[0],
           "mhg_depth": _count(sd, r"Transformer_encoder_1\.blocks\.(\d+)\.")}  # fmt: skip
    return Inferred(frames=frames, config=cfg, release=f"MHFormer-{frames}")


def _infer_motionagformer(sd: Mapping[str, torch.Tensor]) -> Inferred:
    dim, cin = _shape(sd, "joints_embed.weight")
    depth = _count(sd, r"layers\.(\d+)\.")
    norms = [_shape(sd, f"layers.{i}.graph_temporal.mixer.batch_norm.weight")[0] for i in range(depth)]
    frames = norms[0]
    # HoT's layout: a pruned layer's temporal BatchNorm has one channel per kept slot.
    slots = tuple((i, n) for i, n in enumerate(norms) if i and n != norms[i - 1])
    embed, tra, keep = _hot_parts(sd)
    cfg = {"dim": dim, "in_channels": cin, "joints": _shape(sd, "pos_embed")[1], "depth": depth,
           "mlp_ratio": _shape(sd, "layers.0.att_spatial.mlp.fc1.weight")[0] / dim,
           "dim_rep": _shape(sd, "rep_logit.fc.weight")[0], "qkv_bias": "layers.0.att_spatial.mixer.qkv.bias" in sd,
           "hot_slot_norm": bool(slots)}  # fmt: skip
    kept = slots or (((7, keep),) if keep else ())
    hot = embed or tra or bool(slots)
    size = {(64, 12): "XS", (64, 26): "S", (128, 16): "B", (128, 26): "L"}.get((dim, depth), "")
    return Inferred(frames=frames, config=cfg, embed_kept=embed, tra=tra, kept=kept, source="hot" if hot else None,
                    release="HoT-MotionAGFormer" if hot else f"MotionAGFormer-{size}".rstrip("-"))  # fmt: skip


INFER: dict[str, Callable[[Mapping[str, torch.Tensor]], Inferred]] = {
    "mixste": _infer_mixste,
    "motionbert": _infer_motionbert,
    "mhformer": _infer_mhformer,
    "motionagformer": _infer_motionagformer,
}
CONFIGS: dict[str, type] = {
    "mixste": MixSTEConfig,
    "motionbert": DSTformerConfig,
    "mhformer": MHFormerConfig,
    "motionagformer": MotionAGFormerConfig,
}
# What each source's copy of a backbone runs with that its tensors do not show.
CONVENTIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("motionagformer", "hot"): {"heads": 4, "neighbours": 4},
    ("motionagformer", "original"): {"heads": 8, "neighbours": 2},
}
# HoT's TPC-MixSTE: keep 61 tokens from block 7 (its README's command), no added parameters.
TPC_MIXSTE = ((7, 61),)
