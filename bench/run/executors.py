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
- ``slurm``: one submitit job per case, submitted as one job array; ``cluster="local"`` in
  :class:`SlurmOptions` runs the same submitit code path on this machine (tests, debugging).

Every case runs as a :class:`CaseTask` into its own part of the run directory, which it closes
itself when it ends; a case whose process was killed has its part closed by the process
watching it. How parts reach ``records.jsonl`` exactly once, and what ``--resume`` redoes, is
:mod:`bench.run.store`'s. Do not resume while jobs of the same run are still running.

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
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.case import Case
from ..core.errors import UsageError, WriteError
from ..core.plugins import Plugin, activate_all, for_task
from ..core.progress import read_progress, reporting_to
from ..core.results import finish_meta, read_records, write_meta
from ..scenarios import METRIC_GROUPS, Settings
from . import worker
from .jobs import BenchJob, Job
from .runner import RunSummary
from .store import PARTS, RecordWriter, close_orphans, close_part, new_part, note_log, prepare_resume, safe_name, writer
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


# --------------------------------------------------------------------------- tasks (one case into its part)


@dataclass(frozen=True)
class CaseTask:
    """One case to run into its part: what a subprocess or a Slurm job executes."""

    case: Case
    job: Job
    run_id: str
    run_dir: str
    part: str
    log: str = ""
    threads: int | None = None
    modules: tuple[str, ...] = ()  # modules registering user backbones, imported first
    plugins: tuple[Plugin, ...] = ()  # bench.core.plugins: the run's plugins and user backbone modules

    def __call__(self) -> dict[str, Any]:
        import importlib

        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        part, run_dir = Path(self.part), Path(self.run_dir)
        n = 0
        try:
            activate_all(self.plugins)  # before the case: it may name their backbones and pruners
            for module in self.modules:
                importlib.import_module(module)  # a user's backbone registers itself on import
            with RecordWriter(part) as records, reporting_to(part):
                for rec in self.job.records(self.case, self.run_id, run_dir):
                    records.write(rec)
                    n += 1
        except WriteError:
            raise  # the disk, not the case: the part stays for --resume, and the run stops
        except BaseException as e:  # the traceback goes to the log; the record says where that is
            text = f"{type(e).__name__}: {e}".strip().splitlines()[0][:300]
            close_part(run_dir, part, why=f"{text}; log: {_job_log() or self.log or 'this terminal'}")
            raise
        close_part(run_dir, part)
        return {"case_id": self.case.case_id, "records": n}


def run_task(task: CaseTask) -> dict[str, Any]:
    """Module-level entry for submitit (``map_array`` wants a function)."""
    return task()


def _job_log() -> str:
    """Inside a submitit job: its stderr log; elsewhere ''."""
    if "SUBMITIT_EXECUTOR" not in os.environ and "SLURM_JOB_ID" not in os.environ:
        return ""
    try:
        import submitit

        return str(submitit.JobEnvironment().paths.stderr)
    except Exception:  # not a submitit job after all
        return ""


def _user_modules(case: Case) -> tuple[str, ...]:
    import backbones

    try:
        module = backbones.spec(case.backbone).build.__module__
    except ValueError:
        return ()
    return () if module.split(".")[0] == "backbones" or module == "__main__" else (module,)


def _label(case: Case, part: Path) -> str:
    """A running case on the bar: backbone/variant and its latest progress line, if any."""
    text = read_progress(part)
    return f"{case.backbone}/{case.variant}" + (f" {text}" if text else "")


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class SlurmOptions:
    """What the Slurm jobs ask for (the ``--slurm-*`` options); ``extra`` are further sbatch options.

    ``cluster="local"`` runs the same submitit code path with submitit's local executor (no Slurm).
    """

    partition: str | None = None
    time_min: int = 60
    gpus: int = 0
    cpus: int = 4
    mem_gb: int = 32
    account: str | None = None
    extra: tuple[tuple[str, str | bool], ...] = ()
    folder: str | None = None
    cluster: str = "slurm"


