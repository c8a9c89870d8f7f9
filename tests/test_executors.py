"""Executors: one process per case (local, submitit), shards, killed jobs and resume.

Cases are tiny MixSTE at T = 27 with the params metric only: every subprocess pays torch's import
(seconds), so the matrices are as small as the property under test allows.
"""

import dataclasses
import json
import os
import signal
import sys
from pathlib import Path

import cloudpickle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.cli import build_parser, main
from bench.core.case import Case
from bench.core.errors import UsageError
from bench.core.results import read_records
from bench.run.executors import execute, shard
from bench.run.jobs import BenchJob
from bench.run.slurm import SlurmOptions, slurm_options
from bench.run.store import finished_case_ids

# The self-killing job below runs in child processes that cannot import this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

JOB = BenchJob(("params",))


def tiny(*variants: str) -> list[Case]:
    return [Case("mixste", v, frames=27, size="tiny").resolve() for v in variants]


def comparable(recs):
    """Records without what legitimately differs between executors (timings), in a fixed order."""
    drop = {"samples", "train_s", "eval_s"}
    rows = [{k: v for k, v in r.items() if k not in drop} for r in recs]
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))


@dataclasses.dataclass(frozen=True)
class SelfKill(BenchJob):
    """Measures like BenchJob, except that the process running ``victim`` SIGKILLs itself."""

    victim: str = ""

    def records(self, case, run_id, run_dir):
        if case.case_id == self.victim:
            os.kill(os.getpid(), signal.SIGKILL)
        yield from super().records(case, run_id, run_dir)


# --------------------------------------------------------------------------- shards


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 12), st.randoms(use_true_random=False))
def test_shards_cover_every_case_exactly_once_and_are_balanced(size, n, rnd):
    cases = [Case("mixste", frames=27 + k, batch=1 + k % 3) for k in range(size)]
    slices = [shard(cases, f"{i}/{n}") for i in range(1, n + 1)]
    ids = [c.case_id for s in slices for c in s]
    assert sorted(ids) == sorted(c.case_id for c in cases)  # each case in exactly one shard
    lengths = [len(s) for s in slices]
    assert max(lengths) - min(lengths) <= 1
    shuffled = list(cases)
    rnd.shuffle(shuffled)  # the order in which the matrix was listed does not move a case
    assert [{c.case_id for c in shard(shuffled, f"{i}/{n}")} for i in range(1, n + 1)] == [
        {c.case_id for c in s} for s in slices
    ]


@pytest.mark.parametrize("spec", ["0/3", "4/3", "x", "1/0", "1/", "-1/2", ""])
def test_bad_shard_specs_name_what_is_allowed(spec):
    with pytest.raises(UsageError, match=r"expected i/n with 1 <= i <= n") as info:
        shard(tiny("rectangle"), spec)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- submitit (local cluster)


def test_submitit_local_cluster_gives_the_records_of_an_inline_run(tmp_path):
    cases = tiny("rectangle", "hierarchical")
    execute(cases, tmp_path / "inline", run_id="r", job=JOB, executor="inline", progress=False)
    out = execute(
        cases, tmp_path / "sub", run_id="r", job=JOB, executor="slurm",
        slurm=SlurmOptions(cluster="local", folder=str(tmp_path / "logs")), progress=False,
    )  # fmt: skip
    assert out.failed == {} and sorted(out.finished) == sorted(c.case_id for c in cases)
    inline, sub = read_records(tmp_path / "inline"), read_records(tmp_path / "sub")
    assert len(inline) == len(cases) and comparable(sub) == comparable(inline)
    assert finished_case_ids(tmp_path / "sub") == {c.case_id for c in cases}
    assert not (tmp_path / "sub" / "parts").exists()  # every part was closed by its job
    assert list((tmp_path / "logs").glob("*_log.err"))  # submitit's logs went where asked


# --------------------------------------------------------------------------- killed jobs and resume


def test_a_killed_worker_becomes_an_error_record_and_resume_fills_it_in(tmp_path):
    victim, other = tiny("single", "rectangle")
    run = tmp_path / "run"
    out = execute(
        [victim, other], run, run_id="r", job=SelfKill(("params",), victim=victim.case_id), executor="local",
        workers=2, progress=False,
    )  # fmt: skip
    assert out.finished == [other.case_id] and list(out.failed) == [victim.case_id]
    recs = read_records(run)
    (err,) = [r for r in recs if r["case_id"] == victim.case_id]
    assert (err["metric"], err["status"], err["value"]) == ("params", "error", None)
    assert "SIGKILL" in err["error"]
    log = Path(err["error"].rsplit("log: ", 1)[1])
    assert log.is_file()  # the error names a log that exists
    assert [r["status"] for r in recs if r["case_id"] == other.case_id] == ["ok"]
    assert finished_case_ids(run) == {other.case_id}

    out = execute([victim, other], run, run_id="r", job=JOB, executor="local", resume=True, progress=False)
    assert out.skipped == [other.case_id] and out.finished == [victim.case_id]
    recs = read_records(run)
    assert [r["status"] for r in recs if r["case_id"] == victim.case_id] == ["ok"]  # the error made way
    assert [r["status"] for r in recs if r["case_id"] == other.case_id] == ["ok"]  # not measured twice
    assert finished_case_ids(run) == {victim.case_id, other.case_id}


# --------------------------------------------------------------------------- slurm availability


def test_slurm_without_sbatch_is_a_one_line_usage_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(UsageError, match="no sbatch on PATH") as info:
        execute(tiny("rectangle"), tmp_path / "run", run_id="r", job=JOB, executor="slurm", progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_cli_slurm_without_sbatch_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    argv = ["run", "--backbones", "mixste", "--variants", "rectangle", "--frames", "27", "--size", "tiny",
            "--metrics", "params", "--no-report", "--executor", "slurm", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sbatch" in err


@pytest.mark.parametrize("item", ["=a100", "constraint=", "qos high"])
def test_bad_slurm_extra_is_a_usage_error(item):
    args = build_parser().parse_args(["run", "--executor", "slurm", "--slurm-extra", item])
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        slurm_options(args)


def test_slurm_extra_becomes_sbatch_parameters():
    argv = ["run", "--slurm-extra", "constraint=a100", "--slurm-extra=--gres-flags=enforce-binding",
            "--slurm-extra", "exclusive", "--slurm-gpus", "2"]  # fmt: skip
    opts = slurm_options(build_parser().parse_args(argv))
    assert opts.extra == (("constraint", "a100"), ("gres_flags", "enforce-binding"), ("exclusive", True))
    assert opts.gpus == 2
