"""Tidy (long-format) results: one JSON object per (case, metric); how records are made and read.

``results/<run_id>/records.jsonl`` holds the records, ``meta.json`` the environment. This module
defines a record (:func:`record`, :data:`MEASUREMENT_KEY`), reads and validates them
(:func:`read_records`) and writes ``meta.json``; :mod:`bench.store` writes the records.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import json
import math
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .case import Case
from .errors import UsageError

SCHEMA_VERSION = 1

RECORD_FIELDS = (
    "run_id", "case_id", "backbone", "variant", "pipeline", "frames", "batch", "device", "dtype",
    "size", "schedule", "pruner", "recoverer", "runtime", "metric", "value", "unit", "method", "status", "error",
)  # fmt: skip
STATUSES = ("ok", "oom", "error", "skipped")
# What identifies one measurement: a case can hold several records of a metric (one per FLOP
# counter, memory phase or block), never two with the same key.
MEASUREMENT_KEY = ("case_id", "metric", "method", "phase", "block", "part", "step")  # part, step: time_by_part

# metric -> unit (SPEC section 6); reports, gates and other tools rely on these names.
METRIC_UNITS = {
    "params": "count",
    "flops": "GFLOPs",
    "flops_block": "GFLOPs",
    "latency": "ms",
    "latency_p10": "ms",
    "latency_p90": "ms",
    "fps": "frames/s",
    "clips_per_s": "clips/s",
    "train_step": "ms",
    "speedup": "x",
    "peak_mem_alloc": "MiB",
    "peak_mem_reserved": "MiB",
    "peak_mem_device": "MiB",
    "peak_rss": "MiB",
    "peak_mem_activations": "MiB",
    "time_by_part": "ms",
    "achieved_gflops": "GFLOP/s",
    "machine_peak_gflops": "GFLOP/s",
    "flops_train": "GFLOPs",
    "mpjpe": "mm",
    "p_mpjpe": "mm",
    "mpjve": "mm",
    "export_error": "relative max abs difference to eager",
    "compile_s": "s",
}


def record(
    run_id: str,
    case: Case,
    metric: str,
    value: float | None,
    *,
    method: str = "-",
    status: str = "ok",
    error: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """One record of ``metric`` for ``case``; the unit comes from :data:`METRIC_UNITS`."""
    if metric not in METRIC_UNITS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRIC_UNITS)}")
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; known: {', '.join(STATUSES)}")
    rec: dict[str, Any] = {"run_id": run_id, **case.fields()}
    rec.update(metric=metric, value=value, unit=METRIC_UNITS[metric], method=method, status=status, error=error)
    rec.update(extra)
    return {k: rec[k] for k in RECORD_FIELDS} | {k: v for k, v in rec.items() if k not in RECORD_FIELDS}


def failure(run_id: str, case: Case, metric: str, exc: BaseException | str, status: str = "error") -> dict[str, Any]:
    """A record saying why ``metric`` of ``case`` could not be measured (value None)."""
    msg = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return record(run_id, case, metric, None, status=status, error=msg.strip().splitlines()[0][:500] if msg else "")


def iter_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a ``records.jsonl`` (or a run directory holding one), validated line by line.

    A malformed line raises UsageError naming the file and the line number; a line cut short by a
    kill at the very end of the file is skipped, since the run that wrote it will redo that case.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "records.jsonl"
    if not path.is_file():
        raise UsageError(f"{path}: no such results file")
    lines = path.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if n == len(lines) and not line.rstrip().endswith("}"):
                return  # the last record was being written when the run was killed
            raise UsageError(f"{path}:{n}: not a JSON record ({e.msg})") from None
        if not isinstance(rec, dict):
            raise UsageError(f"{path}:{n}: a record must be a JSON object")
        missing = [f for f in ("case_id", "backbone", "variant", "metric", "value", "unit", "status") if f not in rec]
        if missing:
            raise UsageError(f"{path}:{n}: record lacks {', '.join(missing)}")
        value = rec["value"]
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value)):
            raise UsageError(f"{path}:{n}: value must be a finite number or null, got {value!r}")
        if rec["status"] not in STATUSES:
            raise UsageError(f"{path}:{n}: status {rec['status']!r} is not one of {', '.join(STATUSES)}")
        yield rec


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All records of a results file or run directory (see :func:`iter_records`)."""
    return list(iter_records(path))


def _git(*args: str) -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """The environment that makes numbers comparable (SPEC section 6, meta.json)."""
    import torch

    from . import __version__

    env: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "package_version": __version__,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain")),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "driver": _nvidia_driver(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "user": _user(),
        "platform": platform.platform(),
    }
    return env


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def _nvidia_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            v = pynvml.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else str(v)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVIDIA driver or library: a CPU machine
        return None


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_meta(run_dir: str | Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``meta.json`` (environment, start time, command line), keeping an earlier start time."""
    run_dir = Path(run_dir)
    path = run_dir / "meta.json"
    old: dict[str, Any] = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            old = {}
    meta = environment() | {
        "start_time": old.get("start_time", now()),
        "end_time": None,
        "command": " ".join(sys.argv),
    }
    if "machine_peak_gflops" in old:  # a run-wide measurement (bench.breakdown): a resumed run keeps it
        meta["machine_peak_gflops"] = old["machine_peak_gflops"]
    meta.update(extra or {})
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None
    return meta


def finish_meta(run_dir: str | Path) -> None:
    """Stamp the end time into ``meta.json``."""
    path = Path(run_dir) / "meta.json"
    meta = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    meta["end_time"] = now()
    path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def read_meta(run_dir: str | Path) -> dict[str, Any]:
    """``meta.json`` of a run, or {} if it has none."""
    path = Path(run_dir) / "meta.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}:{e.lineno}: malformed meta.json ({e.msg})") from None
