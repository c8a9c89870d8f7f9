"""The run directory: where records are written, how parts close, how a run is continued.

    run_dir/records.jsonl    the records (bench.core.results reads and validates them)
    run_dir/done.txt         one line per finished case: --resume skips these
    run_dir/meta.json        the environment and the run's options (bench.core.results.write_meta)
    run_dir/parts/<case>-<token>/   one per case being run elsewhere (a subprocess, a Slurm job)
    run_dir/logs/            the local executor's per-case logs
    run_dir/writer.lock      held by the run's one writer (:func:`writer`), naming it
    run_dir/.lock            the short lock of one append of a part (:func:`locked`)

Everything that writes into a run directory lives here. :class:`RecordWriter` appends records,
flushed and fsynced one by one, so an interrupted run loses nothing; a write that fails (disk
full) is cut back and raised as :class:`~bench.core.errors.WriteError`, so no half record is ever
left; :func:`mark_done` closes a case.

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
therefore trusts a case as finished only if ``done.txt`` lists it and its records are whole: it
first closes the parts left by jobs nobody watched
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
import datetime as _dt
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.case import Case
from ..core.errors import UsageError, WriteError
from ..core.results import RecordScan, failure, measurement_key, now, read_text, scan_records

PARTS = "parts"


# --------------------------------------------------------------------------- records and done.txt


class RecordWriter:
    """Appends records to ``records.jsonl``, each one on disk (fsynced) before the next."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "records.jsonl"
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._fd = _open_append(self.path)
        except OSError as e:
            raise UsageError(f"cannot write results to {self.run_dir}: {e.strerror or e}") from None

    def write(self, rec: dict[str, Any]) -> None:
        """Append one record; a write that fails is undone and raised as WriteError."""
        append_whole(self.path, self._fd, (json.dumps(rec, allow_nan=False, default=_jsonable) + "\n").encode())

    def write_all(self, recs: Iterable[dict[str, Any]]) -> None:
        for r in recs:
            self.write(r)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def append_whole(path: Path, fd: int, data: bytes) -> None:
    """Append ``data`` to ``path`` (open as ``fd`` with O_APPEND) and fsync it; all of it or nothing.

    Unbuffered ``os.write``: a write that fails part way (disk full, a file size limit) is cut
    off again, so that no half line is left to fuse with the next one, and is raised as a
    one-line WriteError. Cutting a file shorter needs no space.
    """
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise WriteError(f"cannot write {path}: {e.strerror or e}; the run stopped: free space, then continue "
                         "it with --resume") from None  # fmt: skip


def _open_append(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)


def finished_case_ids(run_dir: str | Path) -> set[str]:
    """Cases of a run that are complete: their closing ``done`` marker was written."""
    marker = Path(run_dir) / "done.txt"
    if not marker.is_file():
        return set()
    return {line.strip() for line in read_text(marker).splitlines() if line.strip()}


def mark_done(run_dir: str | Path, case_id: str) -> None:
    """Record that every metric of ``case_id`` was written (``--resume`` skips it)."""
    path = Path(run_dir) / "done.txt"
    fd = _open_append(path)
    try:
        append_whole(path, fd, (case_id + "\n").encode())
    finally:
        os.close(fd)


def _replace(path: Path, lines: Iterable[str]) -> None:
    """Rewrite ``path`` atomically (a temporary file, then rename); WriteError if that fails."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(lines)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise WriteError(f"cannot write {path}: {e.strerror or e}; free space and run --resume again") from None


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
    leave it out too); left in place it would fuse with the next record into one malformed line.
    A whole record that lacks only its newline is kept and given one.
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
                start = pos - step + nl + 1
                break
            pos -= step
        else:
            start = 0
        fh.seek(start)
        if _is_record(fh.read()):
            fh.write(b"\n")
        else:
            fh.truncate(start)


def _is_record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


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
    case stays unfinished so that ``--resume`` runs it again. All or nothing: if a write fails
    (WriteError), ``records.jsonl`` and ``done.txt`` are cut back to what they held and the part
    stays, for ``--resume`` to close.
    """
    with locked(run_dir):
        if not (part / "part.json").is_file():
            return False  # closed by the job itself (or by another watcher)
        info = json.loads((part / "part.json").read_text(encoding="utf-8"))
        case = Case(**info["case"])
        # A part's last record may be cut short by the kill that ended its job: left out quietly.
        recs = scan_records(part, quiet=True).records if (part / "records.jsonl").is_file() else []
        records, done = run_dir / "records.jsonl", run_dir / "done.txt"
        drop_cut_line(records)
        if why is not None:
            have = {r["metric"] for r in recs}
            recs += [failure(info["run_id"], case, m, why, status=status) for m in info["expected"] if m not in have]
            # An earlier attempt of the case may have left records (closed unwatched, then this one was
            # too): a measurement is never appended twice; --resume clears an unfinished case anyway.
            there = {measurement_key(r) for r in scan_records(records, quiet=True).records} if records.is_file() else set()
            recs = [r for r in recs if measurement_key(r) not in there]
        sizes = {p: p.stat().st_size for p in (records, done) if p.is_file()}
        try:
            with RecordWriter(run_dir) as writer:
                writer.write_all(recs)
            if why is None:
                mark_done(run_dir, case.case_id)
        except WriteError:
            for p in (records, done):
                with contextlib.suppress(OSError):
                    os.truncate(p, sizes.get(p, 0)) if p.is_file() else None
            raise
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


