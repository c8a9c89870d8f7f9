"""Run a matrix of cases one process per case: here (``local``), on Slurm (``slurm``), or inline.

    job = BenchJob(metrics=("params", "flops"))
    execute(cases, "results/r1", run_id="r1", job=job, executor="local", workers=2)

A *job* (:mod:`bench.run.jobs`) is the work done for one case. Executors:

- ``inline``: every case in this process, in order.
- ``local`` (the default): every case in a fresh process, ``workers`` at a time, so that the
  peak memory and allocator state of one case never leak into the next. The processes are forked
  from one zygote that imported torch and ran nothing (:mod:`bench.run.worker`), as clean as a new
  interpreter without paying torch's import per case. CPU threads are divided
  among the workers (``torch.set_num_threads`` and ``OMP_NUM_THREADS`` in the child); cases on
  ``cuda`` get one GPU per worker through ``CUDA_VISIBLE_DEVICES`` (at most one worker per GPU).
  Workers running side by side share memory bandwidth and caches: for latency figures that
  compare across cases keep ``workers=1``.
- ``slurm``: one submitit job per case, submitted as job arrays and watched through ``squeue``
  (:mod:`bench.run.slurm`); stopping the run cancels its jobs unless ``detach``.
  ``cluster="local"`` in :class:`~bench.run.slurm.SlurmOptions` runs the same submitit code path
  on this machine (tests, debugging).

Every case runs as a :class:`~bench.run.task.CaseTask` into its own part of the run directory,
which it closes itself when it ends; a case whose process was killed has its part closed by the
process watching it. How parts reach ``records.jsonl`` exactly once, and what ``--resume`` redoes, is
:mod:`bench.run.store`'s. ``--resume`` refuses while Slurm jobs of the same run are still queued.

``--shard i/n`` (:func:`shard`) picks every n-th case of the sorted case ids, starting at the
i-th: shards are balanced (sizes differ by at most one), mix the backbones, and do not depend
on the order in which the matrix was listed. ``vptbench merge`` (:mod:`bench.run.merge`) combines
shard runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.case import Case
from ..core.errors import UsageError, WriteError
from ..core.progress import read_progress
from ..core.results import finish_meta, read_records, write_meta
from ..measure import allocator
from ..scenarios import METRIC_GROUPS, Settings
from . import budget, worker
from .jobs import BenchJob, Job
from .outcome import Outcome, finish, progress_bar
from .runner import RunSummary
from .slurm import SlurmOptions, check_no_live_jobs, check_slurm, run_slurm, slurm_options
from .store import PARTS, close_orphans, close_part, prepare_resume, safe_name, writer
from .task import new_task
from .worker import WRITE_FAILED

EXECUTORS = ("inline", "local", "slurm")


# --------------------------------------------------------------------------- shards


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 1 <= i <= n; UsageError otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec or "")
    i, n = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    if not m or n < 1 or not 1 <= i <= n:
        raise UsageError(f"--shard {spec!r}: expected i/n with 1 <= i <= n, e.g. 1/4")
    return i, n


def shard(cases: Sequence[Case], spec: str) -> list[Case]:
    """The i-th of n deterministic slices of ``cases`` (``spec`` = "i/n", 1-based).

    Positions in the sorted list of case ids, taken every n-th from the i-th: the slices are
    balanced, cover every case exactly once, and do not depend on the order of ``cases``. The
    cases keep their given order within the slice. Pass resolved cases (their ids are complete).
    """
    i, n = parse_shard(spec)
    ids = sorted({c.case_id for c in cases})
    mine = set(ids[i - 1 :: n])
    return [c for c in cases if c.case_id in mine]


# --------------------------------------------------------------------------- execute


def execute(
    cases: Sequence[Case],
    run_dir: str | Path,
    *,
    run_id: str,
    job: Job,
    executor: str = "local",
    workers: int = 1,
    slurm: SlurmOptions | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Outcome:
    """Run ``job`` for every case with ``executor``; records land in ``run_dir/records.jsonl``.

    A failed or killed case becomes error records naming its log, and the others go on. With
    ``resume``, cases already in ``done.txt`` are skipped and the others are measured afresh
    (their earlier records removed). ``meta.json`` is the caller's (:func:`run_cases` writes it).
    """
    if executor not in EXECUTORS:
        raise UsageError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    slurm = slurm or SlurmOptions()
    if executor == "slurm":
        check_slurm(slurm, cases, job)
    run_dir = Path(run_dir).resolve()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot write results to {run_dir}: {e.strerror or e}") from None
    with writer(run_dir):
        outcome = Outcome()
        if resume:
            check_no_live_jobs(run_dir)  # a job still running would close its part after we redo its case
            closed = close_orphans(run_dir)
            if closed and progress:
                print(f"closed {closed} part(s) left by jobs that died unwatched", file=sys.stderr)
            expected = {c.case_id: list(job.expected(c)) for c in cases}
            done = prepare_resume(run_dir, [c.case_id for c in cases], expected)  # unfinished cases start afresh
            outcome.skipped = [c.case_id for c in cases if c.case_id in done]
            cases = [c for c in cases if c.case_id not in done]
        if not cases:
            return outcome
        run = {"inline": _run_inline, "local": _run_local, "slurm": run_slurm}[executor]
        run(cases, run_dir, run_id, job, workers, slurm, progress, outcome)
        with contextlib.suppress(OSError):
            (run_dir / PARTS).rmdir()  # only when empty: open parts are evidence of jobs still to close
        return outcome


def _run_inline(
    cases: Sequence[Case], run_dir: Path, run_id: str, job: Job, workers: int, slurm: SlurmOptions,
    progress: bool, outcome: Outcome,
) -> None:  # fmt: skip
    with progress_bar(len(cases), progress, "inline") as bar:
        for case in cases:
            bar.set_postfix_str(case.case_id)
            task = new_task(case, run_dir, run_id, job, "", None)
            try:
                task()
                finish(outcome, case, None, progress)
            except (UsageError, KeyboardInterrupt):
                raise
            except Exception as e:  # the task closed its part with an error record; the others go on
                finish(outcome, case, f"{type(e).__name__}: {e}", progress)
            bar.update()


# ---- local: a fresh subprocess per case


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _gpu_ids() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [s.strip() for s in visible.split(",") if s.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _label(case: Case, part: Path) -> str:
    """A running case on the bar: backbone/variant and its latest progress line, if any."""
    text = read_progress(part)
    return f"{case.backbone}/{case.variant}" + (f" {text}" if text else "")


def _last_line(log: Path) -> str:
    """The worker's one-line WriteError message from the end of its log, without its prefix."""
    with contextlib.suppress(OSError):
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        if lines and lines[-1].startswith("vptbench worker: error: "):
            return lines[-1].removeprefix("vptbench worker: error: ")
    return ""


