"""The run directory: where records are written, how parts close, how a run is continued.

    run_dir/records.jsonl    the records (bench.results reads and validates them)
    run_dir/done.txt         one line per finished case: --resume skips these
    run_dir/meta.json        the environment and the run's options (bench.results.write_meta)
    run_dir/parts/<case>-<token>/   one per case being run elsewhere (a subprocess, a Slurm job)
    run_dir/logs/            the local executor's per-case logs

Everything that writes into a run directory lives here. :class:`RecordWriter` appends records,
flushed and fsynced one by one, so an interrupted run loses nothing; :func:`mark_done` closes a
case.

How records reach ``records.jsonl`` without loss or duplication, whatever runs concurrently:
every case run by an executor writes its records, flushed one by one, into its own *part*
directory ``run_dir/parts/<case>-<token>/records.jsonl`` (a fresh token per submission). When
the case ends, the process that ran it takes an exclusive lock (``fcntl.lockf`` on
``run_dir/.lock``, which NFS honours), appends the whole part to ``records.jsonl``, marks the
case in ``done.txt`` and deletes the part directory, all under the lock (:func:`close_part`). A
part is therefore closed exactly once: if the job is killed before closing it (SIGKILL, the OOM
killer, a time limit), the process watching the jobs finds the part still there, and under the
same lock appends what the job had measured plus one ``status: error`` record per missing metric
whose error names the job's log, and deletes the part. That case is not marked done.

Resuming (:func:`prepare_resume`). A kill can land anywhere: between two records of a case, in
the middle of writing a record, or in the middle of writing the ``done.txt`` line. ``--resume``
therefore trusts only ``done.txt``: it first closes the parts left by jobs nobody watched
(:func:`close_orphans`), then every unfinished case of the matrix is redone from scratch after
its partial records, error records included, are removed from ``records.jsonl`` (the file is
rewritten and atomically replaced): a (case, metric) is never in ``records.jsonl`` twice.
Redoing a partial case costs its measurement time again, but mixing records of a killed attempt
with a new one would give some (case, metric) twice, with values taken under different
conditions. Records of cases outside the matrix are never touched. A run directory that already
holds records is only continued with ``--resume``, never appended to or overwritten by accident
(:func:`ensure_fresh`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .case import Case
from .errors import UsageError
from .results import failure, read_records

PARTS = "parts"


# --------------------------------------------------------------------------- records and done.txt


class RecordWriter:
    """Appends records to ``records.jsonl`` and flushes each one to disk at once."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.run_dir / "records.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        except OSError as e:
            raise UsageError(f"cannot write results to {self.run_dir}: {e.strerror or e}") from None

    def write(self, rec: dict[str, Any]) -> None:
        self._fh.write(json.dumps(rec, allow_nan=False, default=_jsonable) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def write_all(self, recs: Iterable[dict[str, Any]]) -> None:
        for r in recs:
            self.write(r)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def finished_case_ids(run_dir: str | Path) -> set[str]:
    """Cases of a run that are complete: their closing ``done`` marker was written."""
    marker = Path(run_dir) / "done.txt"
    if not marker.is_file():
        return set()
    return {line.strip() for line in marker.read_text(encoding="utf-8").splitlines() if line.strip()}


def mark_done(run_dir: str | Path, case_id: str) -> None:
    """Record that every metric of ``case_id`` was written (``--resume`` skips it)."""
    with open(Path(run_dir) / "done.txt", "a", encoding="utf-8") as fh:
        fh.write(case_id + "\n")
        fh.flush()
        os.fsync(fh.fileno())


# --------------------------------------------------------------------------- parts (one per case run)


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Exclusive lock on the run's results (processes on several hosts may append)."""
    with open(run_dir / ".lock", "a+") as fh:
        fcntl.lockf(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(fh, fcntl.LOCK_UN)


def drop_cut_line(path: Path) -> None:
    """Cut off a last line that a killed writer left unfinished, so the next record starts a line.

    Closers write whole records under the lock, so an unfinished line is never a record (readers
    skip it too); left in place it would fuse with the next record into one malformed line.
    """
    if not path.is_file():
        return
    with open(path, "rb+") as fh:
        end = fh.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:
            step = min(pos, 1 << 16)
            fh.seek(pos - step)
            chunk = fh.read(step)
            if pos == end and chunk.endswith(b"\n"):
                return
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                fh.truncate(pos - step + nl + 1)
                return
            pos -= step
        fh.truncate(0)


def safe_name(case: Case) -> str:
    """The case id as a file name."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", case.case_id).strip("_")


def part_name(case: Case) -> str:
    return f"{safe_name(case)}-{uuid.uuid4().hex[:8]}"


def new_part(run_dir: Path, case: Case, run_id: str, expected: list[str], log: str) -> Path:
    part = run_dir / PARTS / part_name(case)
    part.mkdir(parents=True)
    info = {"case": dataclasses.asdict(case), "run_id": run_id, "expected": expected, "log": log}
    (part / "part.json").write_text(json.dumps(info) + "\n", encoding="utf-8")
    return part


def note_log(run_dir: Path, part: Path, log: str) -> None:
    """Remember where the job's log is (known only once submitted), for closing the part later.

    Under the lock, and replaced atomically: the job may be closing its part at this moment.
    """
    with locked(run_dir):
        path = part / "part.json"
        if not path.is_file():
            return  # the job has finished and closed its part already
        info = json.loads(path.read_text(encoding="utf-8"))
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info | {"log": log}) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def close_part(run_dir: Path, part: Path, *, why: str | None = None, status: str = "error") -> bool:
    """Move a part's records into ``records.jsonl``, exactly once; False if it was already closed.

    ``why`` None: the case finished, it is marked done. Otherwise the case failed: one failure
    record (``status``, error ``why``) for each expected metric that has no record yet, and the
    case stays unfinished so that ``--resume`` runs it again.
    """
    with locked(run_dir):
        if not (part / "part.json").is_file():
            return False  # closed by the job itself (or by another watcher)
        info = json.loads((part / "part.json").read_text(encoding="utf-8"))
        case = Case(**info["case"])
        recs = read_records(part) if (part / "records.jsonl").is_file() else []
        if why is not None:
            have = {r["metric"] for r in recs}
            recs += [failure(info["run_id"], case, m, why, status=status) for m in info["expected"] if m not in have]
        drop_cut_line(run_dir / "records.jsonl")
        with RecordWriter(run_dir) as writer:
            writer.write_all(recs)
        if why is None:
            mark_done(run_dir, case.case_id)
        shutil.rmtree(part)
    return True


def close_orphans(run_dir: Path) -> int:
    """Close the parts that jobs of an earlier submission left open (they died unwatched)."""
    n = 0
    for part in sorted((run_dir / PARTS).glob("*/part.json")):
        log = json.loads(part.read_text(encoding="utf-8")).get("log") or "unknown"
        n += close_part(run_dir, part.parent, why=f"the job ended without finishing (found by --resume); log: {log}")
    return n


# --------------------------------------------------------------------------- fresh runs and resumed ones


def ensure_fresh(run_dir: str | Path) -> None:
    """UsageError if ``run_dir`` already holds a run (continue it with --resume instead)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out {run_dir} is a file, not a directory")
    held = [n for n in ("records.jsonl", "done.txt") if (run_dir / n).is_file() and (run_dir / n).stat().st_size]
    if held:
        raise UsageError(f"{run_dir} already holds a run ({held[0]}); pass --resume to continue it or choose another --out")


def prepare_resume(run_dir: str | Path, case_ids: Iterable[str]) -> set[str]:
    """Make ``run_dir`` ready to continue: returns the finished case ids; partial cases are cleared.

    Repairs a ``done.txt`` line cut short by a kill, and removes from ``records.jsonl`` the records
    of the cases in ``case_ids`` that are not finished (and a last line cut short), so that they can
    be measured again without duplicates.
    """
    run_dir = Path(run_dir)
    _drop_torn_tail(run_dir / "done.txt")
    done = finished_case_ids(run_dir)
    redo = set(case_ids) - done
    path = run_dir / "records.jsonl"
    if not path.is_file():
        return done
    torn = not path.read_text(encoding="utf-8").endswith("\n")
    records = read_records(path)  # validated line by line; a last record cut short is left out
    kept = [r for r in records if r["case_id"] not in redo]
    if torn or len(kept) < len(records):
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in kept)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    return done


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line without its newline (a write interrupted by a kill) off ``path``."""
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        path.write_text(text[: text.rfind("\n") + 1], encoding="utf-8")
