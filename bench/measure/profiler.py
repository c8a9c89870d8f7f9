"""Labelling a model's parts for torch.profiler, and splitting a profile of it into the parts.

    with labelled(model, "mixste"):
        calls = profile_calls(inference_call(model, x), calls=3)   # per call: {(step, part, block): ms}
    parts = summarise_parts(calls)                                   # {(step, part, block): [ms per call]}

Parts (SPEC section 9): embed, spatial_attention, temporal_attention, mlp, graph, norm, prune,
recover, head, other. The harness labels them without touching the models: :func:`labelled`
hangs a ``torch.profiler.record_function`` range named ``vpt.<part>[.block<i>]`` on the outermost
module of each part, chosen from the module's type and name (:func:`classify`); the token
hourglass's prune (selection + gather) and recover steps, plain methods rather than modules, are
wrapped for the profile only (a range inside the model would show up in jit traces and exports). A profile of a few steady-state calls is then split by these ranges:
every profiler event's *self* time goes to the innermost labelled range around it, so the parts
partition the profiled call exactly, and what no part claims (positional embeddings added inline,
reshapes, Python between modules) is ``other``. In a training step the backward ops are given the
part of the forward op that made them (the autograd sequence number links the two) and the
optimizer step is ``other``. On CUDA the parts are kernel time (the profiler's device activity),
so gaps where the GPU waits on the host fall in no part; this path is written for CUDA but was
verified on CPU only.

Where the memory goes: a profile taken with ``profile_memory=True`` is split by the same ranges
(:func:`split_memory`): per part, the MiB its ops allocated (each event's *self* memory usage,
counted when positive: the bytes an op allocated net of what it freed before returning; frees of
earlier ops' tensors are not subtracted). A volume of allocations, not a peak: the peak is
``peak_mem_activations`` (bench.measure.memory).

Also here: the torch counter's FLOPs by part (:func:`flops_by_part`), the statistics of a latency
the parts are compared with (:func:`stats`), and a Chrome/Perfetto trace of labelled forwards
(:func:`write_trace`). Turning these into records is the breakdown group's job, not this module's.
"""

from __future__ import annotations

import contextlib
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from backbones.blocks import Attention, CrossAttention, Mlp
from backbones.tokens import TokenHourglass

from . import timing
from .timing import mpjpe_loss, synchronize

PARTS = (
    "embed", "spatial_attention", "temporal_attention", "mlp", "graph", "norm", "prune", "recover", "head", "other",
)  # fmt: skip
STEPS = ("forward", "backward", "optimizer")  # the stages of a training step
LABEL = "vpt."  # part ranges: vpt.<part> or vpt.<part>.block<i> (the token hourglass uses the same)
FORWARD_ROOT = "vpt:forward"  # one profiled inference call
STEP_ROOT = "vpt:train."  # vpt:train.forward / .backward / .optimizer of one training step

_HEADS = ("head", "pre_logits", "rep_logit")  # top-level modules mapping features to 3D
_NORMS = (nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm1d)
# Attention whose axis its module path does not name: (path prefix, part), first match wins.
_AXIS_BY_PREFIX: dict[str, tuple[tuple[str, str], ...]] = {
    # MHFormer: the hypothesis generators attend over the 2D coordinate channels (joints), the
    # hypothesis blocks (SHR, CHI) over frames.
    "mhformer": (("mhg.", "spatial_attention"), ("blocks.", "temporal_attention")),
}
_CONTAINERS = (nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict)
_BLOCK = re.compile(r"^blocks\.(\d+)(?:\.|$)")
_PART_LABEL = re.compile(r"^vpt\.([a-z_]+)(?:\.block(\d+))?$")


# --------------------------------------------------------------------------- labelling


def classify(name: str, module: nn.Module, backbone: str = "") -> str | None:
    """The part a submodule of a backbone belongs to (by its type and dotted name), or None.

    None means "not a part by itself": its time goes to the enclosing part, or to ``other``.
    """
    if not name:
        return None
    top, leaf = name.split(".")[0], name.rsplit(".", 1)[-1]
    if top == "tokens":  # prune and recover label themselves; TRA is a module of its own
        return "recover" if leaf == "tra" else None
    if "embed" in top:
        return "embed"
    if top in _HEADS:
        return "head"
    if isinstance(module, _NORMS):
        return "norm"
    kind = type(module).__name__.lower()
    if "graph" in kind or "gcn" in kind:
        return "graph"
    if isinstance(module, Mlp) or kind.endswith("mlp"):
        return "mlp"
    if isinstance(module, Attention | CrossAttention) or "attention" in kind:
        words = name.lower()
        if "spatial" in words:
            return "spatial_attention"
        if "temporal" in words:
            return "temporal_attention"
        for prefix, part in _AXIS_BY_PREFIX.get(backbone, ()):
            if name.startswith(prefix):
                return part
        return "other"  # attention along an axis nobody declared: not guessed
    return None


