"""The ``slurm`` executor: one submitit job per case, submitted as job arrays, watched through squeue.

    execute(cases, "results/r1", run_id="r1", job=job, executor="slurm", slurm=SlurmOptions(gpus=1))

:class:`SlurmOptions` is what the user asked for (the CLI's ``--slurm-*`` options:
:func:`slurm_options`); :func:`plan_jobs` turns it into what each case's job asks for (a
:class:`~bench.run.slurm_queue.Request`) and checks that against the partition before anything
is submitted. Defaults follow the case: as many CPUs as its threads (the whole node's for a
timing run without a thread count), memory from :func:`case_mem_gb`, and a whole node
(``--exclusive``) for timing runs so that no other job disturbs the timings.

:func:`run_slurm`, which :func:`bench.run.executors.execute` dispatches to, submits one job array
per distinct request and watches the jobs with ``squeue`` (:mod:`bench.run.slurm_queue`), never
with submitit's ``sacct`` watcher, which warns on every poll where a cluster keeps no accounting
and never sees a job end without its result. A job that waits for a reason waiting cannot resolve
(more CPUs than any node has, a bad account...) stops the run with one line (exit 2). A job that
ended without its result (time limit, out of memory, node failure, cancelled) has its part closed
with error (or oom) records naming what Slurm said and the job's log; the other jobs go on.
Stopping the run (Ctrl-C, SIGTERM, SIGHUP, an error) cancels its jobs, unless ``detach``: then
they run on, and ``--resume`` continues once they have ended.

``cluster="local"`` runs the same submitit code path with submitit's local executor (no Slurm).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import re
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.case import Case
from ..core.errors import UsageError
from . import slurm_queue as sq
from .jobs import Job
from .outcome import Outcome, finish, progress_bar
from .store import close_part, note_log
from .task import CaseTask, new_task

JOBS_FILE = "slurm_jobs.txt"  # the run's job arrays, one id a line: --resume refuses while they are queued
POLL_S = 2.0  # squeue once every POLL_S while jobs run
RESULT_GRACE_S = 15.0  # a job that ended COMPLETED may write its result to a slow shared filesystem late


@dataclass(frozen=True)
class SlurmOptions:
    """What the user asked of the Slurm jobs (the ``--slurm-*`` options); None: chosen per case.

    ``extra`` are further sbatch options. ``exclusive`` None: a whole node for timing runs.
    ``detach``: stopping the run leaves its jobs running. ``cluster="local"`` runs the same
    submitit code path with submitit's local executor (no Slurm).
    """

    partition: str | None = None
    time_min: int = 60
    gpus: int = 0
    cpus: int | None = None
    mem_gb: int | None = None
    account: str | None = None
    extra: tuple[tuple[str, str | bool], ...] = ()
    folder: str | None = None
    cluster: str = "slurm"
    exclusive: bool | None = None
    detach: bool = False


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
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if getattr(args, "slurm_gpus", 0) < 0:
        raise UsageError(f"--slurm-gpus must be >= 0, got {args.slurm_gpus}")
    if getattr(args, "detach", False) and (getattr(args, "executor", None) or "local") != "slurm":
        raise UsageError("--detach leaves Slurm jobs running when the run stops: it needs --executor slurm")
    return SlurmOptions(
        partition=args.slurm_partition, time_min=args.slurm_time, gpus=args.slurm_gpus, cpus=args.slurm_cpus,
        mem_gb=args.slurm_mem, account=args.slurm_account, extra=tuple(extra), folder=args.slurm_folder,
        exclusive=getattr(args, "slurm_exclusive", None), detach=getattr(args, "detach", False),
    )  # fmt: skip


# --------------------------------------------------------------------------- what each job asks for

# Peak resident memory of a case's job above about 1 GiB (Python, torch, the model, the FLOP
# counters), in GiB at the backbone's canonical length, batch 1: (with a training step, inference
# only). Measured with `vptbench profile B --metrics memory` (peak_mem_activations, CPU, 2026-12-06);
# activations grow about linearly with frames x batch. Sizes not listed take the largest entry.
ACTIVATIONS_GIB = {
    ("mixste", "base"): (2.7, 0.2),
    ("motionbert", "lite"): (1.7, 0.15),
    ("mhformer", "base"): (0.2, 0.05),
    ("motionagformer", "base"): (2.9, 0.1),
    ("*", "tiny"): (0.1, 0.05),
}
TIMED_GROUPS = {"latency", "speedup", "train", "breakdown"}  # a whole node, so that no other job disturbs them
TRAINING_GROUPS = {"memory", "train", "breakdown", "flops_train"}


def case_mem_gb(case: Case, trains: bool) -> int:
    """Memory (GB) to ask for ``case``'s job: 1.5 x (1 GiB + its activations), at least 2."""
    import backbones

    spec = backbones.spec(case.backbone) if case.backbone in backbones.names() else None
    size = case.size or (spec.default_size if spec else "")
    act = ACTIVATIONS_GIB.get((case.backbone, size)) or ACTIVATIONS_GIB.get(("*", size)) or max(ACTIVATIONS_GIB.values())
    canonical = spec.frames if spec else (case.frames or 1)
    scale = (case.frames or canonical) * case.batch / canonical
    return max(2, math.ceil(1.5 * (1.0 + act[0 if trains else 1] * scale)))


