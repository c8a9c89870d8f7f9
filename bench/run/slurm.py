"""The ``slurm`` executor: one submitit job per case, submitted as one job array.

    execute(cases, "results/r1", run_id="r1", job=job, executor="slurm", slurm=SlurmOptions(gpus=1))

:class:`SlurmOptions` is what the jobs ask for (the CLI's ``--slurm-*`` options:
:func:`slurm_options`); ``cluster="local"`` runs the same submitit code path on this machine
(tests, debugging). :func:`check_slurm` refuses, before anything is written, a run that cannot
start. :func:`run_slurm`, which :func:`bench.run.executors.execute` dispatches to, submits every
case's :class:`~bench.run.task.CaseTask` (which closes its own part) and watches the jobs; a job
that ended unfinished (failed, killed, out of memory, out of time) has its part closed here with
error records naming its log. Interrupted, it stops watching and leaves the jobs running: they
append to the run directory, and ``--resume`` or ``vptbench merge`` (:mod:`bench.run.merge`)
continue from there.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.case import Case
from ..core.errors import UsageError
from .jobs import Job
from .outcome import Outcome, finish, progress_bar
from .store import close_part, note_log
from .task import CaseTask, new_task, run_task


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


def check_slurm(opts: SlurmOptions, cases: Sequence[Case]) -> None:
    """UsageError, before anything is written, where these options cannot run ``cases``."""
    if opts.cluster == "slurm" and shutil.which("sbatch") is None:
        raise UsageError("--executor slurm: Slurm is not available here (no sbatch on PATH); use --executor local")
    if opts.gpus == 0 and any(c.device.startswith("cuda") for c in cases):
        raise UsageError("--executor slurm with --device cuda needs --slurm-gpus >= 1")


def run_slurm(
    cases: Sequence[Case], run_dir: Path, run_id: str, job: Job, workers: int, slurm: SlurmOptions,
    progress: bool, outcome: Outcome,
) -> None:  # fmt: skip
    """Submit ``cases`` as one job array that asks for ``slurm``, and watch it until every job has ended.

    Its signature is every executor's (:func:`bench.run.executors.execute` calls it); ``workers``
    is the local executor's and unused here.
    """
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
    tasks = [new_task(c, run_dir, run_id, job, "", slurm.cpus) for c in cases]
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
    with progress_bar(len(jobs), progress, "slurm" if slurm.cluster == "slurm" else f"submitit-{slurm.cluster}") as bar:
        try:
            while waiting:
                for k, j in list(waiting.items()):
                    if not j.done():
                        continue
                    del waiting[k]
                    finish(outcome, tasks[k].case, _slurm_result(run_dir, tasks[k], j), progress)
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
