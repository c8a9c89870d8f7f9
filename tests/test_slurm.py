"""The Slurm executor: what it asks for, how it reads the scheduler, and runs on a live cluster.

The first half tests the pure logic (requests against ``sinfo``, pending reasons, how a job
ended) on command output pasted from Slurm 22.05. The tests marked ``slurm`` run against the
single-node cluster that ``tests/conftest.py`` starts on localhost (2 CPUs, no accounting
database): tiny MixSTE cases with params and FLOPs only, and ``sleepy``, a copy of tiny MixSTE
whose model is built only once a hold file is gone, for jobs that must still run when the test
cancels them, interrupts the run or waits for the time limit.
"""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.core.case import Case
from bench.core.results import measurement_key, read_records, scan_records
from bench.run import slurm_queue as sq
from bench.run.jobs import BenchJob
from bench.run.presets import PAPER_SETTINGS, SMOKE_SETTINGS
from bench.run.slurm import SlurmOptions, case_mem_gb, placement, plan_jobs

ROOT = Path(__file__).resolve().parents[1]

# `sinfo -h -N -o "%P|%N|%c|%m|%l|%a|%T|%G"` on a cluster with a CPU and a GPU partition.
SINFO = """\
cpu*|c1|64|257000|2-00:00:00|up|mixed|(null)
cpu*|c2|32|128000|2-00:00:00|up|idle|(null)
cpu*|c3|64|257000|2-00:00:00|up|drained|(null)
gpu|g1|16|500000|12:00:00|up|idle|gpu:a100:8(S:0-1)
gpu|g2|16|500000|12:00:00|up|down*|gpu:a100:8(S:0-1)
"""
# The single-node test cluster.
SINFO_ONE = "debug*|vm|2|19284|infinite|up|idle|(null)\n"
SCONTROL_PARTITION = (
    "PartitionName=cpu AllowGroups=ALL Default=YES MaxNodes=UNLIMITED MaxTime=2-00:00:00 MaxCPUsPerNode=48 "
    "Nodes=c[1-3] State=UP TotalCPUs=160 DefMemPerNode=UNLIMITED MaxMemPerNode=200000\n"
)


def parts():
    return sq.parse_sinfo(SINFO)


# --------------------------------------------------------------------------- requests against the partition


def test_sinfo_gives_partitions_nodes_limits_and_the_default():
    p = parts()
    assert sorted(p) == ["cpu", "gpu"] and p["cpu"].default and not p["gpu"].default
    assert [(n.name, n.cpus, n.mem_mb, n.gpus, n.usable) for n in p["gpu"].nodes] == [
        ("g1", 16, 500000, 8, True), ("g2", 16, 500000, 8, False),
    ]  # fmt: skip
    assert p["cpu"].time_min == 2 * 24 * 60 and p["gpu"].time_min == 12 * 60
    assert not p["cpu"].nodes[2].usable  # drained
    one = sq.parse_sinfo(SINFO_ONE)["debug"]
    assert math.isinf(one.time_min) and one.offers() == "at most 2 CPUs, 18.8 GB per node (1 node(s)), no time limit"


@pytest.mark.parametrize("text, minutes", [
    ("infinite", math.inf), ("UNLIMITED", math.inf), ("30", 30), ("30:00", 30), ("1:00:00", 60),
    ("2-00:00:00", 2880), ("1-12", 36 * 60), ("00:01:00", 1),
])  # fmt: skip
def test_slurm_times_in_minutes(text, minutes):
    assert sq.parse_time(text) == minutes


def test_a_request_that_fits_a_usable_node_passes():
    assert sq.check_request(sq.Request(cpus=32, mem_mb=100_000, time_min=60), parts()) is None
    assert sq.check_request(sq.Request(cpus=8, mem_mb=8192, time_min=600, gpus=2, partition="gpu"), parts()) is None