def _describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exited with code {rc}"


def _allocator_env(job: Job) -> dict[str, str]:
    """The environment that gives the job's processes its allocator before they start (tcmalloc or
    jemalloc preloaded; nothing for glibc's settings, which each case sets itself)."""
    name = getattr(getattr(job, "settings", None), "allocator", None)
    return allocator.environment(name) if name else {}


def _run_local(
    cases: Sequence[Case], run_dir: Path, run_id: str, job: Job, workers: int, slurm: SlurmOptions,
    progress: bool, outcome: Outcome,
) -> None:  # fmt: skip
    import cloudpickle  # submitit's own pickler: it carries classes defined in tests or notebooks

    gpus: list[str | None] = [None] * workers
    if any(c.device == "cuda" for c in cases):
        ids = _gpu_ids()
        if ids and workers > len(ids):
            print(f"--workers {workers}: only {len(ids)} GPU(s), one worker per GPU", file=sys.stderr)
            workers = len(ids)
        gpus = [ids[k] if ids else None for k in range(workers)]
    threads = max(1, _cpus() // workers)
    (run_dir / "logs").mkdir(exist_ok=True)
    pending = list(cases)
    running: dict[int, tuple[Any, Case, Path, Path]] = {}  # slot -> (process, case, part, log)
    shown, shown_at = "", 0.0  # what the bar last showed of the running cases, and when
    thread_env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} | _allocator_env(job)
    # One zygote forks every case's fresh process: torch is imported once, not once per case.
    server = worker.fork_server(thread_env)
    with contextlib.ExitStack() as stack, progress_bar(len(cases), progress, "local") as bar:
        if server is not None:
            stack.callback(server.close)
        try:
            while pending or running:
                for slot in range(workers):
                    if slot in running or not pending:
                        continue
                    case = pending.pop(0)
                    log = run_dir / "logs" / f"{safe_name(case)}.log"
                    capped = budget.with_cap(job, budget.spent(run_dir), len(pending) + 1)
                    task = new_task(case, run_dir, run_id, capped, str(log), threads)
                    part = Path(task.part)
                    (part / "task.pkl").write_bytes(cloudpickle.dumps(task))
                    env = dict(thread_env)
                    if gpus[slot] is not None and case.device == "cuda":
                        env["CUDA_VISIBLE_DEVICES"] = str(gpus[slot])
                    running[slot] = (worker.start_worker(server, part, log, env), case, part, log)
                for slot, (proc, case, part, log) in list(running.items()):
                    rc = proc.poll()
                    if rc is None:
                        continue
                    del running[slot]
                    why = None
                    if rc == WRITE_FAILED:  # its part stays for --resume; the others are stopped below
                        raise WriteError(_last_line(log) or f"{case.case_id}: its worker could not write its records "
                                         f"(log: {log}); free space, then continue with --resume")  # fmt: skip
                    if rc != 0:
                        why = f"the worker {_describe_exit(rc)}; log: {log}"
                        close_part(run_dir, part, why=why)  # a no-op if the worker closed it itself
                    finish(outcome, case, why, progress)
                    bar.update()
                if time.monotonic() - shown_at > 0.5:  # the running cases and how far they are, twice a second
                    labels = " | ".join(_label(c, p) for _, c, p, _ in running.values())
                    if labels != shown:  # redrawn only when changed: CI logs stay short
                        bar.set_postfix_str(labels)
                        shown = labels
                    shown_at = time.monotonic()
                time.sleep(0.1)
        except BaseException:
            for proc, _case, _part, _log in running.values():
                proc.terminate()  # SIGTERM our own children only; their parts stay for --resume
            for proc, _case, _part, _log in running.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
            raise


