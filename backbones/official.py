"""Official checkpoints in and out: the released weights of every backbone, loaded by name.

    model = backbones.load_official("mixste", "hot_mixste.pth")          # HoT-MixSTE, inferred
    model = backbones.load_official("mhformer", sd, variant="single")    # TPC-MHFormer
    model = backbones.load_official("motionagformer", ckpt, source="original")
    sd = backbones.official_state_dict(model)                            # the release's names back

Every key of a release maps to one parameter by *name*, never by position, and what the tensors
tell (frames, width, depth, the kept-token embedding, TRA...) is inferred: each release's names,
order and inference are :mod:`backbones.releases`. What the tensors cannot tell is an argument:
``variant`` (HoT's TPC-MixSTE and TPC-MHFormer have exactly the rectangle's parameters) and
``source`` where conventions differ with equal shapes (MotionAGFormer-B: HoT's copy runs 4 heads
and 4 temporal neighbours, the original release 8 and 2). Loading is strict: any key without a
match is an error listing the missing and the unexpected keys with their shapes.

Pruned outputs and HoT's code: HoT's DPC-kNN adds uniform noise of 1e-6 to the densities to break
ties, so the official code keeps different tokens from run to run when two frames are equally
dense (on random inputs, about as often as vptbench differs from it); vptbench breaks ties by
position, deterministically (:func:`backbones.tokens.dpc_knn_scores`). With the same kept tokens
the outputs agree to float precision.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Iterator, Mapping
from dataclasses import fields
from typing import Any

import torch
import torch.nn as nn

from .registry import create, spec
from .releases import CONFIGS, CONVENTIONS, INFER, NAME_MAPS, TPC_MIXSTE, CheckpointMismatch, Inferred, rank

SOURCES = ("hot", "original")
# Where releases keep the state_dict inside a checkpoint dict (MixSTE and MotionBERT: model_pos;
# MotionAGFormer: model); HoT and MHFormer save the bare state_dict.
RELEASE_KEYS = ("model_pos", "model", "state_dict", "model_state_dict", "net")
LISTED = 20  # keys named per kind in a mismatch error; the rest are counted


# --------------------------------------------------------------------------- reading


def _numpy_globals() -> list[Any]:
    """What a checkpoint holding numpy arrays (MixSTE's saved RNG state) needs to unpickle safely."""
    import numpy as np

    found: list[Any] = [np.ndarray, np.dtype, type(np.dtype("uint32")), type(np.dtype("float64"))]
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            found.append(__import__(mod, fromlist=["_reconstruct"])._reconstruct)
            found.append(__import__(mod, fromlist=["scalar"]).scalar)
        except (ImportError, AttributeError):
            continue
    return found


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """``torch.load`` a file with ``weights_only`` (no code runs), allowing numpy arrays.

    The releases save tensors, numbers and, for MixSTE, numpy's RNG state; anything else (a
    pickled class) is refused with a ValueError rather than executed.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        _unreadable(path, e)
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        _unreadable(path, e)
        what = next((line.strip() for line in str(e).splitlines() if "GLOBAL" in line), "a pickled object")
        raise ValueError(
            f"{path}: holds objects other than tensors and numbers ({what}); if you trust the file, "
            "torch.load(path, weights_only=False) it yourself and pass the loaded object"
        ) from None


def _unreadable(path: str | os.PathLike[str], e: Exception) -> None:
    """ValueError unless ``e`` is torch refusing a global (a class) that ``weights_only`` does not allow."""
    if "GLOBAL" not in str(e):
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None


def unwrap_state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The state_dict inside a release's checkpoint: bare, or under a release key; no ``module.``."""
    obj = checkpoint
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        for key in RELEASE_KEYS:
            if isinstance(obj.get(key), Mapping) and _is_state_dict(obj[key]):
                obj = obj[key]
                break
        else:
            keys = ", ".join(map(str, list(obj)[:10]))
            raise CheckpointMismatch(
                f"no state_dict found: not a mapping of tensors, and none under {', '.join(RELEASE_KEYS)} "
                f"(top-level keys: {keys})"
            )
    if not isinstance(obj, Mapping):
        raise CheckpointMismatch(f"expected a state_dict or a checkpoint dict, got a {type(obj).__name__}")
    sd = {str(k): v for k, v in obj.items()}
    if sd and all(k.startswith("module.") for k in sd):  # saved from nn.DataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _is_state_dict(obj: Mapping[Any, Any]) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def detect_backbone(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Which backbone a release's state_dict belongs to, from names only one of them uses."""
    keys = [k.removeprefix("module.") for k in state_dict]
    marks = {
        "mixste": "Spatial_patch_to_embedding.",
        "motionbert": "blocks_st.",
        "mhformer": "Transformer_hypothesis.",
        "motionagformer": "layers.",
    }
    found = [name for name, mark in marks.items() if any(k.startswith(mark) for k in keys)]
    return found[0] if len(found) == 1 else None


# --------------------------------------------------------------------------- the model a release describes


def _size_name(backbone: str, config: Mapping[str, Any]) -> str:
    """The registered size whose configuration the inferred one equals (else the default size)."""
    s = spec(backbone)
    defaults = {f.name: f.default for f in fields(CONFIGS[backbone])}
    for name, kw in s.sizes.items():
        full = {**defaults, **kw}
        if all(full.get(k) == v for k, v in config.items() if k != "hot_slot_norm"):
            return name
    return s.default_size


def _resolve_source(backbone: str, info: Inferred, source: str | None) -> str | None:
    if source is not None and source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose from {', '.join(SOURCES)}")
    if source == "original" and info.source == "hot":
        raise CheckpointMismatch(
            f"source='original', but the checkpoint holds HoT's token pruning/recovering parameters ({info.release})"
        )
    source = source or info.source
    if source is None and backbone == "motionagformer" and (info.config["dim"], info.config["depth"]) == (128, 16):
        raise ValueError(
            "motionagformer: the tensors of MotionAGFormer-B cannot tell HoT's copy (4 heads, 4 temporal neighbours) "
            "from the original release (8 heads, 2 neighbours); pass source='hot' or source='original'"
        )
    if source is None and backbone == "motionagformer":
        source = "original"  # XS, S and L exist only in the original release
    return source


def _variant_args(backbone: str, info: Inferred, variant: str | None) -> tuple[str, dict[str, Any]]:
    """The variant and its create() arguments, from the stored hourglass parameters and ``variant``."""
    has_tokens = info.embed_kept or info.tra or bool(info.kept)
    if not has_tokens:
        variant = variant or "rectangle"
        if variant == "rectangle":
            return variant, {}
        v = spec(backbone).variants[variant]
        # A parameter-free release of a pruned variant: no kept-token embedding, no TRA.
        recoverer = "tri" if v.recoverer == "tra" else v.recoverer
        schedule = TPC_MIXSTE if (backbone, variant) == ("mixste", "single") else v.schedule
        return variant, {"schedule": schedule, "pruner": v.pruner, "recoverer": recoverer, "embed_kept": False}
    if variant not in (None, "single"):
        raise CheckpointMismatch(
            f"variant {variant!r} does not fit {info.release}: it holds one stage of HoT's token pruning "
            f"({', '.join(k for k, on in (('pos_embed_token', info.embed_kept), ('x_token', info.tra)) if on)}), "
            "the single variant"
        )
    v = spec(backbone).variants["single"]
    return "single", {"schedule": info.kept or v.schedule, "pruner": v.pruner,
                      "recoverer": "tra" if info.tra else "tri", "embed_kept": info.embed_kept}  # fmt: skip


def _mapping(backbone: str, model: nn.Module) -> dict[str, tuple[str, slice | None]]:
    """official name -> (our key, channel slice or None) for every tensor of ``model``'s state_dict."""
    name_of = NAME_MAPS[backbone]
    out: dict[str, tuple[str, slice | None]] = {}
    for key in model.state_dict():
        names = name_of(model, key)
        parts: list[tuple[str, slice | None]] = [(names, None)] if isinstance(names, str) else list(names)
        for name, sl in parts:
            if name in out:
                raise ValueError(
                    f"{backbone}: both {out[name][0]!r} and {key!r} map to {name!r}; the release has only one "
                    "(e.g. a kept-token embedding per stage: HoT prunes once)"
                )
            out[name] = (key, sl)
    return out


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Parameters registered in the block live on the meta device: shapes only, no memory, no init.

    (accelerate's ``init_empty_weights``.) Buffers and other tensors stay real, so constructors
    that compute with tensors still work; the checkpoint's tensors are then assigned.
    """
    register = nn.Module.register_parameter

    def to_meta(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(self, name, param)

    nn.Module.register_parameter = to_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def _fmt(sd: Mapping[str, torch.Tensor], names: list[str]) -> str:
    shown = ", ".join(f"{n} {list(sd[n].shape)}" for n in names[:LISTED])
    return shown + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")


def _check(backbone: str, release: str, sd: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [k for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {_fmt(expected, missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {_fmt(sd, unexpected)}")
    if wrong:
        shown = ", ".join(f"{k} {list(sd[k].shape)} (expected {list(expected[k].shape)})" for k in wrong[:LISTED])
        parts.append(f"{len(wrong)} with another shape: {shown}")
    raise CheckpointMismatch(f"checkpoint does not match {backbone} as {release}: " + "; ".join(parts))


# --------------------------------------------------------------------------- public API


def load_official(
    backbone: str,
    checkpoint: Any,
    *,
    variant: str | None = None,
    source: str | None = None,
    frames: int | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build ``backbone`` as the release ``checkpoint`` describes and load its weights strictly.

    ``checkpoint``: a path, a loaded checkpoint dict (state_dict under ``model_pos``, ``model``,
    ``state_dict``...) or a bare state_dict, with or without DataParallel's ``module.``.
    ``variant``: where the tensors cannot tell (TPC-MixSTE, TPC-MHFormer: ``"single"``).
    ``source``: ``"hot"`` (NationalGAILab/HoT's copies) or ``"original"`` (the backbone's own
    release), needed only for MotionAGFormer-B. ``frames`` must agree with the checkpoint's.
    ``overrides`` go to :func:`backbones.create` (e.g. ``schedule``, ``pruner``). Raises
    :class:`CheckpointMismatch` (a ValueError) listing missing and unexpected keys with shapes.
    """
    if backbone not in NAME_MAPS:
        spec(backbone)  # unknown names: the registry's error
        raise ValueError(f"no official release is known for {backbone!r}; choose from {', '.join(NAME_MAPS)}")
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = read_checkpoint(checkpoint)
    sd = unwrap_state_dict(checkpoint)
    found = detect_backbone(sd)
    if found is not None and found != backbone:
        raise CheckpointMismatch(f"the checkpoint's keys are {found}'s, not {backbone}'s")
    info = INFER[backbone](sd)
    if frames is not None and frames != info.frames:
        raise CheckpointMismatch(f"frames={frames}, but the checkpoint's temporal parameters hold {info.frames} frames")
    source = _resolve_source(backbone, info, source)
    variant, token_args = _variant_args(backbone, info, variant)
    kwargs: dict[str, Any] = {**info.config, **CONVENTIONS.get((backbone, source or ""), {}), **token_args}
    if backbone == "motionagformer" and not info.config["hot_slot_norm"]:
        kwargs.pop("hot_slot_norm")
    size = overrides.pop("size", None) or _size_name(backbone, info.config)
    kwargs.update(overrides)
    with parameters_on_meta():  # every parameter is replaced by the checkpoint's: skip their init
        model = create(backbone, variant=variant, frames=info.frames, size=size, **kwargs)
    mapping = _mapping(backbone, model)
    own = model.state_dict()
    expected = {name: own[key][..., sl] if sl is not None else own[key] for name, (key, sl) in mapping.items()}
    _check(backbone, info.release, sd, expected)
    parts: dict[str, list[torch.Tensor]] = {}
    for name, (key, _) in mapping.items():  # in channel order where several names make one tensor
        parts.setdefault(key, []).append(sd[name])
    state = {k: v[0] if len(v) == 1 else torch.cat(v, dim=-1) for k, v in parts.items()}
    # Copies in the model's dtypes: the model never shares memory with the caller's checkpoint.
    model.load_state_dict({k: v.detach().to(own[k].dtype, copy=True) for k, v in state.items()}, strict=True, assign=True)
    model.official = {"release": info.release, "source": source}  # type: ignore[assignment]
    return model


def official_state_dict(model: nn.Module, source: str | None = None) -> dict[str, torch.Tensor]:
    """``model``'s weights under the release's names and shapes: the inverse of :func:`load_official`.

    ``source="original"`` refuses a model with HoT's pruning parameters (the original releases
    have none). Tensors are the model's own (split ones copied), so load -> export is bit-exact.
    """
    if source is not None and source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose from {', '.join(SOURCES)}")
    backbone = getattr(model, "backbone", None)
    if backbone not in NAME_MAPS:
        raise ValueError(f"no official layout for a model of backbone {backbone!r}; choose from {', '.join(NAME_MAPS)}")
    own = model.state_dict()
    mapping = _mapping(backbone, model)
    if source == "original":
        hot = [n for n in mapping if n in ("pos_embed_token", "x_token") or n.startswith("cross_attention.")]
        if hot or getattr(getattr(model, "cfg", None), "hot_slot_norm", False):
            raise ValueError(f"source='original': the original {backbone} release has no token pruning parameters")
    names = sorted(mapping, key=lambda n: rank(backbone, source, n))
    out: dict[str, torch.Tensor] = {}
    for name in names:
        key, sl = mapping[name]
        out[name] = own[key][..., sl].clone() if sl is not None else own[key]
    return out


def release_container(backbone: str, source: str, state_dict: dict[str, torch.Tensor]) -> Any:
    """The object the release saves: HoT and MHFormer a bare state_dict; MixSTE and MotionBERT
    ``{"model_pos": ...}``, MotionAGFormer ``{"model": ...}``, both from DataParallel (``module.``)."""
    key = {"mixste": "model_pos", "motionbert": "model_pos", "motionagformer": "model"}.get(backbone)
    if source == "hot" or key is None:
        return state_dict
    return {key: {f"module.{k}": v for k, v in state_dict.items()}}
