"""This machine's peak: the GFLOP/s of large square matmuls, measured once per run.

    peak = machine_peak("cpu", "float32", threads=2, run_dir=run_dir)   # {"value": GFLOP/s, "size": ...}

:func:`gemm_gflops` times large square matmuls (the fastest call over three sizes): the "peak" a
well-tuned dense kernel reaches on this machine with this dtype and these threads, a practical
roofline ceiling rather than the datasheet's. :func:`machine_peak` measures it once per run and
caches it in the run's ``meta.json`` (under a file lock: the local executor runs each case in its
own process); the breakdown's machine_peak_gflops and achieved_gflops records divide by it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

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