# --------------------------------------------------------------------------- from the command line


def run_cases(
    cases: Sequence[Case],
    run_dir: str | Path,
    *,
    run_id: str,
    resume: bool,
    args: argparse.Namespace,
    metrics: Sequence[str] | None = None,
    settings: Settings | None = None,
    job: Job | None = None,
    meta: dict[str, Any] | None = None,
    progress: bool = True,
) -> RunSummary:
    """A run with the CLI's execution options (``--executor/--workers/--slurm-*``): meta.json and all.

    The counterpart of ``bench.run.runner.run_matrix`` for the other executors: writes ``meta.json``
    (with ``meta`` and how the run was executed), runs ``job`` (default: :class:`BenchJob` of
    ``metrics`` with ``settings``) for every case, stamps the end time. ``--shard`` is the
    caller's: it selects ``cases`` before they come here, so a resumed shard is the same slice.
    """
    if job is None:
        job = BenchJob(tuple(metrics or METRIC_GROUPS), settings)
    executor = getattr(args, "executor", None) or "local"
    slurm = slurm_options(args)
    matrix = list(dict.fromkeys(cases))  # the same case asked for twice is measured once
    extra: dict[str, Any] = {"run_id": run_id, "cases": len(matrix)}
    if executor == "slurm":  # checked before anything is written; meta.json says what the jobs ask for
        plan = check_slurm(slurm, matrix, job)
        extra["slurm_requests"] = [dataclasses.asdict(req) | {"cases": len(group)} for req, group in plan]
    if isinstance(job, BenchJob):
        extra |= {"metrics": list(job.metrics), "settings": (job.settings or Settings()).to_dict()}
    write_meta(run_dir, extra | (meta or {}) | execution_meta(args))
    outcome = execute(
        matrix, run_dir, run_id=run_id, job=job, executor=executor, workers=1 if getattr(args, "workers", None) is None else args.workers,
        slurm=slurm, resume=resume, progress=progress,
    )  # fmt: skip
    finish_meta(run_dir)
    ran = set(outcome.finished) | set(outcome.failed)
    recs = read_records(run_dir) if ran else []
    failures = [r for r in recs if r["case_id"] in ran and r["status"] != "ok"]
    return RunSummary(run_dir=Path(run_dir), cases=len(matrix), measured=len(ran), resumed=len(outcome.skipped),
                      failures=failures)  # fmt: skip


def execution_meta(args: argparse.Namespace) -> dict[str, Any]:
    """What ``meta.json`` says about how a run was executed (executor, workers, shard, Slurm options)."""
    meta: dict[str, Any] = {
        "executor": getattr(args, "executor", None) or "local",
        "shard": getattr(args, "shard", None),
    }
    if meta["executor"] == "local":
        meta["workers"] = getattr(args, "workers", 1)
    if meta["executor"] == "slurm":
        meta["slurm"] = dataclasses.asdict(slurm_options(args))
    return meta
