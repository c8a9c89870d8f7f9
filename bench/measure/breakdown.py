"""Where the time goes: time by part and block, achieved FLOP/s against this machine's peak.

    with labelled(model, "mixste"):
        parts = time_by_part(lambda: model(x), repeats=3)      # {(part, block): [ms per call]}
    peak = machine_peak_gflops("cpu", "float32", threads=2)  # a GEMM microbenchmark, GFLOP/s

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
optimizer step is ``other``.

The profiled call is slower than an unprofiled one (the profiler's overhead per op), so the parts
are measured in a separate pass from the latency figure, and each record carries both sums:
``sum_ms`` (the parts) and ``latency_ms`` (the unprofiled median); they agree within
``PART_TOLERANCE`` on a quiet machine. On CUDA the parts are kernel time (the profiler's device
activity), so gaps where the GPU waits on the host fall in no part and the sum can fall short of
the latency; this path is written for CUDA but was verified on CPU only.

Where the memory goes: one more profiled call (a forward, and a training step when that is broken
down too) with ``profile_memory=True``, apart from the timed pass so that its bookkeeping does not
slow the parts down, is split by the same ranges into ``mem_by_part``: per part, the MiB its ops
allocated (each event's *self* memory usage, counted when positive: the bytes an op allocated net of
what it freed before returning; frees of earlier ops' tensors are not subtracted). A volume of
allocations, not a peak: the peak is ``peak_mem_activations`` (bench.measure.memory).

``machine_peak_gflops`` times large square matmuls (the fastest call over three sizes): the
"peak" a well-tuned dense kernel reaches on this machine with this dtype and these threads, a
practical roofline ceiling rather than the datasheet's. It is measured once per run and cached in
the run's ``meta.json`` (under a file lock: the local executor runs each case in its own process).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from backbones.blocks import Attention, CrossAttention, Mlp
from backbones.tokens import TokenHourglass

from ..core.case import Case
from ..core.results import record
from . import timing
from .timing import mpjpe_loss, synchronize

if TYPE_CHECKING:
    from ..scenarios.base import Settings

PARTS = (
    "embed", "spatial_attention", "temporal_attention", "mlp", "graph", "norm", "prune", "recover", "head", "other",
)  # fmt: skip
STEPS = ("forward", "backward", "optimizer")  # the stages of a training step
PART_TOLERANCE = 0.2  # |sum of parts - latency| / latency a breakdown is expected to stay within
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

    from .flops import _inference, _torch_custom_mapping

    parts = part_modules(model, backbone)
    mode = FlopCounterMode(display=False, custom_mapping=_torch_custom_mapping())
    with _inference(model), mode:
        model(x)
    counts = mode.get_flop_counts()
    root = type(model).__name__
    out: dict[tuple[str, int | None], float] = defaultdict(float)
    for name, key in parts.items():
        out[key] += sum(counts.get(f"{root}.{name}", {}).values()) / 1e9
    out[("other", None)] += max(0.0, mode.get_total_flops() / 1e9 - sum(out.values()))
    return dict(out)


# --------------------------------------------------------------------------- the machine's peak


GEMM_SIZES = {"cpu": (512, 1024, 2048), "cuda": (2048, 4096, 8192)}


def gemm_gflops(device: str, dtype: str, threads: int | None = None, min_time_s: float = 0.3) -> dict[str, Any]:
    """The best GFLOP/s of square matmuls on ``device`` in ``dtype`` (sizes in ``GEMM_SIZES``).

    The fastest call, not the median: a ceiling, which on a shared machine is the call least
    disturbed by other work.
    """
    from .timing import measure_latency

    dev = torch.device(device)
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        by_size = {}
        for n in GEMM_SIZES["cuda" if dev.type == "cuda" else "cpu"]:
            a = torch.randn(n, n, device=dev).to(getattr(torch, dtype))
            b = torch.randn(n, n, device=dev).to(getattr(torch, dtype))
            def mm(a: torch.Tensor = a, b: torch.Tensor = b) -> torch.Tensor:
                return torch.mm(a, b)

            samples = measure_latency(mm, warmup=2, repeats=3, device=dev, min_time_s=min_time_s, max_repeats=50)
            by_size[n] = 2 * n**3 / (min(samples) / 1e3) / 1e9  # a ceiling: the fastest call
    finally:
        torch.set_num_threads(saved)
    best = max(by_size, key=lambda k: by_size[k])
    return {"value": by_size[best], "size": best, "by_size": {str(k): v for k, v in by_size.items()},
            "threads": threads or saved}  # fmt: skip


_PEAKS: dict[str, dict[str, Any]] = {}  # this process's measurements, for runs without a directory


def peak_key(device: str, dtype: str, threads: int) -> str:
    return f"{torch.device(device).type}/{dtype}/{threads}"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # no flock (Windows): cases there run one at a time anyway
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def machine_peak(device: str, dtype: str, threads: int, run_dir: str | Path | None = None) -> dict[str, Any]:
    """This machine's GEMM peak for (device, dtype, threads), measured once per run.

    With ``run_dir`` the figure is cached in its ``meta.json`` under ``machine_peak_gflops`` (a
    lock keeps concurrent case processes from measuring it twice); without, once per process.
    Returns the measurement with ``cached`` saying whether it was taken earlier.
    """
    key = peak_key(device, dtype, threads)
    if run_dir is None:
        if key not in _PEAKS:
            _PEAKS[key] = gemm_gflops(device, dtype, threads)
            return {**_PEAKS[key], "cached": False}
        return {**_PEAKS[key], "cached": True}
    run_dir = Path(run_dir)
    meta_path = run_dir / "meta.json"
    with _file_lock(run_dir / ".machine_peak.lock"):
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        peaks = meta.get("machine_peak_gflops") or {}
        if key in peaks:
            return {**peaks[key], "cached": True}
        peak = gemm_gflops(device, dtype, threads)
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        meta.setdefault("machine_peak_gflops", {})[key] = peak
        tmp = meta_path.with_name("meta.json.tmp")
        tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, meta_path)
        return {**peak, "cached": False}


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


# --------------------------------------------------------------------------- records


def _seen_value(seen: Sequence[dict[str, Any]], metric: str, **match: Any) -> dict[str, Any] | None:
    """The ok record of ``metric`` measured earlier for this case (matching ``match``), if any."""
    for r in seen:
        if r["metric"] == metric and r["status"] == "ok" and all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def _part_records(
    run_id: str, case: Case, phase: str, summary: dict[Key, list[float]], latency: Stats | None,
    env: dict[str, Any], flops: dict[tuple[str, int | None], float] | None = None,
) -> Iterator[dict[str, Any]]:
    total = sum(float(np.median(v)) for v in summary.values())
    adds_up = abs(total - latency.median) <= PART_TOLERANCE * latency.median if latency else None
    for (step, part, block), samples in summary.items():
        extra: dict[str, Any] = {"step": step} if phase == "train" else {}
        if flops is not None:
            extra["flops_g"] = flops.get((part, block), 0.0)
        yield record(
            run_id, case, "time_by_part", float(np.median(samples)), method="torch.profiler", part=part,
            block=block, phase=phase, sum_ms=total, latency_ms=latency.median if latency else None,
            tolerance=PART_TOLERANCE, adds_up=adds_up, **timing.stats_fields(samples), **extra, **env,
        )  # fmt: skip


def _mem_what(device: str) -> str:
    kind = "device" if torch.device(device).type == "cuda" else "CPU"
    return (f"positive self {kind} memory usage of the profiled events (profile_memory=True): per op, the bytes it "
            "allocated net of what it freed before returning; frees of earlier ops' tensors not subtracted. "
            "Allocations, not a peak (peak_mem_activations is the peak)")  # fmt: skip


def _mem_records(run_id: str, case: Case, phase: str, summary: dict[Key, list[float]]) -> Iterator[dict[str, Any]]:
    total = sum(float(np.median(v)) for v in summary.values())
    summed = _mem_what(case.device)
    for (step, part, block), samples in summary.items():
        extra: dict[str, Any] = {"step": step} if phase == "train" else {}
        yield record(
            run_id, case, "mem_by_part", float(np.median(samples)), method="torch.profiler", part=part, block=block,
            phase=phase, summed=summed, total_mib=total, n=len(samples), **extra,
        )  # fmt: skip


def breakdown_records(
    run_id: str, case: Case, model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: Settings,
    seen: Sequence[dict[str, Any]] = (), run_dir: str | Path | None = None, *, train: bool = True,
) -> Iterator[dict[str, Any]]:
    """The ``breakdown`` group: machine_peak_gflops, achieved_gflops per counter, time_by_part, mem_by_part.

    ``train``: break a training step down too (phase train; forward, backward, optimizer).
    mem_by_part comes from one more profiled call per phase, with memory profiling on.
    Reuses the case's latency, train_step and flops records in ``seen`` when those groups ran;
    otherwise it times (and counts with the torch counter) here. The model's weights are restored
    after the profiled training steps.
    """
    from .flops import count_flops

    device, threads = case.device, torch.get_num_threads()
    env = timing.describe(settings.speed, device, case.dtype)
    peak = machine_peak(device, case.dtype, threads, run_dir)
    yield record(
        run_id, case, "machine_peak_gflops", peak["value"], method="gemm", size=peak["size"],
        by_size=peak["by_size"], cached=peak["cached"], threads=threads, dtype=case.dtype,
    )
    model.eval()
    lat_rec = _seen_value(seen, "latency")
    if lat_rec is not None and lat_rec.get("samples"):
        latency = stats(lat_rec["samples"], lat_rec)
    else:
        def forward() -> None:
            with torch.inference_mode():
                model(x)

        latency = stats(timing.measure_latency(
            forward, warmup=settings.warmup, repeats=settings.repeats, device=device,
            min_time_s=settings.min_time_s, max_repeats=settings.max_repeats,
        ))  # fmt: skip
    counted = {r["method"]: r["value"] for r in seen if r["metric"] == "flops" and r["status"] == "ok"}
    if not counted:
        counted = {"torch": count_flops(model, x, "torch").total}
    for counter, gflops in counted.items():
        achieved = gflops / (latency.median / 1e3)
        yield record(
            run_id, case, "achieved_gflops", achieved, method=counter, flops=gflops, latency_ms=latency.median,
            n=latency.n, ci_low=gflops / (latency.ci_high / 1e3), ci_high=gflops / (latency.ci_low / 1e3),
            stable=latency.stable, unstable_reason=latency.unstable_reason, machine_peak_gflops=peak["value"],
            of_peak=achieved / peak["value"], **env,
        )
    backbone = case.backbone
    part_flops = flops_by_part(model, x, backbone)
    with labelled(model, backbone):
        forward = inference_call(model, x, device)
        calls = profile_calls(forward, calls=max(3, settings.repeats), device=device, warmup=1)
        mem = profile_memory_calls(forward, device=device)
    yield from _part_records(run_id, case, "inference", summarise_parts(calls), latency, env, part_flops)
    yield from _mem_records(run_id, case, "inference", summarise_parts(mem))
    if not train:
        return
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        with labelled(model, backbone):
            step = train_call(model, x, y)
            calls = profile_calls(step, calls=max(2, settings.train_repeats), device=device,
                                  warmup=max(1, settings.train_warmup))  # fmt: skip
            train_rec = _seen_value(seen, "train_step")
            if train_rec is not None and train_rec.get("samples"):
                train_latency = stats(train_rec["samples"], train_rec)
            else:
                train_latency = stats(timing.measure_latency(
                    step, warmup=0, repeats=max(1, settings.train_repeats), device=device,
                    min_time_s=settings.train_min_time_s, max_repeats=settings.max_repeats,
                ))  # fmt: skip
            train_mem = profile_memory_calls(step, device=device)  # the same optimizer: its state exists
    finally:
        model.load_state_dict(saved)
        model.zero_grad(set_to_none=True)
        model.eval()
    yield from _part_records(run_id, case, "train", summarise_parts(calls), train_latency, env)
    yield from _mem_records(run_id, case, "train", summarise_parts(train_mem))


def flops_train(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """GFLOPs of one training step's forward + loss + backward by torch's counter (which counts backward).

    The optimizer step is left out (elementwise, no multiply-adds in the counter's sense); the
    model's gradients are cleared and its mode restored afterwards.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from .flops import _torch_custom_mapping

    training = model.training
    model.train()
    mode = FlopCounterMode(display=False, custom_mapping=_torch_custom_mapping())
    try:
        with mode:
            mpjpe_loss(model(x), y).backward()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(training)
    return mode.get_total_flops() / 1e9


def flops_train_records(
    run_id: str, case: Case, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seen: Sequence[dict[str, Any]] = ()
) -> Iterator[dict[str, Any]]:
    """The ``flops_train`` group: one record, with the forward's torch count beside it."""
    from .flops import count_flops

    fwd = _seen_value(seen, "flops", method="torch")
    forward = fwd["value"] if fwd else count_flops(model, x, "torch").total
    total = flops_train(model, x, y)
    yield record(run_id, case, "flops_train", total, method="torch", flops_inference=forward,
                 train_over_inference=total / forward if forward else None)  # fmt: skip