def job_needs(job: Job) -> tuple[int | None, bool, bool]:
    """(torch threads, timed, trains) of ``job``: a :class:`~bench.run.jobs.BenchJob` by its metrics; others train."""
    metrics = getattr(job, "metrics", None)
    if metrics is None:  # e.g. vptbench accuracy's job: training, untimed, its own thread count
        return getattr(job, "threads", None), False, True
    settings = getattr(job, "settings", None)
    threads = settings.speed.threads if settings is not None else None
    return threads, bool(TIMED_GROUPS & set(metrics)), bool(TRAINING_GROUPS & set(metrics))


def plan_jobs(opts: SlurmOptions, cases: Sequence[Case], job: Job) -> list[tuple[sq.Request, list[Case]]]:
    """The cases grouped by what their jobs ask for; UsageError (one line) where a request cannot run.

    On Slurm the requests are checked against the partition (sinfo, scontrol) before anything is
    submitted. CPUs: ``opts.cpus``, else the job's threads, else a whole node's CPUs (the smallest
    node of the partition) for a timing run and up to 4 otherwise.
    """
    threads, timed, trains = job_needs(job)
    parts: dict[str, sq.Partition] = {}
    if opts.cluster == "slurm":
        try:
            parts = sq.partitions()
        except sq.SlurmCommandError as e:
            raise UsageError(f"--executor slurm: cannot ask Slurm about its partitions ({e})") from None
    name = opts.partition or next((p.name for p in parts.values() if p.default), None)
    nodes = parts[name].nodes if name in parts else ()
    node_cpus = min((n.cpus for n in nodes if n.usable), default=min((n.cpus for n in nodes), default=4))
    cpus = opts.cpus or threads or (node_cpus if timed else min(4, node_cpus))
    exclusive = timed if opts.exclusive is None else opts.exclusive
    groups: dict[sq.Request, list[Case]] = {}
    for case in cases:
        mem = opts.mem_gb or case_mem_gb(case, trains)
        req = sq.Request(cpus, mem * 1024, opts.time_min, opts.gpus, opts.partition, exclusive)
        groups.setdefault(req, []).append(case)
    for req in groups if opts.cluster == "slurm" else ():
        problem = sq.check_request(req, parts)
        if problem:
            raise UsageError(f"--executor slurm: {problem}")
    return list(groups.items())


def check_slurm(opts: SlurmOptions, cases: Sequence[Case], job: Job) -> list[tuple[sq.Request, list[Case]]]:
    """UsageError, before anything is written, where these options cannot run ``cases``; else :func:`plan_jobs`."""
    if opts.cluster == "slurm" and shutil.which("sbatch") is None:
        raise UsageError("--executor slurm: Slurm is not available here (no sbatch on PATH); use --executor local")
    if opts.gpus == 0 and any(c.device.startswith("cuda") for c in cases):
        raise UsageError("--executor slurm with --device cuda needs --slurm-gpus >= 1")
    return plan_jobs(opts, cases, job)


