"""Official checkpoints in the CLI: ``vptbench convert``, and official files for accuracy and profile.

``vptbench convert CKPT --backbone NAME [--variant V] [--source S] --out FILE`` turns a released
checkpoint into a vptbench checkpoint (the format :func:`save_checkpoint` writes,
plus the model's configuration under ``overrides`` so that it rebuilds exactly: HoT's 4-head
MotionAGFormer, its 81-slot norms...). ``--to-official`` goes the other way: a vptbench checkpoint
(or a release) to the release's own layout and container. ``vptbench accuracy --checkpoint`` and
``vptbench profile --checkpoint`` take either kind of file; the mapping itself is
:mod:`backbones.official`.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

import backbones
from backbones.official import (
    SOURCES,
    detect_backbone,
    read_checkpoint,
    unwrap_state_dict,
)
from backbones.releases import NAME_MAPS
from backbones.tokens import format_schedule

from ..core.case import Case
from ..core.errors import UsageError

CHECKPOINT_PREFIX = "vptbench-accuracy-checkpoint/"
CHECKPOINT_FORMAT = "vptbench-accuracy-checkpoint/2"  # /2: root-relative, per-joint standardiser



# --------------------------------------------------------------------------- vptbench checkpoints (written by `vptbench accuracy`)


def checkpoint_path(run_dir: str | Path, case: Case) -> Path:
    """Where the checkpoint of ``case`` goes under ``run_dir`` (a file-system-safe case id)."""
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "_", case.case_id).strip("_")
    return Path(run_dir) / "checkpoints" / f"{name}.pt"


def save_checkpoint(path: Path, model: nn.Module, case: Case, **info: Any) -> None:
    """state_dict + the case's fields (so the model can be rebuilt) + how it was trained."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": CHECKPOINT_FORMAT, "case": dataclasses.asdict(case),
                "state_dict": model.state_dict(), **info}, path)  # fmt: skip


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint`; UsageError naming a missing key."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--checkpoint {path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a file that is not a checkpoint
        raise UsageError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict):
        raise UsageError(f"{path}: not a vptbench accuracy checkpoint (a {type(ckpt).__name__})")
    for key in ("case", "state_dict"):
        if key not in ckpt:
            raise UsageError(f"{path}: missing key {key!r} (not a vptbench accuracy checkpoint)")
    if ckpt.get("format", CHECKPOINT_FORMAT) != CHECKPOINT_FORMAT:
        raise UsageError(f"{path}: checkpoint format {ckpt['format']!r}, this version reads {CHECKPOINT_FORMAT!r}; "
                         "retrain it with this version")  # fmt: skip
    fields = {f.name for f in dataclasses.fields(Case)}
    case = ckpt["case"]
    if not isinstance(case, dict) or "backbone" not in case or set(case) - fields:
        raise UsageError(f"{path}: key 'case' must hold the Case fields {', '.join(sorted(fields))}")
    return ckpt


def read_file(path: str | Path, flag: str = "--checkpoint") -> Any:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{flag} {path}: no such file")
    try:
        return read_checkpoint(path)
    except ValueError as e:
        raise UsageError(str(e)) from None
    except Exception as e:  # torch raises many types for a file that is not a checkpoint
        raise UsageError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None


def is_vptbench(obj: Any) -> bool:
    """Whether a loaded checkpoint is vptbench's own (it names its format)."""
    return isinstance(obj, dict) and str(obj.get("format", "")).startswith(CHECKPOINT_PREFIX)


def official_model(
    path: str | Path, *, backbone: str | None = None, variant: str | None = None, source: str | None = None,
    loaded: Any = None,
) -> nn.Module:
    """The model of a released checkpoint file; UsageError (one line) for anything that does not fit."""
    obj = read_file(path) if loaded is None else loaded
    if source is not None and source not in SOURCES:
        raise UsageError(f"unknown --source {source!r}; choose from {', '.join(SOURCES)}")
    try:
        sd = unwrap_state_dict(obj)
    except ValueError as e:
        raise UsageError(f"{path}: {e}") from None
    name = backbone or detect_backbone(sd)
    if name is None:
        raise UsageError(f"{path}: cannot tell the backbone from its keys; pass --backbone ({', '.join(NAME_MAPS)})")
    if name not in NAME_MAPS:
        raise UsageError(f"--backbone {name!r} has no official release here; choose from {', '.join(NAME_MAPS)}")
    if variant is not None and variant not in backbones.VARIANTS:
        raise UsageError(f"unknown variant {variant!r}; choose from {', '.join(backbones.VARIANTS)}")
    try:
        return backbones.load_official(name, sd, variant=variant, source=source)
    except ValueError as e:
        raise UsageError(f"{path}: {e}") from None


def model_case(model: nn.Module, **fields: Any) -> Case:
    """The case a loaded model is: backbone, variant, frames, size and its resolved schedule."""
    tokens: Any = model.tokens
    return Case(backbone=model.backbone, variant=model.variant, frames=model.frames, size=model.size,  # type: ignore[arg-type]
                schedule=format_schedule(tokens.stages), pruner=tokens.pruner or "",
                recoverer=tokens.recoverer or "", **fields).resolve()  # fmt: skip


def overrides(model: nn.Module) -> dict[str, Any]:
    """create() arguments beyond the case that rebuild ``model``: its whole config, kept-token embedding."""
    cfg = getattr(model, "cfg", None)
    if cfg is None or not dataclasses.is_dataclass(cfg):
        raise UsageError(f"{type(model).__name__} has no config dataclass to record")
    return {**dataclasses.asdict(cfg), "embed_kept": len(getattr(model.tokens, "embeds", ())) > 0}  # type: ignore[arg-type]


def vptbench_checkpoint(model: nn.Module, **info: Any) -> dict[str, Any]:
    """A vptbench accuracy checkpoint of ``model`` (no standardiser: evaluated on raw inputs)."""

    return {"format": CHECKPOINT_FORMAT, "case": dataclasses.asdict(model_case(model)),
            "state_dict": model.state_dict(), "overrides": overrides(model), **info}  # fmt: skip


def checkpoint_model(ckpt: dict[str, Any], case: Case, path: str | Path) -> nn.Module:
    """The model of a vptbench checkpoint with its weights: ``case`` built, with any stored ``overrides``."""
    stored = ckpt.get("overrides")
    if isinstance(stored, dict):
        c = case.resolve()
        kw: dict[str, Any] = dict(stored)
        if c.variant != "rectangle":
            kw.update(schedule=backbones.parse_schedule(c.schedule), pruner=c.pruner, recoverer=c.recoverer or None)
        try:
            model = backbones.create(c.backbone, variant=c.variant, frames=c.frames, size=c.size, **kw)
        except (TypeError, ValueError) as e:
            raise UsageError(f"{path}: its overrides do not build {c.backbone}: {e}") from None
    else:
        model = case.build()
    load_fitting(model, ckpt.get("state_dict"), path, case)
    return model


def load_fitting(model: nn.Module, state_dict: Any, checkpoint: str | Path, case: Case) -> None:
    """Load ``state_dict`` into ``model``; UsageError listing the missing, unexpected and misshapen keys."""
    if not isinstance(state_dict, dict):
        raise UsageError(f"{checkpoint}: state_dict is not a mapping of parameter names to tensors")
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state_dict and hasattr(state_dict[k], "shape") and tuple(state_dict[k].shape) != tuple(v.shape)]  # fmt: skip
    if missing or unexpected or shapes:

        def few(keys: list[str]) -> str:
            return ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")

        parts = [f"{len(missing)} missing ({few(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected ({few(unexpected)})" if unexpected else "",
                 f"{len(shapes)} of another shape ({few(shapes)})" if shapes else ""]  # fmt: skip
        raise UsageError(f"{checkpoint}: its weights do not fit {case.case_id}: keys "
                         f"{'; '.join(p for p in parts if p)}; was it trained for another backbone or size?")  # fmt: skip
    model.load_state_dict(state_dict)


# --------------------------------------------------------------------------- accuracy and profile


def accuracy_checkpoint(args: argparse.Namespace) -> dict[str, Any]:
    """``vptbench accuracy --checkpoint``: a vptbench checkpoint as is, an official file converted.

    A vptbench checkpoint defines its case; an official one takes at most one ``--backbones``
    (else inferred from its keys), one ``--variants`` and ``--source``.
    """

    obj = read_file(args.checkpoint)
    source = getattr(args, "source", None)
    if is_vptbench(obj) or _malformed_vptbench(obj):
        if args.backbones or args.variants or args.frames or args.size or source:
            raise UsageError("--checkpoint defines the case; drop --backbones/--variants/--frames/--size/--source")
        return load_checkpoint(args.checkpoint)
    if args.frames or args.size:
        raise UsageError("an official --checkpoint fixes frames and size; drop --frames/--size")
    for flag, values in (("--backbones", args.backbones), ("--variants", args.variants)):
        if values and len(values) > 1:
            raise UsageError(f"an official --checkpoint is one model; give {flag} one value, got {','.join(values)}")
    model = official_model(args.checkpoint, backbone=(args.backbones or [None])[0],
                           variant=(args.variants or [None])[0], source=source, loaded=obj)  # fmt: skip
    return vptbench_checkpoint(model, official=provenance(model, args.checkpoint))


def _malformed_vptbench(obj: Any) -> bool:
    """A dict with vptbench's keys but no release state_dict: load_checkpoint names what it lacks."""
    if not isinstance(obj, dict) or not ({"case", "state_dict"} & set(obj)):
        return False
    try:
        unwrap_state_dict(obj)
    except ValueError:
        return True
    return "case" in obj


def accuracy_checkpoint_path(ckpt: dict[str, Any], given: str, run_dir: Path) -> str:
    """Where the accuracy job reads the checkpoint: the given file, or the converted one in ``run_dir``."""
    if "official" not in ckpt:
        return given
    path = run_dir / "checkpoints" / f"official-{Path(given).stem}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return str(path)


def profile_model(args: argparse.Namespace) -> tuple[nn.Module, Case]:
    """``vptbench profile NAME --checkpoint FILE``: the checkpoint's model and its case."""
    given = [f for f, v in (("--frames", args.frames), ("--size", args.size), ("--schedule", args.schedule),
                            ("--pruner", args.pruner), ("--recoverer", args.recoverer)) if v]  # fmt: skip
    if given:
        raise UsageError(f"--checkpoint fixes the model; drop {', '.join(given)}")
    obj = read_file(args.checkpoint)
    fields = {"batch": args.batch, "device": args.device, "dtype": args.dtype}
    if is_vptbench(obj):

        ckpt = load_checkpoint(args.checkpoint)
        case = Case(**(ckpt["case"] | fields)).resolve()
        if case.backbone != args.backbone:
            raise UsageError(f"{args.checkpoint} holds a {case.backbone} model, not {args.backbone}")
        return checkpoint_model(ckpt, case, args.checkpoint), case
    model = official_model(args.checkpoint, backbone=args.backbone, variant=args.variant, source=args.source, loaded=obj)
    return model, model_case(model, **fields)


def provenance(model: nn.Module, path: str | Path) -> dict[str, Any]:
    info = dict(getattr(model, "official", {}))
    return {**info, "file": str(path)}


# --------------------------------------------------------------------------- vptbench convert
