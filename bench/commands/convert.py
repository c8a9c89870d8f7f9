"""``vptbench convert CKPT``: a released checkpoint to a vptbench one, or back with ``--to-official``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..core.errors import UsageError


def add_parser(sub: Any, **kw: Any) -> None:
    p = sub.add_parser("convert", **kw, help="a released checkpoint to a vptbench one, or back with --to-official")
    p.add_argument("ckpt", help="checkpoint file: a release's (HoT, MixSTE, MotionBERT, MHFormer, MotionAGFormer) "
                                "or, with --to-official, a vptbench one")
    p.add_argument("--backbone", default=None, help="mixste | motionbert | mhformer | motionagformer "
                                                     "(default: told by the checkpoint's keys)")
    p.add_argument("--variant", default=None, help="where the tensors cannot tell: single for TPC-MixSTE, TPC-MHFormer")
    p.add_argument("--source", choices=("hot", "original"), default=None,
                   help="hot: NationalGAILab/HoT's copies; original: the backbone's own release (needed for "
                        "MotionAGFormer-B, whose two releases differ in heads and neighbours, not in tensors)")
    p.add_argument("--out", required=True, help="file to write")
    p.add_argument("--to-official", action="store_true",
                   help="write the release's key names, shapes and container instead of a vptbench checkpoint")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Official -> vptbench checkpoint, or ``--to-official`` back."""
    import torch

    import backbones
    from backbones.official import release_container

    from ..accuracy.checkpoints import (
        checkpoint_model,
        is_vptbench,
        load_checkpoint,
        model_case,
        official_model,
        provenance,
        read_file,
        vptbench_checkpoint,
    )
    from ..core.case import Case

    out = Path(args.out)
    obj = read_file(args.ckpt, flag="convert")
    if is_vptbench(obj):
        if not args.to_official:
            raise UsageError(f"{args.ckpt} is already a vptbench checkpoint; pass --to-official to export it")

        ckpt = load_checkpoint(args.ckpt)
        case = Case(**ckpt["case"]).resolve()
        if args.backbone and case.backbone != args.backbone:
            raise UsageError(f"{args.ckpt} holds a {case.backbone} model, not {args.backbone}")
        model = checkpoint_model(ckpt, case, args.ckpt)
        source = args.source or (ckpt.get("official") or {}).get("source") or _default_source(model)
    else:
        model = official_model(args.ckpt, backbone=args.backbone, variant=args.variant, source=args.source, loaded=obj)
        source = args.source or model.official["source"] or _default_source(model)  # type: ignore[index]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if args.to_official:
            try:
                sd = backbones.official_state_dict(model, source=source)
            except ValueError as e:
                raise UsageError(str(e)) from None
            torch.save(release_container(model.backbone, source, sd), out)  # type: ignore[arg-type]
        else:
            torch.save(vptbench_checkpoint(model, official=provenance(model, args.ckpt)), out)
    except OSError as e:
        raise UsageError(f"cannot write --out {out}: {e.strerror or e}") from None
    case = model_case(model)
    kind = f"{source} release layout" if args.to_official else "vptbench checkpoint"
    release = getattr(model, "official", {}).get("release", case.backbone)
    print(f"{release}: {case.case_id} -> {out} ({kind})")
    return 0


def _default_source(model: Any) -> str:
    """HoT for a model with HoT's pruning parameters, else the backbone's own release."""
    tokens: Any = model.tokens
    return "hot" if tokens.recoverer == "tra" or len(tokens.embeds) else "original"

