"""A case: one point of the benchmark matrix, fully resolved before it is measured."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch.nn as nn

import backbones
from backbones.tokens import format_schedule, parse_schedule, resolve_schedule, stage_pruners

from .errors import UsageError

DTYPES = ("float32", "float16", "bfloat16")
RUNTIMES = ("eager", "compile", "onnxruntime")  # bench.measure.runtimes implements them
# Inference precisions (bench.measure.precision says where each runs). fp16 and bf16 are the float
# dtypes (``dtype`` float16/bfloat16); int8 is dynamic quantization of the linear layers: int8
# weights, float32 activations (``dtype`` float32).
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
PRECISION_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "float32"}
DTYPE_PRECISIONS = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


@dataclass(frozen=True)
class Case:
    """(backbone, variant, frames, batch, device, dtype, size, schedule, pruner, recoverer, runtime, precision).

    ``runtime`` is how the forward runs when timed (bench.measure.runtimes: eager, compile, onnxruntime).
    ``precision`` (:data:`PRECISIONS`) is the inference precision: fp16/bf16 go with ``dtype``
    float16/bfloat16 (either spelling gives both after :meth:`resolve`), int8 with float32.
    Empty ``schedule``/``pruner``/``recoverer`` and ``size``/``frames`` of None mean the backbone's
    defaults; :meth:`resolve` fills them in so that records always say what was measured.
    """

    backbone: str
    variant: str = "rectangle"
    frames: int | None = None
    batch: int = 1
    device: str = "cpu"
    dtype: str = "float32"
    size: str | None = None
    schedule: str = ""  # "BLOCK:KEEP[:PRUNER],..." with KEEP a count (resolved) or a ratio of T
    pruner: str = ""  # the stages' pruner where they name none
    recoverer: str = ""
    runtime: str = "eager"
    precision: str = "fp32"

    @property
    def case_id(self) -> str:
        """A display id, unique within a run; never parse it back into fields."""
        parts = [self.backbone, self.variant, f"T{self.frames}", f"B{self.batch}", str(self.size)]
        if self.variant != "rectangle":
            parts += [self.schedule, f"{self.pruner}+{self.recoverer or '-'}"]
        # fp16/bf16 are named by their dtype, as before precisions existed; int8 (float32
        # activations) is named after it, so fp32 ids stay what the committed baselines hold.
        parts += [self.device, PRECISION_DTYPES[self.precision] if self.precision in ("fp16", "bf16") else self.dtype]
        if self.precision == "int8":
            parts.append("int8")
        if self.runtime != "eager":  # eager ids stay as they were before runtimes existed
            parts.append(self.runtime)
        return "/".join(parts)

    def resolve(self) -> Case:
        """Fill in the backbone's defaults and turn ratios into token counts; UsageError if invalid."""
        try:
            spec = backbones.spec(self.backbone)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if self.variant not in backbones.VARIANTS:
            raise UsageError(f"unknown variant {self.variant!r}; choose from {', '.join(backbones.VARIANTS)}")
        if self.dtype not in DTYPES:
            raise UsageError(f"unknown dtype {self.dtype!r}; choose from {', '.join(DTYPES)}")
        if self.runtime not in RUNTIMES:
            raise UsageError(f"unknown runtime {self.runtime!r}; choose from {', '.join(RUNTIMES)}")
        dtype, precision = self.dtype, self.precision
        if precision not in PRECISIONS:
            raise UsageError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
        if precision == "fp32":
            precision = DTYPE_PRECISIONS[dtype]  # --dtype float16 is precision fp16
        elif dtype == "float32":
            dtype = PRECISION_DTYPES[precision]
        elif PRECISION_DTYPES[precision] != dtype:
            raise UsageError(f"precision {precision} and dtype {dtype} disagree: {precision} runs in "
                             f"{PRECISION_DTYPES[precision]}; give one of --precision and --dtype")  # fmt: skip
        if self.batch < 1:
            raise UsageError(f"batch must be >= 1, got {self.batch}")
        if self.frames is not None and self.frames < 1:
            raise UsageError(f"frames must be >= 1, got {self.frames}")
        if self.recoverer and spec.pipeline == "seq2frame":
            raise UsageError(f"recoverer {self.recoverer!r}: {self.backbone} is seq2frame (it outputs the centre frame "
                             "only), so it recovers no tokens; drop the recoverer")  # fmt: skip
        frames = self.frames or spec.frames
        size = self.size or spec.default_size
        if size not in spec.sizes:
            raise UsageError(f"unknown size {size!r} for {self.backbone}; choose from {', '.join(spec.sizes)}")
        reason = spec.valid_frames(frames)
        if reason:
            raise UsageError(f"{self.backbone} cannot take {frames} frames: {reason}")
        v = spec.variants[self.variant]
        if self.variant == "rectangle" and (self.schedule or self.pruner or self.recoverer):
            raise UsageError("the rectangle variant takes no schedule, pruner or recoverer")
        try:
            stages = parse_schedule(self.schedule) if self.schedule else v.schedule
            # depth is checked when the model is built; here only the token counts are resolved
            resolved = resolve_schedule(stages, frames, depth=10**6)
        except ValueError as e:
            raise UsageError(f"bad schedule {self.schedule!r}: {e}") from None
        pruner = self.pruner or (v.pruner or "")
        recoverer = self.recoverer or (v.recoverer or "")
        if self.variant == "rectangle":
            pruner = recoverer = ""
        if spec.pipeline == "seq2frame":
            recoverer = ""
        # One spelling per experiment: "2:9:tpc,5:3:tome" is pruner tpc with "2:9,5:3:tome".
        main, canonical = stage_pruners(resolved, pruner or None)
        pruner, schedule = main or "", format_schedule(canonical)
        for name in dict.fromkeys([pruner, *(s[2] for s in canonical if len(s) > 2)]):
            if name and name not in backbones.pruners():
                raise UsageError(f"unknown pruner {name!r}; choose from {', '.join(backbones.pruners())}")
        if recoverer and recoverer not in backbones.recoverers():
            raise UsageError(f"unknown recoverer {recoverer!r}; choose from {', '.join(backbones.recoverers())}")
        return replace(self, frames=frames, size=size, schedule=schedule, pruner=pruner, recoverer=recoverer,
                       dtype=dtype, precision=precision)  # fmt: skip

    @property
    def pipeline(self) -> str:
        return backbones.spec(self.backbone).pipeline

    def build(self) -> nn.Module:
        """The model of this (resolved) case, on CPU in float32; UsageError if it cannot be built."""
        c = self.resolve()
        kw: dict[str, Any] = {}
        if c.variant != "rectangle":
            kw.update(schedule=parse_schedule(c.schedule), pruner=c.pruner, recoverer=c.recoverer or None)
        try:
            return backbones.create(c.backbone, variant=c.variant, frames=c.frames, size=c.size, **kw)
        except ValueError as e:
            raise UsageError(f"{c.backbone} {c.variant}: {e}") from None

    def fields(self) -> dict[str, Any]:
        """The case's columns of a record (SPEC section 6)."""
        d = asdict(self)
        d["case_id"] = self.case_id
        d["pipeline"] = self.pipeline
        return d