def slurm_options(args: argparse.Namespace) -> SlurmOptions:
    """SlurmOptions from the CLI's ``--slurm-*`` arguments; UsageError for a malformed ``--slurm-extra``."""
    extra: list[tuple[str, str | bool]] = []
    for item in getattr(args, "slurm_extra", None) or []:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")  # submitit writes it back as #SBATCH --key-name
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key) or (sep and not value.strip()):
            raise UsageError(f"--slurm-extra {item!r}: expected KEY=VALUE (or a bare flag KEY), e.g. constraint=a100")
        extra.append((key, value.strip() if sep else True))  # a bare KEY is a flag: #SBATCH --exclusive
    for name in ("slurm_time", "slurm_cpus", "slurm_mem"):
        if getattr(args, name, 1) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if getattr(args, "slurm_gpus", 0) < 0:
        raise UsageError(f"--slurm-gpus must be >= 0, got {args.slurm_gpus}")
    return SlurmOptions(
        partition=args.slurm_partition, time_min=args.slurm_time, gpus=args.slurm_gpus, cpus=args.slurm_cpus,
        mem_gb=args.slurm_mem, account=args.slurm_account, extra=tuple(extra), folder=args.slurm_folder,
    )  # fmt: skip


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------- execute


@dataclass
class Outcome:
    """What became of the cases handed to :func:`execute`."""

    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # case_id -> why (naming the log)
    skipped: list[str] = field(default_factory=list)  # finished before (--resume)


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
        _check_slurm(slurm, cases)
    run_dir = Path(run_dir).resolve()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot write results to {run_dir}: {e.strerror or e}") from None
    with writer(run_dir):
        outcome = Outcome()
        if resume:
            closed = close_orphans(run_dir)
            if closed and progress:
                print(f"closed {closed} part(s) left by jobs that died unwatched", file=sys.stderr)
            expected = {c.case_id: list(job.expected(c)) for c in cases}
            done = prepare_resume(run_dir, [c.case_id for c in cases], expected)  # unfinished cases start afresh
            outcome.skipped = [c.case_id for c in cases if c.case_id in done]
            cases = [c for c in cases if c.case_id not in done]
        if not cases:
            return outcome
        run = {"inline": _run_inline, "local": _run_local, "slurm": _run_slurm}[executor]
        run(cases, run_dir, run_id, job, workers, slurm, progress, outcome)
        with contextlib.suppress(OSError):
            (run_dir / PARTS).rmdir()  # only when empty: open parts are evidence of jobs still to close
        return outcome


def _check_slurm(opts: SlurmOptions, cases: Sequence[Case]) -> None:
    if opts.cluster == "slurm" and shutil.which("sbatch") is None:
        raise UsageError("--executor slurm: Slurm is not available here (no sbatch on PATH); use --executor local")
    if opts.gpus == 0 and any(c.device.startswith("cuda") for c in cases):
        raise UsageError("--executor slurm with --device cuda needs --slurm-gpus >= 1")


def _bar(total: int, progress: bool, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, disable=not progress, file=sys.stderr, desc=desc, unit="case", leave=False)


def _finish(outcome: Outcome, case: Case, why: str | None, progress: bool) -> None:
    if why is None:
        outcome.finished.append(case.case_id)
        return
    outcome.failed[case.case_id] = why
    if progress:
        print(f"failed: {case.case_id}: {why}", file=sys.stderr)


def _task(case: Case, run_dir: Path, run_id: str, job: Job, log: str, threads: int | None) -> CaseTask:
    part = new_part(run_dir, case, run_id, list(job.expected(case)), log)
    modules = _user_modules(case)
    return CaseTask(case, job, run_id, str(run_dir), str(part), log, threads, modules, for_task(modules))


def _run_inline(
    cases: Sequence[Case], run_dir: Path, run_id: str, job: Job, workers: int, slurm: SlurmOptions,
    progress: bool, outcome: Outcome,
) -> None:  # fmt: skip
    with _bar(len(cases), progress, "inline") as bar:
        for case in cases:
            bar.set_postfix_str(case.case_id)
            task = _task(case, run_dir, run_id, job, "", None)
            try:
                task()
                _finish(outcome, case, None, progress)
            except (UsageError, KeyboardInterrupt):
                raise
            except Exception as e:  # the task closed its part with an error record; the others go on
                _finish(outcome, case, f"{type(e).__name__}: {e}", progress)
            bar.update()


