"""What a timed phase records beside its samples: the machine's load (bench.measure.load), its speed
(bench.measure.reference) and how the process allocates memory (bench.measure.allocator).

    with Phase(threads=2, device="cpu") as phase:
        samples = timing.measure_latency(fn, warmup=1, repeats=5, reference=phase.reference)
    fields = phase.fields()   # other_cores, busy, ..., machine_slowdown, reference_ms, allocator, ...

``phase.reference`` is the reference workload run between the samples (None on CUDA, where the
timers queue device events and a host-side product would tell nothing, and with ``reference`` off).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import torch

from . import allocator, load, reference


class Phase:
    """A context manager around one timed phase (module docstring)."""

    def __init__(self, threads: int, device: str | torch.device = "cpu", *, with_reference: bool = True) -> None:
        self.threads = threads
        self.device = torch.device(device)
        self.monitor = load.Monitor(threads)
        self.reference: reference.Interleaved | None = None
        if with_reference and self.device.type == "cpu":
            self.reference = reference.Interleaved(reference.workload())

    def __enter__(self) -> Phase:
        self.monitor.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.monitor.__exit__(exc_type, exc, tb)

    def fields(self) -> dict[str, Any]:
        """The load fields, the machine's speed during the phase and the allocator, as recorded with its timing."""
        out = self.monitor.fields()
        if self.reference is not None:
            out |= reference.slowdown(self.reference.times, reference.machine_key(self.threads))
        return out | allocator.describe()