def block_of(name: str) -> int | None:
    """Index into ``model.blocks`` of a submodule name (``blocks.3.temporal.mlp`` -> 3), if any."""
    m = _BLOCK.match(name)
    return int(m.group(1)) if m else None


def part_modules(model: nn.Module, backbone: str = "") -> dict[str, tuple[str, int | None]]:
    """``{module name: (part, block)}`` for the outermost module of each part (nested ones belong to it)."""
    out: dict[str, tuple[str, int | None]] = {}
    claimed: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, _CONTAINERS) or any(name.startswith(c + ".") for c in claimed):
            continue  # a container is never called itself: its members carry the label
        part = classify(name, module, backbone)
        if part is not None:
            out[name] = (part, block_of(name))
            claimed.append(name)
    return out


def label(part: str, block: int | None = None) -> str:
    """The profiler range name of a part (and block): ``vpt.mlp.block3``."""
    return f"{LABEL}{part}" + (f".block{block}" if block is not None else "")


def parse_label(name: str) -> tuple[str, int | None] | None:
    """``(part, block)`` of a range named by :func:`label`; None for any other event name."""
    m = _PART_LABEL.match(name)
    if not m or m.group(1) not in PARTS:
        return None
    return m.group(1), (int(m.group(2)) if m.group(2) is not None else None)


@contextlib.contextmanager
def labelled(model: nn.Module, backbone: str = "") -> Iterator[dict[str, tuple[str, int | None]]]:
    """Profiler ranges around every part module's forward while the block runs; hooks removed after."""
    parts = part_modules(model, backbone)
    handles = []
    for name, module in model.named_modules():
        if name not in parts:
            continue
        stack: list[Any] = []
        rng = label(*parts[name])

        def enter(_m: nn.Module, _args: Any, rng: str = rng, stack: list[Any] = stack) -> None:
            ctx = record_function(rng)
            ctx.__enter__()
            stack.append(ctx)

        def leave(_m: nn.Module, _args: Any, _out: Any, stack: list[Any] = stack) -> None:
            if stack:
                stack.pop().__exit__(None, None, None)

        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave, always_call=True))
    tokens = getattr(model, "tokens", None)
    wrapped = _label_token_steps(tokens) if isinstance(tokens, TokenHourglass) else []
    try:
        yield parts
    finally:
        for h in handles:
            h.remove()
        for attr in wrapped:
            delattr(tokens, attr)  # the class's method shows through again