def check_no_live_jobs(run_dir: Path) -> None:
    """UsageError if jobs this run submitted are still queued: resuming now would measure their cases twice."""
    ids = [s.split()[0] for s in _read(run_dir / JOBS_FILE).splitlines() if s.strip()]
    if not ids or shutil.which("squeue") is None:
        return
    try:
        live = sq.queue(ids)
    except sq.SlurmCommandError:
        return  # the jobs are forgotten (another cluster, a restarted controller): nothing can append any more
    if live:
        arrays = sorted({j.split("_")[0] for j in live})
        raise UsageError(f"{run_dir}: {len(live)} job(s) of this run are still queued or running ({_count(live)}); "
                         f"wait for them to end, or cancel them with scancel {' '.join(arrays)}, then --resume")  # fmt: skip


# --------------------------------------------------------------------------- inside the job


def run_job(task: CaseTask, exclusive: bool) -> dict[str, Any]:
    """What each Slurm job runs (submitit pickles it): the case's task, its records saying where it ran.

    SIGTERM (scancel, the time limit, preemption) ends the job at once: what it measured is in its
    part, and the watching process names the reason. submitit's own handlers would ignore SIGTERM
    for Slurm's grace time and, on the warning signal before the time limit, abort the case with
    an unrelated message; this task has nothing to checkpoint.
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(128 + signum))
    with contextlib.suppress(ValueError, AttributeError):
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    return dataclasses.replace(task, fields=tuple(placement(exclusive).items()))()


def placement(exclusive: bool, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Where the job runs, from Slurm's variables: its id, node, CPUs and memory, and whether it has the node.

    Empty outside a Slurm job (submitit's local executor).
    """
    env = dict(os.environ) if env is None else env
    job_id = env.get("SLURM_JOB_ID", "")
    if not job_id:
        return {}
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job_id = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    cpus, mem = env.get("SLURM_CPUS_ON_NODE", ""), env.get("SLURM_MEM_PER_NODE", "")
    return {
        "slurm_job_id": job_id, "slurm_node": env.get("SLURMD_NODENAME", ""),
        "slurm_cpus": int(cpus) if cpus.isdigit() else None, "slurm_mem_mb": int(mem) if mem.isdigit() else None,
        "slurm_exclusive": exclusive,
    }  # fmt: skip


# --------------------------------------------------------------------------- submitting and watching


def run_slurm(
    cases: Sequence[Case], run_dir: Path, run_id: str, job: Job, workers: int, slurm: SlurmOptions,
    progress: bool, outcome: Outcome,
) -> None:  # fmt: skip
    """Submit ``cases`` (one job array per request) and watch them until every job has ended.

    Its signature is every executor's (:func:`bench.run.executors.execute` calls it); ``workers``
    is the local executor's and unused here.
    """
    folder = Path(slurm.folder).resolve() if slurm.folder else run_dir / "slurm"
    plan = check_slurm(slurm, cases, job)
    arrays: list[str] = []
    waiting: dict[str, tuple[CaseTask, Any, sq.Request]] = {}  # job id -> (task, submitit job, request)
    with _signals_interrupt():
        try:
            for req, group in plan:
                tasks, jobs = _submit(folder, run_dir, run_id, job, slurm, req, group)
                arrays.append(jobs[0].job_id.split("_")[0])
                waiting |= {j.job_id: (t, j, req) for t, j in zip(tasks, jobs)}
            if progress:
                what = f"array(s) {', '.join(arrays)}" if slurm.cluster == "slurm" else "local submitit jobs"
                print(f"submitted {len(waiting)} job(s) ({', '.join(r.describe() for r, _ in plan)}), {what}; "
                      f"logs in {folder}", file=sys.stderr)  # fmt: skip
                if slurm.detach:
                    print(_detached(run_dir, arrays, "stopping this command leaves them running"), file=sys.stderr)
            if slurm.cluster == "slurm":
                _watch(waiting, arrays, run_dir, slurm, progress, outcome)
            else:
                _watch_local(waiting, run_dir, progress, outcome)
        except BaseException as e:
            if arrays and slurm.cluster == "slurm":
                if slurm.detach:
                    print(_detached(run_dir, arrays, "left running"), file=sys.stderr)
                else:
                    n = _cancel(arrays)
                    for task, _, _ in waiting.values():
                        if not (Path(task.part) / "records.jsonl").exists():
                            shutil.rmtree(task.part, ignore_errors=True)  # never started: nothing to keep
                    if not isinstance(e, UsageError):  # a UsageError says so in its own one line
                        print(f"cancelled the {n} unfinished job(s) of array(s) {', '.join(arrays)}; --resume "
                              "continues the run", file=sys.stderr)  # fmt: skip
            raise