@pytest.mark.parametrize("req, words", [
    (sq.Request(cpus=128, mem_mb=4096, time_min=60), ["128 CPUs (--slurm-cpus)", "at most 64 CPUs"]),
    (sq.Request(cpus=4, mem_mb=400_000, time_min=60), ["390.625 GB (--slurm-mem)", "251.0 GB per node"]),
    (sq.Request(cpus=4, mem_mb=4096, time_min=60, gpus=1), ["1 GPUs (--slurm-gpus)"]),
    (sq.Request(cpus=4, mem_mb=4096, time_min=3000), ["--slurm-time 3000", "time limit of partition cpu (2880 min)"]),
    (sq.Request(cpus=4, mem_mb=4096, time_min=60, partition="big"), ["--slurm-partition big: no such partition",
                                                                     "choose from cpu, gpu"]),
    (sq.Request(cpus=64, mem_mb=4096, time_min=60, partition="gpu"), ["64 CPUs", "partition gpu offers at most 16 CPUs"]),
])  # fmt: skip
def test_a_request_no_node_can_take_is_one_line_naming_request_and_partition(req, words):
    why = sq.check_request(req, parts())
    assert why and "\n" not in why
    for w in words:
        assert w in why


def test_a_request_only_unavailable_nodes_fit_is_refused_and_names_their_states():
    why = sq.check_request(sq.Request(cpus=48, mem_mb=4096, time_min=60), parts())
    assert why is None  # c1 (mixed) fits
    down = sq.parse_sinfo(SINFO.replace("|mixed|", "|down*|"))
    why = sq.check_request(sq.Request(cpus=48, mem_mb=4096, time_min=60), down)
    assert "unavailable" in why and "c1 down*" in why and "c3 drained" in why


def test_partition_limits_from_scontrol_cap_what_a_node_offers():
    p = sq.with_limits(parts(), SCONTROL_PARTITION)
    assert p["cpu"].max_cpus_per_node == 48 and p["cpu"].max_mem_mb_per_node == 200000
    assert "48 CPUs" in sq.check_request(sq.Request(cpus=64, mem_mb=4096, time_min=60), p)
    assert sq.check_request(sq.Request(cpus=48, mem_mb=4096, time_min=60), p) is None


def test_no_default_partition_asks_for_one():
    p = sq.parse_sinfo(SINFO.replace("cpu*", "cpu"))
    assert "no default partition: choose --slurm-partition from cpu, gpu" in sq.check_request(
        sq.Request(cpus=1, mem_mb=1024, time_min=1), p)  # fmt: skip


# --------------------------------------------------------------------------- the queue


def test_squeue_lines_by_array_task():
    text = "41_0|RUNNING|None|vm\n41_1|PENDING|Resources|\n41_2|PENDING|PartitionConfig|\n"
    states = sq.parse_squeue(text)
    assert states["41_0"] == sq.QueueState("RUNNING", "None", "vm")
    assert states["41_2"].reason == "PartitionConfig"


def test_jobs_squeue_has_forgotten_are_simply_not_in_the_queue(monkeypatch):
    error = ["squeue: slurm_load_jobs error: Invalid job id specified"]

    def squeue(cmd, timeout=30):
        raise sq.SlurmCommandError(error[0])

    monkeypatch.setattr(sq, "_run", squeue)
    assert sq.queue(["41"]) == {}  # one id, purged after MinJobAge: squeue fails rather than list nothing
    error[0] = "squeue: slurm_load_jobs error: Unable to contact slurm controller (connect failure)"
    with pytest.raises(sq.SlurmCommandError):
        sq.queue(["41"])  # the controller unreachable: the watcher keeps waiting


