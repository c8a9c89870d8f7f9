"""Tidy (long-format) results: one JSON object per (case, metric); how records are made and read.

``results/<run_id>/records.jsonl`` holds the records, ``meta.json`` the environment. This module
defines a record (:func:`record`, :data:`MEASUREMENT_KEY`), reads and validates them
(:func:`read_records`) and writes ``meta.json``; :mod:`bench.run.store` writes the records.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .case import Case
from .errors import UsageError, WriteError

SCHEMA_VERSION = 1

RECORD_FIELDS = (
    "run_id", "case_id", "backbone", "variant", "pipeline", "frames", "batch", "device", "dtype",
    "size", "schedule", "pruner", "recoverer", "runtime", "precision", "metric", "value", "unit", "method", "status", "error",
)  # fmt: skip
STATUSES = ("ok", "oom", "error", "skipped")
# What identifies one measurement: a case can hold several records of a metric (one per FLOP
# counter, memory phase or block), never two with the same key.
MEASUREMENT_KEY = ("case_id", "metric", "method", "phase", "block", "part", "step", "fps_in")  # part, step: *_by_part;
# fps_in: the camera rate of a stream_* record

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
    "mem_by_part": "MiB",
    "achieved_gflops": "GFLOP/s",
    "machine_peak_gflops": "GFLOP/s",
    "flops_train": "GFLOPs",
    "mpjpe": "mm",
    "p_mpjpe": "mm",
    "mpjve": "mm",
    "export_error": "relative max abs difference to eager",
    "compile_s": "s",
    "stream_latency": "ms",
    "stream_rtf": "s of compute per s of video",
    "stream_dropped": "fraction of frames",
    "stream_max_fps": "frames/s",
    "stream_speedup": "x",
    "pose_error": "mm",
    "precision_speedup": "x",
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


def measurement_key(rec: dict[str, Any]) -> tuple[Any, ...]:
    """The record's :data:`MEASUREMENT_KEY`: a run holds each at most once."""
    return tuple(rec.get(k) for k in MEASUREMENT_KEY)


def describe_key(rec: dict[str, Any]) -> str:
    """A measurement in words for messages: ``case_id metric (method, phase=..., block=...)``."""
    extra = [f"{k}={rec[k]}" for k in MEASUREMENT_KEY[3:] if rec.get(k) is not None]
    return f"{rec.get('case_id')} {rec.get('metric')} ({', '.join([str(rec.get('method', '-')), *extra])})"


@dataclass
class RecordScan:
    """What a records file holds: its records, and a last line that is not a record, if any.

    ``cut_line``: the number of a last line cut short by a kill (or garbled); ``cut_case``: the
    case it names, when the fragment still shows one. That case counts as unfinished.
    """

    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    cut_line: int | None = None
    cut_case: str | None = None


_CASE_ID = re.compile(r'"case_id"\s*:\s*"((?:[^"\\]|\\.)*)"')


