"""Peak memory of an inference step and of a training step.

CUDA (:func:`cuda_peak_memory`): torch's ``max_memory_allocated`` and ``max_memory_reserved``
after ``reset_peak_memory_stats`` (what the caching allocator handed out, and what it holds from
the driver), plus the device's used memory as NVML reports it, sampled by a thread during the step.
NVML sees the whole device: the CUDA context, other processes, and memory torch does not manage.

CPU (:func:`peak_rss`): the peak resident set of a *fresh process per case*, so that the memory of
earlier cases, of the harness and of the allocator's caches never counts; the fresh process, the
zygote it is forked from and what it runs are :mod:`bench.measure.rss`. The training figure is the
steady state: a first step creates AdamW's state, and the next step is the one reported.
Activation memory (``peak_mem_activations``, method ``rss_delta``): the same steps' peak above
the resident set just before them, once glibc has returned freed memory to the system
(``malloc_trim``): what the step's activations (and, in training, its gradients) add to the
model, inputs and optimizer state, without the interpreter, torch and the weights that make up
most of a peak resident set. On CUDA: the allocator's peak minus what was allocated before the step.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .rss import MIB, PeakRssError, ask_fresh

PHASES = ("inference", "train")


@dataclass(frozen=True)
class MemoryReport:
    """Peak memory of one step in MiB; a field is None where that source was not available."""

    alloc_mib: float | None = None  # torch.cuda.max_memory_allocated
    reserved_mib: float | None = None  # torch.cuda.max_memory_reserved
    device_mib: float | None = None  # NVML used device memory, peak while sampling
    rss_mib: float | None = None  # peak resident set of the process (CPU)
    baseline_mib: float | None = None  # allocated before the step (CUDA): peak minus this = activations
    note: str = ""


# --------------------------------------------------------------------------- CUDA


class NvmlSampler:
    """Samples the used memory of one CUDA device with NVML on a background thread.

    ``with NvmlSampler(device) as s: step()`` then ``s.peak_mib``. Raises RuntimeError on entry
    when NVML (nvidia-ml-py or the driver) is missing, so callers can say why there is no figure.
    """

    def __init__(self, device: str | torch.device = "cuda", interval_s: float = 0.001):
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.peak_mib: float = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle: Any = None

    def __enter__(self) -> NvmlSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Open NVML and start sampling (RuntimeError when NVML is not available)."""
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as e:  # ImportError, or NVMLError without a driver
            raise RuntimeError(f"NVML not available: {e}") from None
        self._nvml = pynvml
        self._handle = _nvml_handle(pynvml, self.device)
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        used = self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used / MIB
        self.peak_mib = max(self.peak_mib, used)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def stop(self) -> None:
        """Stop sampling, take a last sample and close NVML."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        self._nvml.nvmlShutdown()


def _nvml_handle(pynvml: Any, device: torch.device) -> Any:
    """NVML's handle of a torch device, matched by PCI bus id (CUDA_VISIBLE_DEVICES renumbers)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    props: Any = torch.cuda.get_device_properties(index)
    try:
        bus = f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
        return pynvml.nvmlDeviceGetHandleByPciBusId(bus.encode())
    except Exception:  # older torch without PCI fields, or an id NVML spells differently
        return pynvml.nvmlDeviceGetHandleByIndex(index)


def cuda_peak_memory(fn: Callable[[], Any], device: str | torch.device = "cuda") -> MemoryReport:
    """Peak CUDA memory while ``fn`` runs once (allocated, reserved, and NVML device-wide)."""
    dev = torch.device(device)
    torch.cuda.synchronize(dev)
    torch.cuda.empty_cache()  # so that 'reserved' counts this step, not caches of earlier ones
    torch.cuda.reset_peak_memory_stats(dev)
    baseline = torch.cuda.memory_allocated(dev) / MIB
    note = ""
    sampler: NvmlSampler | None = NvmlSampler(dev)
    try:
        sampler.start()  # type: ignore[union-attr]
    except RuntimeError as e:
        sampler, note = None, str(e)
    try:
        fn()
        torch.cuda.synchronize(dev)
    finally:
        if sampler is not None:
            sampler.stop()
    return MemoryReport(
        alloc_mib=torch.cuda.max_memory_allocated(dev) / MIB,
        reserved_mib=torch.cuda.max_memory_reserved(dev) / MIB,
        device_mib=sampler.peak_mib if sampler is not None else None,
        baseline_mib=baseline,
        note=note,
    )


# --------------------------------------------------------------------------- CPU


def peak_rss(
    case_fields: dict[str, Any],
    phases: Sequence[str] = PHASES,
    *,
    threads: int | None = None,
    train_timing: dict[str, Any] | None = None,
    timeout_s: float = 3600.0,
) -> dict[str, Any]:
    """Peak resident set (MiB) of each phase of a case, measured in a fresh process.

    ``case_fields`` are the fields of a resolved :class:`~bench.core.case.Case` (``dataclasses.asdict``).
    Returns ``{phase: MiB, "baseline_mib": MiB once the model is built, "reset": bool}``; raises
    :class:`PeakRssError` (status "oom" when it ran out of memory or was killed by the OOM killer),
    whose ``partial`` holds the phases measured before. ``train_timing`` (``warmup``, ``repeats``,
    ``min_time_s``, ``max_repeats``) times the training steps too: ``"train_samples"`` in ms.
    """
    bad = [p for p in phases if p not in PHASES]
    if bad:
        raise ValueError(f"unknown phase {bad[0]!r}; choose from {', '.join(PHASES)}")
    import backbones

    from ..core import plugins

    name = case_fields["backbone"]
    module = backbones.spec(name).build.__module__ if name in backbones.names() else ""
    results: dict[str, Any] = {}
    groups: list[list[str]] = [list(phases)]
    for group in groups:
        request = {"case": case_fields, "phases": group, "threads": threads, "module": module,
                   "train_timing": train_timing, "plugins": [dataclasses.asdict(p) for p in plugins.loaded()]}  # fmt: skip
        reply = ask_fresh(request, timeout_s)
        out = reply["out"]
        if reply["status"] != "ok":
            raise PeakRssError(reply["message"], reply["status"], {**results, **out})
        if not out.get("reset", True) and len(group) > 1:
            # Without a resettable high-water mark the later phases' peaks would include the first
            # phase's: keep the first and measure the others in another fresh process.
            out = {k: v for k, v in out.items() if k in (group[0], "baseline_mib")}
            groups.append(group[1:])
        results.update(out)
    return results