@pytest.mark.parametrize("reason, hopeless", [
    ("PartitionConfig", True), ("PartitionNodeLimit", True), ("PartitionTimeLimit", True), ("InvalidAccount", True),
    ("InvalidQOS", True), ("QOSMaxWallDurationPerJobLimit", True), ("AssocMaxCpuPerJobLimit", True),
    ("QOSMaxCpuPerJobLimit", True), ("BadConstraints", True),
    ("Resources", False), ("Priority", False), ("None", False), ("QOSMaxJobsPerUserLimit", False),
    ("AssocGrpCpuLimit", False), ("JobArrayTaskLimit", False), ("BeginTime", False), ("Dependency", False),
])  # fmt: skip
def test_pending_reasons_that_waiting_cannot_resolve(reason, hopeless):
    assert sq.hopeless(reason) is hopeless


def test_req_node_not_avail_is_hopeless_only_when_no_node_of_the_partition_can_run_jobs():
    reason = "ReqNodeNotAvail,_UnavailableNodes:g2"
    assert not sq.hopeless(reason)  # without sinfo: keep waiting
    assert not sq.hopeless(reason, parts(), "gpu")  # g1 is idle
    down = sq.parse_sinfo(SINFO.replace("|idle|gpu", "|drained|gpu"))
    assert sq.hopeless(reason, down, "gpu")
    assert "every node that could run the job is down" in sq.explain(reason)


# --------------------------------------------------------------------------- how a job ended


def test_a_timed_out_job_names_its_limit_from_scontrol():
    line = ("JobId=9 ArrayJobId=8 ArrayTaskId=0 JobName=vptbench-r JobState=TIMEOUT Reason=TimeLimit "
            "Dependency=(null) ExitCode=0:15 RunTime=00:01:29 TimeLimit=00:01:00 MinMemoryNode=2G")  # fmt: skip
    (info,) = sq.parse_scontrol(line)
    ended = sq.describe_end(info["JobState"], info, "scontrol")
    assert (ended.state, ended.status) == ("TIMEOUT", "error")
    assert ended.why == "reached its time limit (1 min, --slurm-time) and was killed by Slurm"


@pytest.mark.parametrize("state, status, words", [
    ("OUT_OF_MEMORY", "oom", "ran out of its memory (2G, --slurm-mem)"),
    ("NODE_FAIL", "error", "its node failed"),
    ("PREEMPTED", "error", "preempted"),
    ("CANCELLED by 0", "error", "cancelled"),
])  # fmt: skip
def test_scheduler_kills_become_error_or_oom_with_the_reason(state, status, words):
    ended = sq.describe_end(state, {"MinMemoryNode": "2G", "TimeLimit": "01:00:00"})
    assert ended.status == status and words in ended.why


@pytest.mark.parametrize("log, state", [
    ("slurmstepd-vm: error: *** JOB 8 ON vm CANCELLED AT 2026-12-06T15:11:59 DUE TO TIME LIMIT ***", "TIMEOUT"),
    ("slurmstepd: error: Detected 1 oom-kill event(s) in StepId=12.batch. Some of your processes may have been "
     "killed by the cgroup out-of-memory handler.", "OUT_OF_MEMORY"),
    ("slurmstepd: error: *** JOB 8 ON n1 CANCELLED AT 2026-12-06T15:11:59 DUE TO NODE FAILURE, SEE SLURMCTLD LOG ***",
     "NODE_FAIL"),
    ("slurmstepd: error: *** JOB 8 ON n1 CANCELLED AT 2026-12-06T15:11:59 DUE TO PREEMPTION ***", "PREEMPTED"),
    ("slurmstepd: error: *** JOB 8 ON n1 CANCELLED AT 2026-12-06T15:11:59 ***", "CANCELLED"),
    ("Traceback (most recent call last):", ""),
])  # fmt: skip
def test_the_job_log_tells_how_it_was_killed_without_accounting(log, state):
    assert sq.ended_from_log(log) == state


# --------------------------------------------------------------------------- defaults