def scan_records(path: str | Path, *, quiet: bool = False) -> RecordScan:
    """Read and check a ``records.jsonl`` (or a run directory holding one), line by line.

    Every line must be a valid record: otherwise UsageError naming the file and line. A measurement
    (:data:`MEASUREMENT_KEY`) found twice is a UsageError naming both lines. Only a last line that
    is not JSON at all (a write cut short by a kill, or garbage) is left out, with a warning on
    stderr naming file:line (unless ``quiet``); its case, when the fragment names one, is
    ``cut_case`` and counts as unfinished.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "records.jsonl"
    if not path.is_file():
        raise UsageError(f"{path}: no such results file")
    lines = read_text(path).split("\n")  # JSON Lines: only "\n" ends a line (json.dumps escapes the others)
    scan = RecordScan(path)
    seen: dict[tuple[Any, ...], int] = {}
    last = max((n for n, line in enumerate(lines, start=1) if line.strip()), default=0)
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = _parse(line, path, n)
        except _NotJSON as e:
            if n != last:
                raise UsageError(str(e)) from None
            scan.cut_line = n
            m = _CASE_ID.search(line)
            with contextlib.suppress(ValueError):
                scan.cut_case = json.loads(f'"{m.group(1)}"') if m else None
            if not quiet:
                whose = f"case {scan.cut_case}" if scan.cut_case else "its case"
                print(f"warning: {path}:{n}: last line is not a whole record ({str(e).split(': ', 1)[-1]}); "
                      f"ignored, {whose} counts as unfinished (vptbench run --resume measures it again)",
                      file=sys.stderr)  # fmt: skip
            break
        key = measurement_key(rec)
        if key in seen:
            raise UsageError(f"{path}:{n}: {describe_key(rec)} is also on line {seen[key]}; a run holds each "
                             "measurement once")  # fmt: skip
        seen[key] = n
        scan.records.append(rec)
    return scan


class _NotJSON(ValueError):
    """A line that is not JSON at all: an error, or the warning of a cut last line."""


def _parse(line: str, path: Path, n: int) -> dict[str, Any]:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise _NotJSON(f"{path}:{n}: not a JSON record ({e.msg})") from None
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
    return rec


def iter_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a ``records.jsonl`` (or a run directory holding one), checked (see :func:`scan_records`)."""
    yield from scan_records(path).records


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All records of a results file or run directory (see :func:`scan_records`)."""
    return scan_records(path).records


def read_text(path: Path) -> str:
    """A text file of a run (records, done.txt, rules): UsageError naming it if it is not UTF-8."""
    try:
        return path.read_bytes().decode("utf-8")  # as written: no newline translation
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text (byte {e.start}); is it the right file?") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, expected a file") from None
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None


def _git(*args: str, root: Path | None = None) -> str:
    try:
        root = root or Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def git_dirty(root: Path | None = None) -> bool:
    """Whether tracked files differ from the commit (``meta.json``'s ``git_dirty``).

    Untracked files do not count: a plugin file or a scratch script in the checkout (as the docs'
    examples create) leaves the measured code as committed.
    """
    return bool(_git("status", "--porcelain", "--untracked-files=no", root=root))


def cpu_model() -> str:
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
        "git_dirty": git_dirty(),
        "git_commit_date": _git("show", "-s", "--format=%cI", "HEAD"),  # orders runs in `vptbench history`
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "driver": _nvidia_driver(),
        "cpu_model": cpu_model(),
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
    try:
        old = read_meta(run_dir)
    except UsageError:
        old = {}  # a broken meta.json is replaced
    meta = environment() | {
        "start_time": old.get("start_time", now()),
        "end_time": None,
        "command": " ".join(sys.argv),
    }
    if "machine_peak_gflops" in old:  # a run-wide measurement (bench.measure.gemm): a resumed run keeps it
        meta["machine_peak_gflops"] = old["machine_peak_gflops"]
    meta.update(extra or {})
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot write {run_dir / 'meta.json'}: {e.strerror or e}") from None
    _write_json(run_dir / "meta.json", meta)
    return meta


def finish_meta(run_dir: str | Path) -> None:
    """Stamp the end time into ``meta.json``."""
    _write_json(Path(run_dir) / "meta.json", read_meta(run_dir) | {"end_time": now()})


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    """Replace ``path`` atomically: a failed write (disk full) leaves the old file whole."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise WriteError(f"cannot write {path}: {e.strerror or e}; the run stopped: free space, then continue it "
                         "with --resume") from None  # fmt: skip


def read_meta(run_dir: str | Path) -> dict[str, Any]:
    """``meta.json`` of a run, or {} if it has none."""
    path = Path(run_dir) / "meta.json"
    if not path.is_file():
        return {}
    try:
        meta = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}:{e.lineno}: malformed meta.json ({e.msg})") from None
    if not isinstance(meta, dict):
        raise UsageError(f"{path}: meta.json must hold a JSON object, got {type(meta).__name__}")
    return meta
