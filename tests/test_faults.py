"""Fault injection: whatever kills or fails a writer, ``--resume`` ends with each measurement exactly once.

The invariant, for seeded random fault points: after a crash (and a crash of the resume itself)
and a final ``--resume``, ``records.jsonl`` holds exactly the measurement keys of an
uninterrupted run, each once, with the same values. The job is a fake that measures nothing
(records of made-up params/flops), so that a run costs milliseconds; writers are forked from this
process (no interpreter start) and killed inside ``os.write``, a random number of bytes into the
record, the way SIGKILL or a full disk would stop them. One test runs real worker subprocesses.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cloudpickle
import pytest

from bench.core.case import Case
from bench.core.errors import UsageError, WriteError
from bench.core.results import measurement_key, record, scan_records
from bench.run import runner, store
from bench.run.executors import execute
from bench.scenarios import Settings

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the worker subprocesses unpickle FakeJob

CASES = [Case("mixste", v, frames=t, size="tiny") for v in ("rectangle", "single") for t in (27, 81)]
SEEDS = range(6)


@dataclasses.dataclass(frozen=True)
class FakeJob:
    """Four records per case, made up from the case id (deterministic); optionally slow."""

    delay: float = 0.0
    kill_in: str = ""  # a case id: the process running it is SIGKILLed in the middle of a write

    def records(self, case, run_id, run_dir):
        if case.case_id == self.kill_in:
            kill_at(2, random.Random(0))  # in its second write: the part already holds a record
        yield from fake_records(case, run_id, self.delay)

    def expected(self, case):
        return ["params", "flops"]


def fake_records(case, run_id, delay=0.0):
    value = sum(map(ord, case.case_id))
    yield record(run_id, case, "params", value)
    for method in ("fvcore", "torch", "paper"):
        time.sleep(delay)
        yield record(run_id, case, "flops", value / 7, method=method)


def kill_at(k: int, rnd: random.Random, how: str = "kill") -> None:
    """From now on in this process, the k-th ``os.write`` writes a random part of its bytes, then dies.

    ``how``: "kill" SIGKILLs the process; "enospc" returns the short count and fails the next
    write with ENOSPC, as a disk filling up does.
    """
    real, calls = os.write, [0]

    def write(fd, data):
        calls[0] += 1
        if calls[0] == k:
            n = real(fd, bytes(data)[: rnd.randrange(len(data) + 1)])
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            return n
        if how == "enospc" and calls[0] > k:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    os.write = write  # type: ignore[assignment]  # only ever in a forked child or a worker


def forked(fn: Callable[[], object], *, report: Path | None = None) -> int:
    """Run ``fn`` in a forked child: its exit code (3 WriteError, 2 UsageError), or -signal if killed."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 0
        try:
            fn()
        except WriteError as e:
            code = 3
            report and report.write_text(str(e))
        except UsageError as e:
            code = 2
            report and report.write_text(str(e))
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def run_executor(run_dir: Path, *, resume: bool, job=FakeJob()) -> None:
    execute(CASES, run_dir, run_id="r", job=job, executor="inline", resume=resume, progress=False)


def run_runner(run_dir: Path, *, resume: bool) -> None:
    runner.run_matrix(CASES, run_dir, run_id="r", metrics=["params", "flops"], resume=resume, progress=False,
                      settings=Settings())  # fmt: skip


@pytest.fixture
def fake_measure(monkeypatch):
    """The inline runner measures with the fake too (forked children inherit the patch)."""
    monkeypatch.setattr(runner, "measure_case", lambda case, metrics, run_id, settings, **kw: fake_records(case, run_id))


def measurements(run_dir: Path) -> list[tuple]:
    scan = scan_records(run_dir)  # raises on a duplicate
    assert scan.cut_line is None
    return sorted((measurement_key(r), r["value"], r["status"]) for r in scan.records)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[tuple]:
    """The measurements of an uninterrupted run."""
    d = tmp_path_factory.mktemp("reference")
    run_executor(d, resume=False)
    return measurements(d)


def assert_whole(run_dir: Path, reference: list[tuple]) -> None:
    assert measurements(run_dir) == reference  # each key once, nothing lost, nothing extra
    assert store.finished_case_ids(run_dir) == {c.case_id for c in CASES}
    assert not (run_dir / "parts").exists()


# --------------------------------------------------------------------------- SIGKILL mid-write