def prepare_resume(
    run_dir: str | Path, case_ids: Iterable[str], expected: Mapping[str, Sequence[str]] | None = None
) -> set[str]:
    """Make ``run_dir`` ready to continue: returns the finished case ids; the others are cleared.

    A case of ``case_ids`` counts as finished only if ``done.txt`` lists it *and* its records are
    whole: no cut last line names it, and it has a record of each metric ``expected[case_id]``
    lists (any record at all when ``expected`` is None). So a records file that was emptied,
    deleted or cut short gets its cases measured again whatever ``done.txt`` says. The records of
    the cases to redo (error records included) are removed from ``records.jsonl``, a cut last line
    with them, and ``done.txt`` keeps only the finished cases; both are replaced atomically.
    """
    run_dir = Path(run_dir)
    ids = list(dict.fromkeys(case_ids))
    done_path, path = run_dir / "done.txt", run_dir / "records.jsonl"
    if done_path.is_file():
        _drop_torn_tail(done_path)
    listed = finished_case_ids(run_dir)
    scan = scan_records(path) if path.is_file() else RecordScan(path)
    have: dict[str, set[str]] = {}
    for r in scan.records:
        have.setdefault(r["case_id"], set()).add(r["metric"])
    lacking = [
        c for c in ids if c in listed and (c == scan.cut_case or c not in have
                                           or (expected is not None and set(expected.get(c, ())) - have[c]))
    ]  # fmt: skip
    if lacking:
        print(f"{run_dir}: {len(lacking)} case(s) listed in done.txt lack records (e.g. {lacking[0]}); "
              "measuring them again", file=sys.stderr)  # fmt: skip
    done = listed - set(lacking)
    redo = set(ids) - done
    kept = [r for r in scan.records if r["case_id"] not in redo]
    torn = path.is_file() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
    if scan.cut_line or torn or len(kept) < len(scan.records):
        _replace(path, (json.dumps(r) + "\n" for r in kept))
    if lacking:
        _replace(done_path, (c + "\n" for c in sorted(done)))
    return done


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line without its newline (a write interrupted by a kill) off ``path``."""
    text = read_text(path)
    if text and not text.endswith("\n"):
        _replace(path, [text[: text.rfind("\n") + 1]])


# --------------------------------------------------------------------------- one writer per run directory


LOCK = "writer.lock"  # the run-level lock; ``.lock`` is the short lock of one append (:func:`locked`)
_held: dict[Path, int] = {}  # run directories this process holds -> nesting depth


@contextlib.contextmanager
def writer(run_dir: str | Path, *, quiet: bool = False) -> Iterator[None]:
    """Hold ``run_dir`` as its only writer for the block: UsageError if another process holds it.

    An exclusive ``fcntl.lockf`` lock on ``run_dir/writer.lock`` (NFS honours it), held by
    ``run``, ``run --resume``, ``accuracy`` and ``merge --out`` for their whole run; the file names
    the holder (pid, host, start time, command) so that a refused writer can say who it is. The
    kernel drops the lock of a process that dies, so a lock file still naming a process that is
    gone is taken over (with a message). Nested use in one process is allowed (the command holds
    the directory, the library functions it calls hold it again).
    """
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        _held[run_dir] += 1
        try:
            yield
        finally:
            _held[run_dir] -= 1
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out {run_dir} is a file, not a directory")
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise UsageError(f"cannot write to --out {run_dir}: {e.strerror or e}") from None
    try:
        _acquire(run_dir, fd, quiet)
        _held[run_dir] = 1
        try:
            yield
        finally:
            del _held[run_dir]
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # no holder any more; then the lock goes with the descriptor
            if created and {p.name for p in run_dir.iterdir()} <= {LOCK}:
                with contextlib.suppress(OSError):  # refused before writing anything: leave no trace
                    (run_dir / LOCK).unlink()
                    run_dir.rmdir()
    finally:
        os.close(fd)


def _acquire(run_dir: Path, fd: int, quiet: bool) -> None:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _holder(fd)
        raise UsageError(f"{run_dir} is being written by {_describe(holder)}; one writer per run directory: wait "
                         "for it to end or choose another --out") from None  # fmt: skip
    before = _holder(fd)
    if before and not quiet:
        gone = "has ended" if before.get("host") == socket.gethostname() and not _alive(before.get("pid")) else (
            "no longer holds its lock")  # fmt: skip
        print(f"{run_dir}: taking over the lock of {_describe(before)}, which {gone} without releasing it",
              file=sys.stderr)  # fmt: skip
    me = {"pid": os.getpid(), "host": socket.gethostname(), "start_time": now(), "command": " ".join(sys.argv)}
    with contextlib.suppress(OSError):  # the names are for messages; the lock itself is held
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        os.fsync(fd)


def _holder(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        info = json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {"pid": "?"}
    return info if isinstance(info, dict) else {"pid": "?"}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process"
    what = f" ({holder['command']})" if holder.get("command") else ""
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('start_time', '?')}{what}"


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def default_run_id(prefix: str) -> str:
    """A new run's id: ``<prefix>-YYYYmmdd-HHMMSS``."""
    return f"{prefix}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def check_writable(run_dir: Path, option: str = "--out") -> None:
    """UsageError unless ``run_dir`` (given as ``option``) can be created and written to (checked before
    anything is measured)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"cannot write to {option} {run_dir}: {e.strerror or e}") from None
