"""What every scenario shares: the metric groups, how hard to measure (:class:`Settings`), the
device check, and how a failure becomes a record."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from ..accuracy.weights import POSE_STEPS
from ..core.case import Case
from ..core.errors import UsageError
from ..core.results import failure
from ..measure import memory, timing
from ..measure.stream import StreamSettings

METRIC_GROUPS = ("params", "flops", "latency", "speedup", "stream", "pose_error", "memory", "train", "breakdown",
                 "flops_train")

# The record standing for a group when the group fails or is skipped as a whole.
GROUP_METRIC = {"params": "params", "flops": "flops", "latency": "latency", "speedup": "speedup", "train": "train_step",
                "breakdown": "time_by_part", "flops_train": "flops_train", "stream": "stream_latency",
                "pose_error": "pose_error"}  # fmt: skip
REFERENCE_VARIANT = "rectangle"  # what a speed-up is measured against


@dataclass(frozen=True)
class Settings:
    """How hard to measure: timing repeats (cost vs. noise) and the speed switches.

    ``repeats`` timed calls at least and ``min_time_s`` of them, after ``warmup`` untimed ones;
    then more until the median's CI is tight (bench.measure.timing) or ``max_time_s`` of timed calls
    (None: ``min_time_s``) or ``max_repeats`` calls are spent; the same for training steps with
    the ``train_*`` fields, and for the speed-up's pairs with the latency fields (a pair's time
    counts). The presets choose these per cost (see bench.run.presets).
    """

    warmup: int = 2
    repeats: int = 5
    min_time_s: float = 1.0
    max_repeats: int = 50
    train_warmup: int = 1
    train_repeats: int = 3
    train_min_time_s: float = 1.0
    max_time_s: float | None = None
    train_max_time_s: float | None = None
    speed: timing.SpeedSettings = field(default_factory=timing.SpeedSettings)
    save_onnx: str | None = None  # a directory: the onnxruntime runtime writes each case's .onnx there
    onnx_exporter: str = "auto"  # bench.measure.runtimes.EXPORTERS, or auto: the first that exports the model
    allocator: str = "tuned"  # bench.measure.allocator.ALLOCATORS: how the measuring processes allocate
    reference: bool = True  # time the reference workload between samples (machine_slowdown)
    run_budget_s: float | None = None  # latency and pair seconds of the whole run, shared out (bench.run.budget)
    stream: StreamSettings = field(default_factory=StreamSettings)  # the stream group's live streams
    # pose_error (bench.scenarios.pose_error): the weights of this checkpoint where it fits the case,
    # else of ``pose_steps`` steps of synthetic training (bench.accuracy.weights)
    checkpoint: str | None = None
    pose_steps: int = POSE_STEPS

    def latency_effort(self) -> dict[str, Any]:
        """How hard to time a forward, or the speed-up's pairs: the keyword arguments of
        bench.measure.timing.measure_latency and measure_paired."""
        return {"warmup": self.warmup, "repeats": self.repeats, "min_time_s": self.min_time_s,
                "max_repeats": self.max_repeats, "max_time_s": self.max_time_s}  # fmt: skip

    def train_effort(self) -> dict[str, Any]:
        """How hard to time training steps: :meth:`latency_effort` from the ``train_*`` fields."""
        return {"warmup": self.train_warmup, "repeats": self.train_repeats, "min_time_s": self.train_min_time_s,
                "max_repeats": self.max_repeats, "max_time_s": self.train_max_time_s}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Settings:
        d = dict(d)
        d["speed"] = timing.SpeedSettings(**d.get("speed", {}))
        d.setdefault("allocator", "system")  # a run recorded before the choice existed ran glibc's defaults
        d["stream"] = StreamSettings.from_dict(d.get("stream", {}))
        return cls(**d)


def memory_metric(device: str) -> str:
    """The record standing for the memory group on ``device``."""
    return "peak_mem_alloc" if torch.device(device).type == "cuda" else "peak_rss"


def group_metric(group: str, device: str) -> str:
    return memory_metric(device) if group == "memory" else GROUP_METRIC[group]


def failure_status(exc: BaseException) -> str:
    """"oom" for running out of memory (CUDA or CPU), "error" otherwise."""
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return "oom"
    if isinstance(exc, memory.PeakRssError):
        return exc.status
    text = str(exc).lower()
    if isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text):
        return "oom"  # the CPU allocator's and older CUDA versions' wording
    return "error"


def check_device(device: str) -> None:
    """UsageError unless ``device`` names a device this machine has."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UsageError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise UsageError(f"unknown device {device!r}; use cpu, cuda or cuda:N")


def failure_with(
    run_id: str, case: Case, metric: str, why: BaseException | str, status: str, **extra: Any
) -> dict[str, Any]:
    """A failure record with extra fields (``phase``, ``method``...)."""
    rec = failure(run_id, case, metric, why, status=status)
    rec.update(extra)
    return rec