def test_memory_follows_the_case_not_a_fixed_32_gb():
    tiny = Case("mixste", "rectangle", frames=27, size="tiny").resolve()
    base = Case("mixste", "rectangle").resolve()
    assert case_mem_gb(tiny, trains=True) == 2  # the smoke preset fits the smallest node
    assert case_mem_gb(base, trains=False) == 2
    assert case_mem_gb(base, trains=True) == 6  # 1.5 x (1 + 2.7) GiB: measured training peak plus headroom
    longer = Case("mixste", "rectangle", frames=729).resolve()
    assert case_mem_gb(longer, trains=True) == 14  # activations grow with the length
    assert case_mem_gb(Case("mhformer", "rectangle").resolve(), trains=True) == 2


def _plan(monkeypatch, opts, job, cases=None):
    monkeypatch.setattr(sq, "partitions", lambda: sq.parse_sinfo(SINFO))
    cases = cases or [Case("mixste", v, frames=27, size="tiny").resolve() for v in ("rectangle", "single")]
    return plan_jobs(opts, cases, job)


def test_cpus_are_the_case_threads_and_timing_runs_get_whole_nodes(monkeypatch):
    smoke = BenchJob(("params", "flops", "latency"), SMOKE_SETTINGS)  # 1 thread
    ((req, cases),) = _plan(monkeypatch, SlurmOptions(), smoke)
    assert (req.cpus, req.mem_mb, req.exclusive, len(cases)) == (1, 2048, True, 2)
    paper = BenchJob(("params", "latency"), PAPER_SETTINGS)  # the machine's threads: a whole node's cores
    ((req, _),) = _plan(monkeypatch, SlurmOptions(), paper)
    assert (req.cpus, req.exclusive) == (32, True)  # the smallest usable node of the default partition
    counts = BenchJob(("params", "flops"), PAPER_SETTINGS)
    ((req, _),) = _plan(monkeypatch, SlurmOptions(), counts)
    assert (req.cpus, req.exclusive) == (4, False)
    ((req, _),) = _plan(monkeypatch, SlurmOptions(cpus=3, mem_gb=5, exclusive=False), paper)  # explicit wins
    assert (req.cpus, req.mem_mb, req.exclusive) == (3, 5 * 1024, False)


