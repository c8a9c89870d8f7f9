"""One case as a task: what a worker process or a Slurm job runs, and its part of the run directory.

    task = new_task(case, run_dir, run_id, job, log, threads)   # opens the case's part
    task()                                                      # here, or pickled into a worker

:func:`new_task` opens the case's part (:func:`bench.run.store.new_part`) and names the modules the
case needs imported first: the run's plugins and the module of a user's backbone. A
:class:`CaseTask` is picklable (cloudpickle, submitit); wherever it runs it activates those,
writes the case's records into its part and closes the part itself, with error records naming
its log if the case failed. Whichever executor started it (:mod:`bench.run.executors`,
:mod:`bench.run.slurm`) only closes the parts of tasks whose process was killed.

The local executor's zygote (:mod:`bench.run.worker`) imports this module once before it forks,
so that a case's process does not pay for the imports of unpickling its task.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.case import Case
from ..core.errors import WriteError
from ..core.plugins import Plugin, activate_all, for_task
from ..core.progress import reporting_to
from .jobs import Job
from .store import RecordWriter, close_part, new_part


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
    fields: tuple[tuple[str, Any], ...] = ()  # added to every record: where the case ran (a Slurm job's node...)

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
                    records.write(rec | dict(self.fields))
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


def new_task(case: Case, run_dir: Path, run_id: str, job: Job, log: str, threads: int | None) -> CaseTask:
    """The task of ``case``, its part opened in ``run_dir`` (``log``: where its process writes)."""
    part = new_part(run_dir, case, run_id, list(job.expected(case)), log)
    modules = _user_modules(case)
    return CaseTask(case, job, run_id, str(run_dir), str(part), log, threads, modules, for_task(modules))
