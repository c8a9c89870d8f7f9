"""``vptbench list``: the registered backbones with their variants' schedules, pruners and recoverers."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any, **kw: Any) -> None:
    p = sub.add_parser("list", **kw, help="backbones, variants and default schedules; pruners and recoverers")
    p.add_argument("what", nargs="?", choices=("backbones", "pruners", "recoverers"), default=None,
                   help="list only these (default: all three; with --json: backbones)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from ..core import numbers

    what = getattr(args, "what", None)
    if what in ("pruners", "recoverers"):
        items = describe_strategies()[what]
        if args.json:
            print(json.dumps(items, indent=2))
        else:
            print(tabulate([[i["name"], "yes" if i.get("attention") else "", i["doc"]] for i in items]
                           if what == "pruners" else [[i["name"], i["doc"]] for i in items],
                           headers=["pruner", "attention", "what it does"] if what == "pruners"
                           else ["recoverer", "what it does"], disable_numparse=True))  # fmt: skip
        return 0
    info = describe_backbones()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    rows = []
    for b in info:
        sizes = ", ".join(f"{s}*" if s == b["default_size"] else s for s in b["sizes"])
        for variant, v in b["variants"].items():
            how = f"{v['pruner']}+{v['recoverer'] or '-'}" if v["pruner"] else ""
            rows.append([b["name"], b["pipeline"], b["in_channels"], b["frames"], sizes, variant,
                         v["schedule"], how, numbers.count(v["params"]), _runs(v["token_profile"])])  # fmt: skip
    headers = ["backbone", "pipeline", "C_in", "T", "sizes (* default)", "variant", "schedule",
               "pruner+recoverer", "params", "tokens per block"]  # fmt: skip
    print(tabulate(rows, headers=headers, disable_numparse=True))
    print("\nschedule = BLOCK:KEEP[:PRUNER],... at the canonical T (the registered keeps are ratios of T).")
    if what is None:
        for kind in ("pruners", "recoverers"):
            print()
            main(argparse.Namespace(what=kind, json=False))
    return 0


def _build_light(name: str, variant: str) -> Any:
    """The canonical model with its parameters on the meta device (see ``backbones.official.parameters_on_meta``)."""
    import backbones
    from backbones.official import parameters_on_meta

    try:
        with parameters_on_meta():
            return backbones.create(name, variant=variant)
    except Exception:  # a constructor that needs real parameter values: build it for real
        return backbones.create(name, variant=variant)


def describe_backbones() -> list[dict[str, Any]]:
    """Every registered backbone with its variants' default schedules resolved at canonical T."""
    import backbones

    out = []
    for name in backbones.names():
        spec = backbones.spec(name)
        variants = {}
        for variant, v in spec.variants.items():
            model: Any = _build_light(name, variant)
            tokens = model.tokens
            variants[variant] = {
                "schedule": tokens.schedule_text,
                "pruner": tokens.pruner,
                "recoverer": tokens.recoverer,
                "embed_kept": v.embed_kept,
                "token_profile": list(model.token_profile),
                "params": sum(p.numel() for p in model.parameters()),
            }
        out.append({
            "name": name, "pipeline": spec.pipeline, "in_channels": spec.in_channels, "frames": spec.frames,
            "sizes": {k: dict(kw) for k, kw in spec.sizes.items()}, "default_size": spec.default_size,
            "source": spec.source, "variants": variants,
        })  # fmt: skip
    return out


def _runs(profile: list[int]) -> str:
    """[243, 243, 81, 81, 81] -> '243x2 81x3' (the token hourglass, compactly)."""
    parts: list[str] = []
    prev, count = None, 0
    for t in [*profile, None]:
        if t == prev:
            count += 1
            continue
        if prev is not None:
            parts.append(f"{prev}x{count}")
        prev, count = t, 1
    return " ".join(parts)


def describe_strategies() -> dict[str, list[dict[str, Any]]]:
    """The registered pruners and recoverers with their one-line descriptions (built-ins first)."""
    import backbones

    return {
        "pruners": [
            {"name": n, "attention": backbones.pruner_spec(n).attention, "doc": _first_line(backbones.pruner_spec(n).doc)}
            for n in backbones.pruners()
        ],
        "recoverers": [{"name": n, "doc": _first_line(backbones.recoverer_spec(n).doc)} for n in backbones.recoverers()],
    }


def _first_line(doc: str) -> str:
    return doc.strip().splitlines()[0] if doc.strip() else ""
