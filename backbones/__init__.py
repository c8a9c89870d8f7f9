"""Video pose transformer backbones, each in rectangle, single (HoT) and hierarchical (H2OT) variants.

    import backbones
    backbones.names()
    model = backbones.create("mixste", variant="hierarchical", frames=243)
    model.token_profile

This package never imports the harness (``bench``): models know nothing of how they are measured.
"""

from . import (
    mhformer,  # noqa: F401
    mixste,  # noqa: F401  (registers)
    motionagformer,  # noqa: F401
    motionbert,  # noqa: F401
)
from .official import load_official, official_state_dict
from .registry import VARIANTS, BackboneSpec, VariantSpec, create, names, register, spec, unregister
from .tokens import PRUNERS, RECOVERERS, format_schedule, parse_schedule, resolve_schedule

__all__ = [
    "PRUNERS",
    "RECOVERERS",
    "VARIANTS",
    "BackboneSpec",
    "VariantSpec",
    "create",
    "format_schedule",
    "load_official",
    "names",
    "official_state_dict",
    "parse_schedule",
    "register",
    "resolve_schedule",
    "spec",
    "unregister",
]
