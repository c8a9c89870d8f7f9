"""Video pose transformer backbones, each in rectangle, single (HoT) and hierarchical (H2OT) variants.

    import backbones
    backbones.names()
    model = backbones.create("mixste", variant="hierarchical", frames=243)
    model.token_profile
    backbones.pruners(), backbones.recoverers()    # the token strategies, built-in and registered

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
from .strategies import (
    Merged,
    PruneInput,
    PrunerSpec,
    RecovererSpec,
    pruner_spec,
    pruners,
    recoverer_spec,
    recoverers,
    register_pruner,
    register_recoverer,
    unregister_pruner,
    unregister_recoverer,
)
from .tokens import TokenHourglass, format_schedule, parse_schedule, resolve_schedule, stage_pruners

__all__ = [
    "VARIANTS",
    "BackboneSpec",
    "Merged",
    "PruneInput",
    "PrunerSpec",
    "RecovererSpec",
    "TokenHourglass",
    "VariantSpec",
    "create",
    "format_schedule",
    "load_official",
    "names",
    "official_state_dict",
    "parse_schedule",
    "pruner_spec",
    "pruners",
    "recoverer_spec",
    "recoverers",
    "register",
    "register_pruner",
    "register_recoverer",
    "resolve_schedule",
    "spec",
    "stage_pruners",
    "unregister",
    "unregister_pruner",
    "unregister_recoverer",
]
