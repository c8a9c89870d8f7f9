"""The runner: records as measured, failures recorded while the run goes on, kill + --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import backbones
from backbones.registry import VariantSpec, register
from backbones.tokens import TokenHourglass
from bench import cli
from bench.core import results
from bench.core.case import Case
from bench.core.errors import UsageError
from bench.measure.timing import SpeedSettings
from bench.run import presets, runner, store
from bench.scenarios import Settings

FAST = Settings(warmup=0, repeats=1, min_time_s=0.0, train_warmup=0, train_repeats=1, train_min_time_s=0.0,
                speed=SpeedSettings(threads=1))  # fmt: skip


class Flaky(nn.Module):
    """A small lifter that fails on purpose: in inference mode ("boom"), always ("oom")."""

    pipeline = "seq2seq"

    def __init__(self, frames: int, schedule=(), pruner=None, recoverer=None, embed_kept=False, fail: str = ""):
        super().__init__()
        if fail == "build":
            raise RuntimeError("constructor failed")
        self.frames, self.in_channels, self.fail = frames, 2, fail
        self.embed = nn.Linear(2, 8)
        self.blocks = nn.ModuleList(nn.Linear(8, 8) for _ in range(3))
        self.tokens = TokenHourglass(frames=frames, depth=3, dim=8, schedule=schedule, pruner=pruner,
                                     recoverer=recoverer)  # fmt: skip
        self.head = nn.Linear(8, 3)

    @property
    def token_profile(self) -> list[int]:
        return self.tokens.profile

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail == "boom" and torch.is_inference_mode_enabled():
            raise RuntimeError("boom in inference")
        if self.fail == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB (fake)")
        x = self.embed(x)
        pos = self.tokens.positions(x)
        for i, blk in enumerate(self.blocks):
            x, pos = self.tokens.prune(i, x, pos)
            x = blk(x)
        return self.head(self.tokens.recover(x, pos))


@pytest.fixture
def flaky():
    name = "runnertest_flaky"
    register(name, pipeline="seq2seq", in_channels=2, frames=16,
             single=VariantSpec(((1, 0.5),), "tps", "tri"),
             hierarchical=VariantSpec(((1, 0.5), (2, 0.25)), "tps", "tri"),
             sizes={"tiny": {}, "boom": {"fail": "boom"}, "oom": {"fail": "oom"}, "broken": {"fail": "build"}},
             default_size="tiny")(lambda frames=16, **kw: Flaky(frames, **kw))  # fmt: skip
    yield name
    backbones.unregister(name)


def key(rec: dict) -> tuple:
    """What makes a record unique within a run."""
    return (rec["case_id"], rec["metric"], rec["method"], rec.get("block"), rec.get("phase"))


def test_failures_are_recorded_and_the_run_goes_on(tmp_path, flaky):
    cases = [presets.prepare(Case(flaky, size=s)) for s in ("boom", "oom", "broken", "tiny")]
    summary = runner.run_matrix(cases, tmp_path, run_id="r", metrics=["params", "latency", "train"],
                                resume=False, progress=False, settings=FAST)  # fmt: skip
    recs = results.read_records(tmp_path)
    status = {(r["size"], r["metric"]): (r["status"], r["error"]) for r in recs if r["metric"] in
              ("params", "latency", "train_step")}  # fmt: skip
    assert status[("boom", "params")][0] == "ok"
    assert status[("boom", "latency")] == ("error", "RuntimeError: boom in inference")
    assert status[("boom", "train_step")][0] == "ok"  # training runs outside inference mode
    assert status[("oom", "latency")][0] == status[("oom", "train_step")][0] == "oom"
    assert status[("broken", "params")] == ("error", "RuntimeError: constructor failed")
    assert all(status[("tiny", m)][0] == "ok" for m in ("params", "latency", "train_step"))
    assert store.finished_case_ids(tmp_path) == {c.case_id for c in cases}
    assert len(summary.failures) == 6  # boom: latency; oom: latency, train; broken: all three
    assert len({key(r) for r in recs}) == len(recs)
    assert results.read_meta(tmp_path)["end_time"]


def test_records_are_on_disk_as_they_are_measured(tmp_path):
    case = presets.prepare(Case("mixste", frames=9, size="tiny"))
    seen = []
    for rec in runner.measure_case(case, ["params", "latency"], "r", settings=FAST):
        seen.append(rec)
    written = runner.run_case(case, tmp_path, "r", ["params", "latency"], FAST)
    assert [r["metric"] for r in written] == [r["metric"] for r in seen]
    assert [r["metric"] for r in results.read_records(tmp_path)] == [r["metric"] for r in written]
    assert store.finished_case_ids(tmp_path) == {case.case_id}


def _case(frames: int) -> Case:
    return presets.prepare(Case("mixste", frames=frames, size="tiny"))


def test_a_used_run_directory_needs_resume(tmp_path):
    cases = [_case(9)]
    runner.run_matrix(cases, tmp_path, run_id="r", metrics=["params"], resume=False, progress=False, settings=FAST)
    before = (tmp_path / "records.jsonl").read_text()
    with pytest.raises(UsageError, match="--resume"):
        runner.run_matrix(cases, tmp_path, run_id="r", metrics=["params"], resume=False, progress=False)
    again = runner.run_matrix(cases, tmp_path, run_id="r", metrics=["params"], resume=True, progress=False)
    assert (again.measured, again.resumed) == (0, 1)
    assert (tmp_path / "records.jsonl").read_text() == before


def test_the_same_case_twice_is_measured_once(tmp_path):
    case = _case(9)
    summary = runner.run_matrix([case, case], tmp_path, run_id="r", metrics=["params"], resume=False,
                                progress=False, settings=FAST)  # fmt: skip
    assert summary.cases == 1 and len(results.read_records(tmp_path)) == 1


def test_a_killed_run_resumes_to_every_case_exactly_once(tmp_path):
    out = tmp_path / "run"
    argv = ["run", "--preset", "smoke", "--backbones", "mixste", "--metrics", "params,flops,latency",
            "--out", str(out), "--no-report", "--executor", "inline"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "bench", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            done = _lines(out / "done.txt")
            started = {json.loads(x)["case_id"] for x in _lines(out / "records.jsonl")[:-1]}
            if done and started - set(done):  # the second case is being measured
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    finished_before = _lines(out / "done.txt")
    assert 1 <= len(finished_before) < 3, "the kill should land mid-run"

    assert cli.main([*argv, "--resume"]) == 0
    recs = results.read_records(out)
    counts = Counter(key(r) for r in recs)
    assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1]
    cases = presets.build_matrix(presets.get_preset("smoke"), backbone_names=["mixste"])
    assert sorted(_lines(out / "done.txt")) == sorted(c.case_id for c in cases)
    for case in cases:  # every metric of every case is there, measured once
        metrics = Counter(r["metric"] for r in recs if r["case_id"] == case.case_id)
        blocks = len(backbones.create("mixste", frames=27, size="tiny").blocks)
        assert metrics == {"params": 1, "flops": 3, "flops_block": blocks, "latency": 1, "latency_p10": 1,
                           "latency_p90": 1, "fps": 1, "clips_per_s": 1}  # fmt: skip
    assert {r["run_id"] for r in recs} == {results.read_meta(out)["run_id"]}


def _lines(path: Path) -> list[str]:
    try:
        return [x for x in path.read_text().splitlines() if x.strip()]
    except FileNotFoundError:
        return []


SMOKE = ["--preset", "smoke", "--backbones", "mixste", "--variants", "rectangle", "--metrics", "params"]


def test_resume_continues_the_runs_own_matrix_and_refuses_another(tmp_path, capsys):
    out = tmp_path / "run"
    inline = ["--executor", "inline", "--no-report"]
    assert cli.main(["run", *SMOKE, "--out", str(out), *inline]) == 0
    before = results.read_meta(out)
    assert [c["variant"] for c in before["matrix"]] == ["rectangle"] and before["metrics"] == ["params"]
    capsys.readouterr()

    assert cli.main(["run", "--resume", "--out", str(out), *inline]) == 0  # no --preset: the run's own matrix
    assert "0 case(s) measured, 1 already done" in capsys.readouterr().out
    assert results.read_meta(out)["matrix"] == before["matrix"] and results.read_meta(out)["preset"] == "smoke"

    assert cli.main(["run", "--resume", "--out", str(out), "--preset", "paper", *inline]) == 2
    err = capsys.readouterr().err
    assert "different matrix" in err and "--extend" in err and len(err.strip().splitlines()) == 1
    wider = [*SMOKE[:-3], "rectangle,single", "--metrics", "params"]
    assert cli.main(["run", "--resume", "--out", str(out), *wider, *inline]) == 2
    capsys.readouterr()
    assert cli.main(["run", "--resume", "--out", str(out), *wider, "--extend", *inline]) == 0
    assert "1 case(s) measured, 1 already done" in capsys.readouterr().out
    assert [c["variant"] for c in results.read_meta(out)["matrix"]] == ["rectangle", "single"]
    assert len(results.read_records(out)) == 2


def test_run_exits_1_when_a_case_failed(tmp_path, flaky, capsys):
    argv = ["run", "--backbones", flaky, "--frames", "16", "--variants", "rectangle", "--metrics", "params",
            "--executor", "inline", "--no-report", "--size"]  # fmt: skip
    assert cli.main([*argv, "broken", "--out", str(tmp_path / "broken")]) == 1
    assert cli.main([*argv, "tiny", "--out", str(tmp_path / "fine")]) == 0