def _label_token_steps(tokens: TokenHourglass) -> list[str]:
    """Wrap this hourglass's ``prune`` and ``recover`` (instance attributes over the methods) in ranges.

    They are plain methods, not modules, so no hook sees them; a range inside the model would show
    up in fvcore's jit trace and in exported graphs, so the harness wraps them for the profile only.
    """
    prune, recover = tokens.prune, tokens.recover

    def labelled_prune(block: int, x: torch.Tensor, pos: torch.Tensor, *args: Any, **kw: Any) -> Any:
        if block not in tokens.keep_at:  # no stage starts here: nothing to time
            return prune(block, x, pos, *args, **kw)
        with record_function(label("prune", block)):
            return prune(block, x, pos, *args, **kw)

    def labelled_recover(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == tokens.frames or tokens.recoverer is None:
            return recover(x, pos)
        with record_function(label("recover")):
            return recover(x, pos)

    tokens.prune = labelled_prune  # type: ignore[method-assign]
    tokens.recover = labelled_recover  # type: ignore[method-assign]
    return ["prune", "recover"]


# --------------------------------------------------------------------------- splitting a profile

Key = tuple[str, str, int | None]  # (step, part, block); step is "forward" for inference


def _self_time_us(ev: Any, device: bool) -> float:
    if device:
        return float(getattr(ev, "self_device_time_total", getattr(ev, "self_cuda_time_total", 0.0)))
    return float(ev.self_cpu_time_total)


def _self_alloc_bytes(ev: Any, device: bool) -> float:
    """Bytes ``ev`` itself allocated, net of what it freed; negative (it freed earlier ops' tensors) counts 0.

    A range of ours holds no allocations of its own, only the frees between its ops, so it adds 0.
    """
    if device:
        nbytes = getattr(ev, "self_device_memory_usage", getattr(ev, "self_cuda_memory_usage", 0))
    else:
        nbytes = ev.self_cpu_memory_usage
    return float(max(0, nbytes))


def _split(
    ev: Any, step: str, where: tuple[str, int | None], acc: dict[Key, float], seq: dict[int, tuple[str, int | None]],
    value: Callable[[Any], float],
) -> None:
    """Add ``value`` (self time, self allocations) of ``ev`` and its descendants to the innermost part around each."""
    parsed = parse_label(ev.name)
    if parsed is not None:
        where = parsed
    elif step == "backward" and ev.name.startswith("autograd::engine::evaluate_function") and ev.sequence_nr in seq:
        where = seq[ev.sequence_nr]  # a backward op belongs to the part of the forward op that made it
    elif step == "forward" and getattr(ev, "sequence_nr", -1) >= 0:
        seq.setdefault(ev.sequence_nr, where)
    key = (step, where[0], where[1])
    acc[key] = acc.get(key, 0.0) + value(ev)
    for child in ev.cpu_children:
        _split(child, step, where, acc, seq, value)


def split_profile(events: Sequence[Any], device: bool = False) -> list[dict[Key, float]]:
    """Per profiled call, ms by (step, part, block), from a profile's events (``prof.events()``).

    A call is one ``FORWARD_ROOT`` range, or one training step's ``vpt:train.*`` ranges in order.
    """
    calls = _split_calls(events, lambda ev: _self_time_us(ev, device))
    return [{k: v / 1e3 for k, v in call.items()} for call in calls]


def split_memory(events: Sequence[Any], device: bool = False) -> list[dict[Key, float]]:
    """Per profiled call, MiB allocated by (step, part, block), from a ``profile_memory=True`` profile's events.

    Calls and parts as in :func:`split_profile`; what is summed: :func:`_self_alloc_bytes`.
    """
    calls = _split_calls(events, lambda ev: _self_alloc_bytes(ev, device))
    return [{k: v / 2**20 for k, v in call.items()} for call in calls]


def _split_calls(events: Sequence[Any], value: Callable[[Any], float]) -> list[dict[Key, float]]:
    calls: list[dict[Key, float]] = []
    seq: dict[int, tuple[str, int | None]] = {}
    roots = sorted((e for e in events if e.cpu_parent is None), key=lambda e: e.time_range.start)
    for ev in roots:
        if ev.name == FORWARD_ROOT:
            step = "forward"
        elif ev.name.startswith(STEP_ROOT):
            step = ev.name[len(STEP_ROOT):]
        else:
            continue
        if step == "forward":
            calls.append({})
            seq = {}
        acc = calls[-1] if calls else {}
        _split(ev, step, ("other", None), acc, seq, value)
    return calls


def _activities(device: str) -> list[ProfilerActivity]:
    acts = [ProfilerActivity.CPU]
    if torch.device(device).type == "cuda":
        acts.append(ProfilerActivity.CUDA)
    return acts


def profile_calls(fn: Callable[[], Any], *, calls: int, device: str = "cpu", warmup: int = 1) -> list[dict[Key, float]]:
    """Run ``fn`` (which opens its own root ranges) ``calls`` times under torch.profiler; split each."""
    events = _profiled_events(fn, calls=calls, device=device, warmup=warmup, profile_memory=False)
    return split_profile(events, device=torch.device(device).type == "cuda")


def profile_memory_calls(
    fn: Callable[[], Any], *, calls: int = 1, device: str = "cpu", warmup: int = 0
) -> list[dict[Key, float]]:
    """Run ``fn`` ``calls`` times under torch.profiler with ``profile_memory=True``; MiB allocated by part per call.

    ``warmup`` 0 by default: the breakdown calls it on a callable its timed pass has just run, so
    first-call allocations (lazy initialisation, AdamW's state) are already out of the way.
    """
    events = _profiled_events(fn, calls=calls, device=device, warmup=warmup, profile_memory=True)
    return split_memory(events, device=torch.device(device).type == "cuda")


def _profiled_events(fn: Callable[[], Any], *, calls: int, device: str, warmup: int, profile_memory: bool) -> Any:
    """The profiler's events of ``calls`` synchronised calls of ``fn``, after ``warmup`` unprofiled ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    with profile(activities=_activities(device), profile_memory=profile_memory) as prof:
        for _ in range(calls):
            fn()
            synchronize(device)
    return prof.events()


def inference_call(model: nn.Module, x: torch.Tensor, device: str = "cpu") -> Callable[[], None]:
    """One labelled-root forward in inference mode (the model's part labels come from :func:`labelled`)."""

    def call() -> None:
        with torch.inference_mode(), record_function(FORWARD_ROOT):
            model(x)
            synchronize(device)

    return call


def train_call(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, lr: float = 1e-4) -> Callable[[], None]:
    """One training step (the steps of ``timing.train_step_fn``) with its three stages as root ranges."""
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)

    def call() -> None:
        with record_function(STEP_ROOT + "forward"):
            opt.zero_grad(set_to_none=True)
            loss = mpjpe_loss(model(x), y)
        with record_function(STEP_ROOT + "backward"):
            loss.backward()
        with record_function(STEP_ROOT + "optimizer"):
            opt.step()

    return call


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Stats:
    """A latency the breakdown divides by: its median, 95 % CI and stability by the one rule of bench.measure.timing."""

    median: float
    n: int
    ci_low: float
    ci_high: float
    stable: bool
    unstable_reason: str = ""


def stats(samples: Sequence[float], record: dict[str, Any] | None = None) -> Stats:
    """``samples`` summarised by :func:`bench.measure.timing.stats_fields`; a timed ``record`` of them keeps
    its own verdict (it also knows the machine's load while they were taken)."""
    if not samples:
        raise ValueError("no samples")
    f = record if record is not None and "stable" in record else timing.stats_fields(samples)
    return Stats(float(np.median(samples)), len(samples), f["ci_low"], f["ci_high"], bool(f["stable"]),
                 str(f.get("unstable_reason", "")))  # fmt: skip


def summarise_parts(calls: Sequence[dict[Key, float]]) -> dict[Key, list[float]]:
    """Per (step, part, block): its value (ms, MiB) in each call (a part absent from a call counts 0)."""
    def order(k: Key) -> tuple[int, int, int]:
        return STEPS.index(k[0]), PARTS.index(k[1]), -1 if k[2] is None else k[2]  # block 0 after no block

    keys = sorted({k for c in calls for k in c}, key=order)
    return {k: [c.get(k, 0.0) for c in calls] for k in keys}


# --------------------------------------------------------------------------- FLOPs by part


def flops_by_part(model: nn.Module, x: torch.Tensor, backbone: str = "") -> dict[tuple[str, int | None], float]:
    """GFLOPs of one forward by (part, block), by the torch counter; what no part module holds is other."""
    from torch.utils.flop_counter import FlopCounterMode

    from .flops import _inference
    from .flops_torch import torch_custom_mapping

    parts = part_modules(model, backbone)
    mode = FlopCounterMode(display=False, custom_mapping=torch_custom_mapping())
    with _inference(model), mode:
        model(x)
    counts = mode.get_flop_counts()
    root = type(model).__name__
    out: dict[tuple[str, int | None], float] = defaultdict(float)
    for name, key in parts.items():
        out[key] += sum(counts.get(f"{root}.{name}", {}).values()) / 1e9
    out[("other", None)] += max(0.0, mode.get_total_flops() / 1e9 - sum(out.values()))
    return dict(out)


# --------------------------------------------------------------------------- traces


def write_trace(
    model: nn.Module, x: torch.Tensor, path: str | Path, *, backbone: str = "", device: str = "cpu", calls: int = 3
) -> Path:
    """A Chrome/Perfetto trace (torch.profiler's export) of ``calls`` steady-state labelled forwards."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    with labelled(model, backbone):
        call = inference_call(model, x, device)
        call()  # warm-up: first-call allocations and lazy initialisation stay out of the trace
        synchronize(device)
        with profile(activities=_activities(device)) as prof:
            for _ in range(calls):
                call()
    prof.export_chrome_trace(str(path))
    return path

