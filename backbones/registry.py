"""The backbone registry: one dict and one decorator (timm's idea, smaller).

A backbone is a plain constructor function ``build(frames=..., schedule=..., pruner=...,
recoverer=..., **size_and_overrides) -> nn.Module``. Registering it states the facts the harness
needs without building a model: pipeline, input channels, canonical length, named sizes, and the
default schedule of each pruned variant. :func:`create` gives the model it builds what the
registration states (``pipeline``, ``frames``, ``in_channels``, and ``token_profile`` from its
``tokens`` hourglass) where the model does not define them. Users register their own backbone the
same way and it runs in every bench command unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch.nn as nn

from .tokens import Stage, TokenHourglass

VARIANTS = ("rectangle", "single", "hierarchical")
PIPELINES = ("seq2seq", "seq2frame")


@dataclass(frozen=True)
class VariantSpec:
    """Defaults of one pruned variant. An empty schedule is the rectangle."""

    schedule: tuple[Stage, ...] = ()  # (block, keep) or (block, keep, pruner) stages
    pruner: str | None = None  # for the stages that name none
    recoverer: str | None = None
    # HoT adds a learnable position embedding to the kept tokens; H2OT's tps+tri has none.
    embed_kept: bool = False


TOKEN_ARGS = tuple(f.name for f in fields(VariantSpec))  # what create() passes a factory for the variant


def pop_token_args(kw: dict[str, Any]) -> dict[str, Any]:
    """Take the variant's arguments (:data:`TOKEN_ARGS`) out of a factory's keyword arguments.

    They go to the backbone's ``TokenHourglass``; what stays in ``kw`` configures the backbone
    itself (its size and overrides).
    """
    return {k: kw.pop(k) for k in TOKEN_ARGS if k in kw}


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    build: Callable[..., nn.Module]
    pipeline: str
    in_channels: int
    frames: int  # canonical sequence length
    variants: Mapping[str, VariantSpec]
    sizes: Mapping[str, Mapping[str, Any]]  # named size -> constructor keyword arguments
    default_size: str
    doc: str = ""
    source: str = ""  # the official release this file follows
    valid_frames: Callable[[int], str | None] = field(default=lambda t: None)  # -> reason, or None if fine


_REGISTRY: dict[str, BackboneSpec] = {}


def at_least_two_frames(t: int) -> str | None:
    """The default frame check: a temporal model needs a sequence (T >= 2)."""
    return None if t >= 2 else "needs at least 2 frames"


def register(
    name: str,
    *,
    pipeline: str,
    in_channels: int,
    frames: int,
    single: VariantSpec,
    hierarchical: VariantSpec,
    sizes: Mapping[str, Mapping[str, Any]],
    default_size: str,
    source: str = "",
    valid_frames: Callable[[int], str | None] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a backbone constructor under ``name`` (a duplicate name is an error).

    ``sizes`` maps a size name to constructor keyword arguments; every backbone should offer a
    ``tiny`` size so tests and the smoke preset stay fast. ``valid_frames(T)`` returns a reason
    when the backbone cannot take T frames (default: T >= 2).
    """
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}")
    if default_size not in sizes:
        raise ValueError(f"default_size {default_size!r} is not one of the sizes {sorted(sizes)}")

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = BackboneSpec(
            name=name,
            build=fn,
            pipeline=pipeline,
            in_channels=in_channels,
            frames=frames,
            variants={"rectangle": VariantSpec(), "single": single, "hierarchical": hierarchical},
            sizes=dict(sizes),
            default_size=default_size,
            doc=(fn.__doc__ or "").strip(),
            source=source,
            valid_frames=valid_frames or at_least_two_frames,
        )
        return fn

    return decorator


def names() -> list[str]:
    """Sorted names of the registered backbones."""
    return sorted(_REGISTRY)


def spec(name: str) -> BackboneSpec:
    """The registration of ``name``; unknown names raise ValueError listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(names())}") from None


def unregister(name: str) -> None:
    """Remove a registration (for tests and notebooks that register throw-away backbones)."""
    _REGISTRY.pop(name, None)


def create(
    name: str,
    variant: str = "rectangle",
    frames: int | None = None,
    size: str | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build ``name`` in ``variant`` at ``frames`` (default: canonical) and ``size``.

    ``overrides`` replace the size's arguments and the variant's defaults (``schedule``,
    ``pruner``, ``recoverer``, ``embed_kept``, ``dim``, ``depth``...). A schedule given for the
    rectangle, or with a number of stages that does not fit the variant, is an error: the variant
    names the shape of the schedule (none, one stage, several stages).
    """
    s = spec(name)
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    size = size or s.default_size
    if size not in s.sizes:
        raise ValueError(f"unknown size {size!r} for {name}; choose from {', '.join(s.sizes)}")
    frames = s.frames if frames is None else frames
    if not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be a positive integer, got {frames!r}")
    reason = s.valid_frames(frames)
    if reason:
        raise ValueError(f"{name} cannot take {frames} frames: {reason}")

    v = s.variants[variant]
    kwargs: dict[str, Any] = dict(s.sizes[size])
    kwargs.update({k: getattr(v, k) for k in TOKEN_ARGS})
    kwargs.update(overrides)
    if s.pipeline == "seq2frame":
        kwargs["recoverer"] = None
    schedule = tuple(kwargs["schedule"] or ())
    kwargs["schedule"] = schedule
    n = len(schedule)
    expected = {"rectangle": n == 0, "single": n == 1, "hierarchical": n >= 2}[variant]
    if not expected:
        # A block beyond the depth is the first thing wrong with such a schedule (`--variant
        # hierarchical --schedule 12:3` on 8 blocks): only the model knows its depth, so let it say so.
        # (A rectangle takes no schedule at all, whatever the schedule says.)
        if n and variant != "rectangle":
            s.build(frames=frames, **kwargs)
        raise ValueError(
            f"variant {variant!r} takes {'no schedule' if variant == 'rectangle' else 'one stage' if variant == 'single' else 'two or more stages'}, "  # noqa: E501
            f"got {n} stage(s)"
        )
    model = s.build(frames=frames, **kwargs)
    # What the registration states, the model need not repeat (the harness reads it off the model).
    for attr, value in (("pipeline", s.pipeline), ("frames", frames), ("in_channels", s.in_channels)):
        if getattr(model, attr, None) is None:
            setattr(model, attr, value)
    tokens = getattr(model, "tokens", None)
    if not hasattr(model, "token_profile") and isinstance(tokens, TokenHourglass):
        model.token_profile = tokens.profile  # type: ignore[assignment]
    model.backbone = name  # type: ignore[assignment]
    model.variant = variant  # type: ignore[assignment]
    model.size = size  # type: ignore[assignment]
    return model
