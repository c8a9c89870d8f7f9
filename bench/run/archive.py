"""The history directory: an append-only copy of every finished run, what ``vptbench history DIR`` reads.

    DIR/<run_id>/records.jsonl    the run's records, as the run left them
    DIR/<run_id>/meta.json        its environment: commit, commit date, machine, start and end time
    DIR/<run_id>/writer.lock      the one-writer lock taken while the copy is made

``vptbench run --history DIR`` calls :func:`archive_run` once the run has finished. A run already
in DIR is never rewritten: a second run with the same id (``--out`` reused after deleting it, a
resumed run archived again) goes to ``DIR/<run_id>.2``, ``.3``, ... A name is claimed by creating
its directory (atomic, also on NFS), then the copy is made under that directory's one-writer lock
(:func:`bench.run.store.writer`), so two runs archiving at once never share one. Files are
written to a temporary name and renamed, so a reader never sees half a copy; a copy that fails
leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from ..core.errors import UsageError
from ..core.results import read_meta
from .store import LOCK, check_writable, writer

FILES = ("records.jsonl", "meta.json")


def archive_run(run_dir: str | Path, history: str | Path) -> Path:
    """Copy ``run_dir``'s records and meta.json into ``history/<run_id>`` (a new name if that is taken)."""
    run_dir, history = Path(run_dir), Path(history)
    if not (run_dir / "records.jsonl").is_file():
        raise UsageError(f"{run_dir}: not a run directory (no records.jsonl) to copy into --history {history}")
    run_id = str(read_meta(run_dir).get("run_id") or run_dir.name)
    try:
        history.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot write to --history {history}: {e.strerror or e}") from None
    dest = _claim(history, run_id)
    try:
        with writer(dest, quiet=True):
            for name in FILES:
                if (run_dir / name).is_file():
                    tmp = dest / f".{name}.tmp"
                    shutil.copyfile(run_dir / name, tmp)
                    os.replace(tmp, dest / name)
    except (OSError, UsageError) as e:
        shutil.rmtree(dest, ignore_errors=True)
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise UsageError(f"cannot copy the run into --history {dest}: {why}") from None
    with contextlib.suppress(OSError):  # the lock did its job; a reader needs only the two files
        (dest / LOCK).unlink()
    return dest


def _claim(history: Path, run_id: str) -> Path:
    for n in range(1, 10_000):
        dest = history / (run_id if n == 1 else f"{run_id}.{n}")
        try:
            dest.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            raise UsageError(f"cannot write to --history {history}: {e.strerror or e}") from None
        return dest
    raise UsageError(f"--history {history}: 9,999 runs named {run_id} already; choose another run id (--out)")


def check_history(history: str | Path) -> None:
    """UsageError unless ``history`` can hold runs (checked before anything is measured)."""
    history = Path(history)
    if history.exists() and not history.is_dir():
        raise UsageError(f"--history {history} is a file, not a directory")
    check_writable(history, "--history")