def test_cases_needing_different_memory_go_to_different_arrays(monkeypatch):
    cases = [Case("mixste", "rectangle", frames=27, size="tiny").resolve(), Case("mixste", "rectangle").resolve()]
    plan = _plan(monkeypatch, SlurmOptions(), BenchJob(("memory",), SMOKE_SETTINGS), cases)
    assert sorted((r.mem_mb // 1024, len(c)) for r, c in plan) == [(2, 1), (6, 1)]


def test_an_oversized_default_is_refused_before_submitting(monkeypatch):
    from bench.core.errors import UsageError

    with pytest.raises(UsageError, match=r"128 CPUs \(--slurm-cpus\).*partition cpu offers at most 64 CPUs"):
        _plan(monkeypatch, SlurmOptions(cpus=128), BenchJob(("params",)))


def test_placement_from_the_job_environment():
    env = {"SLURM_JOB_ID": "44", "SLURM_ARRAY_JOB_ID": "41", "SLURM_ARRAY_TASK_ID": "3", "SLURMD_NODENAME": "vm",
           "SLURM_CPUS_ON_NODE": "2", "SLURM_MEM_PER_NODE": "2048"}  # fmt: skip
    assert placement(True, env) == {"slurm_job_id": "41_3", "slurm_node": "vm", "slurm_cpus": 2,
                                    "slurm_mem_mb": 2048, "slurm_exclusive": True}  # fmt: skip


@pytest.mark.parametrize("argv, words", [
    (["--detach"], "--detach leaves Slurm jobs running when the run stops: it needs --executor slurm"),
    (["--executor", "slurm", "--slurm-cpus", "0"], "--slurm-cpus must be >= 1, got 0"),
    (["--executor", "slurm", "--slurm-mem", "-2"], "--slurm-mem must be >= 1, got -2"),
])  # fmt: skip
def test_bad_slurm_options_are_one_line_and_exit_2(tmp_path, capsys, argv, words):
    base = ["run", "--backbones", "mixste", "--variants", "rectangle", "--frames", "27", "--size", "tiny",
            "--metrics", "params", "--no-report", "--out", str(tmp_path / "r")]  # fmt: skip
    assert main(base + argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and "Traceback" not in err


def test_resume_refuses_while_the_runs_jobs_are_still_queued(tmp_path, monkeypatch):
    from bench.core.errors import UsageError
    from bench.run.slurm import JOBS_FILE, check_no_live_jobs

    (tmp_path / JOBS_FILE).write_text("41 2026-12-06T15:24:19\n52 2026-12-06T16:00:00\n")
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/" + name)
    asked = []

    def queue(ids):
        asked.append(list(ids))
        return sq.parse_squeue("52_0|RUNNING|None|vm\n52_1|PENDING|Resources|\n")

    monkeypatch.setattr(sq, "queue", queue)
    with pytest.raises(UsageError) as info:
        check_no_live_jobs(tmp_path)
    assert asked == [["41", "52"]]
    assert "2 job(s) of this run are still queued or running (1 pending (Resources), 1 running)" in str(info.value)
    assert "scancel 52" in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setattr(sq, "queue", lambda ids: {})
    check_no_live_jobs(tmp_path)  # all ended: resume goes ahead


# --------------------------------------------------------------------------- a live cluster

SLEEPY = textwrap.dedent('''
    """Tiny MixSTE whose model is built only once the file named by VPTBENCH_TEST_HOLD is gone."""
    import os
    import time

    import backbones

    _mixste = backbones.spec("mixste")


    @backbones.register("sleepy", pipeline=_mixste.pipeline, in_channels=_mixste.in_channels, frames=27,
                        single=_mixste.variants["single"], hierarchical=_mixste.variants["hierarchical"],
                        sizes={"tiny": _mixste.sizes["tiny"]}, default_size="tiny")
    def sleepy(**kw):
        hold = os.environ.get("VPTBENCH_TEST_HOLD")
        while hold and os.path.exists(hold):
            time.sleep(0.2)
        return _mixste.build(**kw)
''')
MATRIX = ["--preset", "smoke", "--metrics", "params,flops", "--no-report"]


def _vptbench(out, *argv, hold=None, plugin=None, matrix=MATRIX):
    """``vptbench run`` as a subprocess (what a user types), on the session's cluster."""
    env = dict(os.environ)
    if hold is not None:
        env["VPTBENCH_TEST_HOLD"] = str(hold)
    cmd = [sys.executable, "-m", "bench", "run", *matrix, "--executor", "slurm", "--out", str(out), *argv]
    cmd += ["--plugin", str(plugin)] if plugin else []
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _ours(cluster, out):
    """The queue's lines for the jobs of the run in ``out`` (named vptbench-<run id>)."""
    return [line for line in cluster.jobs() if line.split()[-1] == f"vptbench-{Path(out).name}"]


def _wait_for(what, timeout=60.0):
    end = time.monotonic() + timeout
    while not (found := what()):
        assert time.monotonic() < end, "timed out"
        time.sleep(0.3)
    return found


@pytest.fixture(scope="module")
def sleepy_plugin(tmp_path_factory):
    path = tmp_path_factory.mktemp("plugin") / "sleepy.py"
    path.write_text(SLEEPY)
    return path


@pytest.fixture(scope="module")
def time_limit_run(tmp_path_factory, sleepy_plugin, slurm_cluster):
    """A job that outlives its 1-minute limit, started first: Slurm takes 60 to 90 s to kill it."""
    root = tmp_path_factory.mktemp("timelimit")
    hold = root / "hold"
    hold.touch()
    out = root / "overtime"  # the run id, and the jobs' name: vptbench-overtime
    proc = _vptbench(out, "--backbones", "sleepy", "--variants", "rectangle", "--slurm-time", "1",
                     hold=hold, plugin=sleepy_plugin)  # fmt: skip
    yield proc, out
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # this test was not selected: its run cancels its job
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def smoke_on_slurm(tmp_path_factory, slurm_cluster, time_limit_run):
    """The smoke matrix of MixSTE (3 cases) as a job array, run as a user would; its stderr kept."""
    out = tmp_path_factory.mktemp("smoke") / "slurm"
    proc = _vptbench(out, "--backbones", "mixste")
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err, out


@pytest.mark.slurm
def test_a_smoke_matrix_as_a_job_array_gives_the_local_executors_records(tmp_path, smoke_on_slurm, slurm_cluster):
    rc, err, out = smoke_on_slurm
    assert rc == 0, err
    local = tmp_path / "local"
    assert main(["run", *MATRIX, "--backbones", "mixste", "--out", str(local)]) == 0
    values = {}
    for run in (out, local):
        values[run] = {measurement_key(r): (r["value"], r["status"]) for r in read_records(run)}
    assert len(values[out]) > 3 and values[out] == values[local]  # params and every FLOPs counter, equal
    recs = read_records(out)
    assert {r["slurm_node"] for r in recs} == {slurm_cluster.node}
    assert {(r["slurm_cpus"], r["slurm_exclusive"]) for r in recs} == {(1, False)}  # smoke: 1 thread, shared
    assert len({r["slurm_job_id"] for r in recs}) == 3
    meta = json.loads((out / "meta.json").read_text())
    assert meta["slurm_requests"] == [{"cpus": 1, "mem_mb": 2048, "time_min": 60, "gpus": 0, "partition": None,
                                       "exclusive": False, "cases": 3}]  # fmt: skip


@pytest.mark.slurm
def test_a_cluster_without_accounting_gets_no_submitit_warning(smoke_on_slurm):
    rc, err, _ = smoke_on_slurm
    assert rc == 0
    assert "sacct" not in err and "Bypassing" not in err and "WARNING" not in err


@pytest.mark.slurm
def test_an_oversized_request_exits_2_at_once_with_one_line_and_submits_nothing(tmp_path, slurm_cluster, capsys):
    start = time.monotonic()
    code = main(["run", *MATRIX, "--backbones", "mixste", "--executor", "slurm", "--slurm-cpus", "4",
                 "--slurm-mem", "32", "--out", str(tmp_path / "big")])  # fmt: skip
    assert code == 2 and time.monotonic() - start < 30
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "4 CPUs (--slurm-cpus) and 32 GB (--slurm-mem)" in err and "partition debug offers at most 2 CPUs" in err
    assert not _ours(slurm_cluster, tmp_path / "big") and not (tmp_path / "big").exists()


@pytest.mark.slurm
def test_a_job_slurm_will_never_start_stops_the_run_and_is_cancelled(tmp_path, slurm_cluster, capsys):
    out = tmp_path / "twonodes"
    start = time.monotonic()
    code = main(["run", *MATRIX, "--backbones", "mixste", "--variants", "rectangle", "--executor", "slurm",
                 "--slurm-extra", "nodes=2", "--out", str(out)])  # fmt: skip
    assert code == 2 and time.monotonic() - start < 30
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "Slurm will not start job" in last and "--slurm-extra nodes=2" in last
    assert "partition debug offers at most 2 CPUs" in last and "cancelled" in last
    assert not _ours(slurm_cluster, out)
    assert not list(out.glob("parts/*"))  # the jobs never started: no part is left to close


@pytest.mark.slurm
def test_sigint_to_the_submitting_process_cancels_its_jobs(tmp_path, slurm_cluster, sleepy_plugin):
    hold = tmp_path / "hold"
    hold.touch()
    out = tmp_path / "interrupted"
    proc = _vptbench(out, "--backbones", "sleepy", "--variants", "rectangle,single", hold=hold, plugin=sleepy_plugin)
    _wait_for(lambda: _ours(slurm_cluster, out))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "cancelled the 2 unfinished job(s)" in err
    assert not _ours(slurm_cluster, out)


@pytest.mark.slurm
def test_scancel_of_a_running_job_then_resume_gives_the_uninterrupted_keys_once(tmp_path, slurm_cluster, sleepy_plugin):
    hold = tmp_path / "hold"
    hold.touch()
    out = tmp_path / "cancelled"
    proc = _vptbench(out, "--backbones", "sleepy", "--variants", "rectangle,single", hold=hold, plugin=sleepy_plugin)
    running = _wait_for(lambda: [ln.split()[0] for ln in _ours(slurm_cluster, out) if " RUNNING " in ln])[0]
    subprocess.run(["scancel", running], check=True)
    _wait_for(lambda: running not in " ".join(_ours(slurm_cluster, out)))
    hold.unlink()  # the other case goes on and finishes
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err  # one case failed, the run went on
    errors = [r for r in read_records(out) if r["status"] != "ok"]
    assert errors and all(f"Slurm job {running} was cancelled" in r["error"] for r in errors), err
    assert len({r["case_id"] for r in errors}) == 1

    resumed = _vptbench(out, "--resume", "--no-report", plugin=sleepy_plugin, matrix=[])  # the run's own matrix
    text, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert "1 case(s) measured, 1 already done" in text
    keys = [measurement_key(r) for r in scan_records(out).records]  # scan_records refuses a key twice
    ref = tmp_path / "ref"
    ran = subprocess.run([sys.executable, "-m", "bench", "run", *MATRIX, "--backbones", "sleepy", "--variants",
                          "rectangle,single", "--executor", "inline", "--out", str(ref), "--plugin", str(sleepy_plugin)],
                         capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert sorted(keys) == sorted(measurement_key(r) for r in read_records(ref))
    assert all(r["status"] == "ok" for r in read_records(out))


@pytest.mark.slurm
def test_detach_leaves_the_jobs_and_resume_waits_until_they_have_ended(tmp_path, slurm_cluster, sleepy_plugin):
    hold = tmp_path / "hold"
    hold.touch()
    out = tmp_path / "detached"
    proc = _vptbench(out, "--backbones", "sleepy", "--variants", "rectangle", "--detach", hold=hold, plugin=sleepy_plugin)
    _wait_for(lambda: _ours(slurm_cluster, out))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    (array,) = {ln.split()[0].split("_")[0] for ln in _ours(slurm_cluster, out)}  # still there, on purpose
    assert f"cancel them with: scancel {array}" in err and "--resume" in err

    early = _vptbench(out, "--resume", "--no-report", plugin=sleepy_plugin, matrix=[])
    _, err = early.communicate(timeout=60)
    assert early.returncode == 2 and len(err.strip().splitlines()) == 1, err
    assert "still queued or running" in err and f"scancel {array}" in err

    subprocess.run(["scancel", array], check=True)
    _wait_for(lambda: not _ours(slurm_cluster, out))
    hold.unlink()
    resumed = _vptbench(out, "--resume", "--no-report", plugin=sleepy_plugin, matrix=[])
    text, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert "1 case(s) measured" in text and all(r["status"] == "ok" for r in read_records(out))


@pytest.mark.slurm
def test_a_job_over_its_time_limit_becomes_an_error_naming_the_limit(time_limit_run, slurm_cluster):
    proc, out = time_limit_run
    _, err = proc.communicate(timeout=150)
    assert proc.returncode == 1, err  # a case failed; the run itself ended normally
    recs = read_records(out)
    assert [(r["metric"], r["status"]) for r in recs] == [("params", "error"), ("flops", "error")]
    for rec in recs:
        assert "reached its time limit (1 min, --slurm-time) and was killed by Slurm" in rec["error"]
        assert Path(rec["error"].rsplit("log: ", 1)[1]).is_file()
    assert not _ours(slurm_cluster, out)