def _submit(folder: Path, run_dir: Path, run_id: str, job: Job, slurm: SlurmOptions, req: sq.Request,
            cases: list[Case]) -> tuple[list[CaseTask], list[Any]]:  # fmt: skip
    """Submit one job array; its tasks' parts opened and its id in the run's JOBS_FILE."""
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster=slurm.cluster)
    params: dict[str, Any] = {
        "name": f"vptbench-{run_id}", "timeout_min": req.time_min, "cpus_per_task": req.cpus,
        "mem_gb": req.mem_mb // 1024, "tasks_per_node": 1, "nodes": 1,
    }  # fmt: skip
    params |= {"gpus_per_node": req.gpus} if req.gpus else {}  # no GPU option at all where none is wanted
    if slurm.cluster == "slurm":
        # No requeue: a requeued job would run its case again into the same part. No warning signal
        # before the time limit (submitit's USR2, 90 s ahead, whose default action kills a job that
        # has not started Python yet under a short limit): SIGURG is ignored by default.
        params["slurm_additional_parameters"] = {"no_requeue": True, "signal": "URG@1"} | dict(slurm.extra)
        params |= {"slurm_exclusive": True} if req.exclusive else {}
        params |= {"slurm_partition": slurm.partition} if slurm.partition else {}
        params |= {"slurm_account": slurm.account} if slurm.account else {}
    executor.update_parameters(**params)
    tasks = [new_task(c, run_dir, run_id, job, "", req.cpus) for c in cases]
    try:
        jobs = executor.map_array(run_job, tasks, [req.exclusive] * len(tasks))
    except Exception as e:  # sbatch refused (bad partition, account...): the parts were never run
        for t in tasks:
            shutil.rmtree(t.part, ignore_errors=True)
        raise UsageError(f"--executor slurm: submission failed: {str(e).strip().splitlines()[-1][:300]}") from None
    if slurm.cluster == "slurm":
        with open(run_dir / JOBS_FILE, "a", encoding="utf-8") as fh:
            fh.write(f"{jobs[0].job_id.split('_')[0]} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
    for t, j in zip(tasks, jobs):
        note_log(run_dir, Path(t.part), str(j.paths.stderr))
    return tasks, jobs


def _watch(waiting: dict[str, tuple[CaseTask, Any, sq.Request]], arrays: list[str], run_dir: Path,
           slurm: SlurmOptions, progress: bool, outcome: Outcome) -> None:  # fmt: skip
    """Until every job has ended: results as they appear, squeue every POLL_S for the others."""
    extra = "".join(f" --slurm-extra {k}" + ("" if v is True else f"={v}") for k, v in slurm.extra)
    gone: dict[str, float] = {}  # job id -> when it was first missing from the queue
    next_poll, failing = 0.0, 0
    shown = ""
    with progress_bar(len(waiting), progress, "slurm") as bar:
        while waiting:
            for jid in [j for j, (_, sj, _) in waiting.items() if sj.paths.result_pickle.exists()]:
                task, sj, _ = waiting.pop(jid)
                finish(outcome, task.case, _result(run_dir, task, sj), progress)
                bar.update()
            if not waiting or time.monotonic() < next_poll:
                time.sleep(0.2)
                continue
            next_poll = time.monotonic() + POLL_S
            try:
                states = sq.queue(arrays)
                failing = 0
            except sq.SlurmCommandError as e:
                failing += 1
                if failing == 5 and progress:  # say it once, and keep waiting: the controller may come back
                    print(f"squeue keeps failing ({e}); still waiting for the jobs", file=sys.stderr)
                continue
            for jid, (task, sj, req) in list(waiting.items()):
                st = states.get(jid)
                if st is not None:
                    gone.pop(jid, None)
                    if st.state == "PENDING":
                        _stop_if_hopeless(jid, st, req, len(waiting), extra)
                    continue
                since = gone.setdefault(jid, time.monotonic())
                ended = sq.final_state(jid, Path(sj.paths.stderr))
                if sj.paths.result_pickle.exists() or (
                    ended.state in ("COMPLETED", "UNKNOWN") and time.monotonic() - since < RESULT_GRACE_S
                ):
                    continue  # its result is there, or may still be on its way
                why = f"Slurm job {jid} {ended.why}; log: {sj.paths.stderr}"
                close_part(run_dir, Path(task.part), why=why, status=ended.status)  # a no-op if the job closed it
                del waiting[jid]
                finish(outcome, task.case, why, progress)
                bar.update()
            text = _count({j: s for j, s in states.items() if j in waiting})
            if text != shown:
                bar.set_postfix_str(text)
                shown = text


def _stop_if_hopeless(jid: str, st: sq.QueueState, req: sq.Request, n: int, extra: str) -> None:
    """UsageError naming the request and the partition where ``jid`` waits for what waiting cannot bring."""
    parts = None
    if st.reason.startswith("ReqNodeNotAvail"):
        with contextlib.suppress(sq.SlurmCommandError):
            parts = sq.partitions()
    if not sq.hopeless(st.reason, parts, req.partition):
        return
    offers = ""
    with contextlib.suppress(sq.SlurmCommandError):
        parts = parts or sq.partitions()
        name = req.partition or next((p.name for p in parts.values() if p.default), "")
        offers = f"; partition {name} offers {parts[name].offers()}" if name in parts else ""
    raise UsageError(f"--executor slurm: Slurm will not start job {jid}: pending with reason {sq.explain(st.reason)}; "
                     f"each job asks for {req.describe()}{extra}{offers}; cancelled the run's {n} unfinished job(s)")  # fmt: skip


def _watch_local(waiting: dict[str, tuple[CaseTask, Any, sq.Request]], run_dir: Path, progress: bool,
                 outcome: Outcome) -> None:  # fmt: skip
    """submitit's local executor (tests, debugging): its jobs know when they are done."""
    with progress_bar(len(waiting), progress, "submitit-local") as bar:
        while waiting:
            for jid, (task, sj, _) in list(waiting.items()):
                if sj.done():
                    del waiting[jid]
                    finish(outcome, task.case, _result(run_dir, task, sj), progress)
                    bar.update()
            time.sleep(0.2)


def _result(run_dir: Path, task: CaseTask, job: Any) -> str | None:
    """None if the job finished its case; otherwise why, after closing its part."""
    import submitit

    try:
        job.result()
        return None
    except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as e:
        head = str(e).strip().splitlines()[0][:200]
        why = f"job {job.job_id} ended unfinished ({head}); log: {job.paths.stderr}"
        close_part(run_dir, Path(task.part), why=why)  # a no-op if the job closed it itself
        return why


def _cancel(arrays: list[str], timeout: float = 30.0) -> int:
    """scancel the arrays and wait (up to ``timeout``) until they have left the queue; how many were queued."""
    try:
        n = len(sq.queue(arrays))
    except sq.SlurmCommandError:
        n = 0
    sq.cancel(arrays)
    end = time.monotonic() + timeout
    with contextlib.suppress(sq.SlurmCommandError):
        while sq.queue(arrays) and time.monotonic() < end:
            time.sleep(0.5)
    return n


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the watching like Ctrl-C does (so the jobs are cancelled)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    before = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def _detached(run_dir: Path, arrays: list[str], what: str) -> str:
    argv = sys.argv[1:] if Path(sys.argv[0]).name in ("vptbench", "__main__.py") else []
    command = shlex.join(["vptbench", *argv, *([] if "--resume" in argv else ["--resume"])]) if argv else (
        f"vptbench run --resume --out {shlex.quote(str(run_dir))} --executor slurm")  # fmt: skip
    return (f"--detach: the jobs of array(s) {', '.join(arrays)} are {what}; once they have ended, continue with: "
            f"{command}; cancel them with: scancel {' '.join(arrays)}")  # fmt: skip


def _count(states: dict[str, sq.QueueState]) -> str:
    """'2 running, 3 pending (Resources)': the jobs in the queue, by state and pending reason."""
    counts: dict[str, int] = {}
    for st in states.values():
        key = f"{st.state.lower()} ({st.reason})" if st.state == "PENDING" and st.reason != "None" else st.state.lower()
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""