@pytest.mark.parametrize("path", ["executor", "runner"])
@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_mid_write_then_resume_gives_each_measurement_once(tmp_path, reference, seed, path, fake_measure):
    run = run_executor if path == "executor" else run_runner
    rnd = random.Random(seed)
    first, second = rnd.randint(1, 40), rnd.randint(1, 40)  # a run makes ~36 writes (parts, records, done)

    def crashing(k: int, resume: bool) -> Callable[[], None]:
        def go() -> None:
            kill_at(k, rnd)
            run(tmp_path, resume=resume)

        return go

    assert forked(crashing(first, False)) in (-signal.SIGKILL, 0)
    assert forked(crashing(second, True)) in (-signal.SIGKILL, 0)  # the resume is killed too
    run(tmp_path, resume=True)
    assert_whole(tmp_path, reference)


def test_a_worker_killed_mid_write_is_repaired_by_resume(tmp_path, reference):
    """Real subprocess workers (the local executor): one SIGKILLs itself inside a write of its part."""
    victim = CASES[1].case_id
    out = execute([CASES[1]], tmp_path, run_id="r", job=FakeJob(kill_in=victim), executor="local", progress=False)
    assert list(out.failed) == [victim] and "SIGKILL" in out.failed[victim]
    assert scan_records(tmp_path).cut_line is None  # the parent closed the part: whole records only
    execute(CASES, tmp_path, run_id="r", job=FakeJob(), executor="inline", resume=True, progress=False)
    assert_whole(tmp_path, reference)


# --------------------------------------------------------------------------- failing writes


@pytest.mark.parametrize("path", ["executor", "runner"])
@pytest.mark.parametrize("seed", SEEDS)
def test_a_full_disk_stops_the_run_whole_and_resume_repairs_it(tmp_path, reference, seed, path, fake_measure):
    run = run_executor if path == "executor" else run_runner
    limit = random.Random(seed).randint(200, 2500)  # bytes: records.jsonl of the whole run is ~3 kB

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))  # writes beyond fail: EFBIG
        run(tmp_path, resume=False)

    report = tmp_path.parent / f"{tmp_path.name}.err"
    code = forked(limited, report=report)
    assert code in (0, 3)
    if code == 3:
        message = report.read_text()
        assert "\n" not in message and "File too large" in message and "--resume" in message
    records = tmp_path / "records.jsonl"
    assert not records.exists() or not records.read_bytes() or records.read_bytes().endswith(b"\n")
    measurements_so_far = scan_records(tmp_path).records if records.exists() else []
    assert len({measurement_key(r) for r in measurements_so_far}) == len(measurements_so_far)
    run(tmp_path, resume=True)
    assert_whole(tmp_path, reference)


def test_a_write_that_fails_part_way_is_undone(tmp_path, reference):
    def filling() -> None:
        kill_at(9, random.Random(1), how="enospc")
        run_executor(tmp_path, resume=False)

    report = tmp_path.parent / "enospc.err"
    assert forked(filling, report=report) == 3
    assert "No space left on device" in report.read_text()
    assert (tmp_path / "records.jsonl").read_bytes()[-1:] in (b"", b"\n")  # no half line
    run_executor(tmp_path, resume=True)
    assert_whole(tmp_path, reference)


# --------------------------------------------------------------------------- concurrent writers


def _wait_for_holder(run_dir: Path) -> None:
    lock = run_dir / store.LOCK
    for _ in range(500):
        if lock.is_file() and lock.read_text().strip():
            return
        time.sleep(0.01)
    raise AssertionError("the first writer never took the lock")


@pytest.mark.parametrize("resume", [False, True])
def test_a_second_writer_is_refused_naming_the_holder(tmp_path, reference, resume):
    if resume:
        forked(lambda: (kill_at(12, random.Random(0)), run_executor(tmp_path, resume=False)))
    slow = FakeJob(delay=0.02)
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the first writer)
        try:
            run_executor(tmp_path, resume=resume, job=slow)
        finally:
            os._exit(0)
    _wait_for_holder(tmp_path)
    report = tmp_path.parent / f"second-{resume}.err"
    assert forked(lambda: run_executor(tmp_path, resume=True, job=slow), report=report) == 2
    message = report.read_text()
    assert f"being written by pid {pid} on {socket.gethostname()}" in message and "\n" not in message
    os.waitpid(pid, 0)
    assert_whole(tmp_path, reference)


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, reference, capfd):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / store.LOCK).write_text(f'{{"pid": {pid}, "host": "{socket.gethostname()}", "start_time": "t0"}}\n')
    run_executor(tmp_path, resume=False)
    err = capfd.readouterr().err
    assert f"taking over the lock of pid {pid}" in err and "has ended" in err
    assert_whole(tmp_path, reference)
    assert (tmp_path / store.LOCK).read_text() == ""  # released: no holder named any more