# ---- local: a fresh subprocess per case


def _gpu_ids() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [s.strip() for s in visible.split(",") if s.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


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
    thread_env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    # One zygote forks every case's fresh process: torch is imported once, not once per case.
    server = worker.fork_server(thread_env)
    with contextlib.ExitStack() as stack, _bar(len(cases), progress, "local") as bar:
        if server is not None:
            stack.callback(server.close)
        try:
            while pending or running:
                for slot in range(workers):
                    if slot in running or not pending:
                        continue
                    case = pending.pop(0)
                    log = run_dir / "logs" / f"{safe_name(case)}.log"
                    task = _task(case, run_dir, run_id, job, str(log), threads)
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
                    _finish(outcome, case, why, progress)
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


# ---- slurm: a submitit job array


def _run_slurm(
    cases: Sequence[Case], run_dir: Path, run_id: str, job: Job, workers: int, slurm: SlurmOptions,
    progress: bool, outcome: Outcome,
) -> None:  # fmt: skip
    import submitit

    folder = Path(slurm.folder).resolve() if slurm.folder else run_dir / "slurm"
    executor = submitit.AutoExecutor(folder=folder, cluster=slurm.cluster)
    params: dict[str, Any] = {
        "name": f"vptbench-{run_id}", "timeout_min": slurm.time_min, "gpus_per_node": slurm.gpus,
        "cpus_per_task": slurm.cpus, "mem_gb": slurm.mem_gb, "tasks_per_node": 1, "nodes": 1,
    }  # fmt: skip
    if slurm.cluster == "slurm":
        params.update(slurm_additional_parameters=dict(slurm.extra))
        if slurm.partition:
            params["slurm_partition"] = slurm.partition
        if slurm.account:
            params["slurm_account"] = slurm.account
    executor.update_parameters(**params)
    tasks = [_task(c, run_dir, run_id, job, "", slurm.cpus) for c in cases]
    try:
        jobs = executor.map_array(run_task, tasks)
    except Exception as e:  # sbatch refused (bad partition, account...): the parts were never run
        for t in tasks:
            shutil.rmtree(t.part, ignore_errors=True)
        raise UsageError(f"--executor slurm: submission failed: {str(e).strip().splitlines()[-1][:300]}") from None
    for t, j in zip(tasks, jobs):
        note_log(run_dir, Path(t.part), str(j.paths.stderr))
    if progress:
        print(f"submitted {len(jobs)} job(s), array {jobs[0].job_id.split('_')[0]}; logs in {folder}", file=sys.stderr)
    waiting = dict(enumerate(jobs))
    with _bar(len(jobs), progress, "slurm" if slurm.cluster == "slurm" else f"submitit-{slurm.cluster}") as bar:
        try:
            while waiting:
                for k, j in list(waiting.items()):
                    if not j.done():
                        continue
                    del waiting[k]
                    _finish(outcome, tasks[k].case, _slurm_result(run_dir, tasks[k], j), progress)
                    bar.update()
                time.sleep(0.2 if slurm.cluster == "local" else 2.0)
        except KeyboardInterrupt:
            print(f"stopped watching; the jobs go on and append to {run_dir} (vptbench merge/--resume later)",
                  file=sys.stderr)  # fmt: skip
            raise


def _slurm_result(run_dir: Path, task: CaseTask, job: Any) -> str | None:
    """None if the job finished its case; otherwise why, after closing its part."""
    import submitit

    try:
        job.result()
        return None
    except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as e:
        state = str(getattr(job, "state", "") or "")
        status = "oom" if state.upper().startswith("OUT_OF_ME") else "error"
        head = str(e).strip().splitlines()[0][:200]
        why = f"job {job.job_id} ended unfinished (state {state or 'unknown'}: {head}); log: {job.paths.stderr}"
        close_part(run_dir, Path(task.part), why=why, status=status)  # no-op if the job closed it itself
        return why


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
    if executor == "slurm":
        _check_slurm(slurm, cases)  # before anything is written
    matrix = list(dict.fromkeys(cases))  # the same case asked for twice is measured once
    extra: dict[str, Any] = {"run_id": run_id, "cases": len(matrix)}
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
