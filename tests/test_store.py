"""The run directory: the record writer, done.txt, parts closed exactly once, resume's repairs."""

import json

import pytest

from bench.case import Case
from bench.errors import UsageError
from bench.executors import execute
from bench.jobs import BenchJob
from bench.results import read_records, record
from bench.store import RecordWriter, close_orphans, close_part, finished_case_ids, mark_done, new_part, prepare_resume

JOB = BenchJob(("params",))


def tiny(*variants: str) -> list[Case]:
    return [Case("mixste", v, frames=27, size="tiny").resolve() for v in variants]


def _case(frames: int) -> Case:
    return Case("mixste", frames=frames, size="tiny").resolve()


def test_writer_flushes_each_record_and_reader_round_trips(tmp_path):
    c = Case("mixste", size="tiny", frames=27).resolve()
    w = RecordWriter(tmp_path)
    w.write(record("r", c, "params", 10))
    # Readable before close: a killed run keeps what it wrote.
    assert [r["value"] for r in read_records(tmp_path)] == [10]
    w.write(record("r", c, "latency", 2.5, method="torch.utils.benchmark"))
    w.close()
    assert [r["metric"] for r in read_records(tmp_path / "records.jsonl")] == ["params", "latency"]
    mark_done(tmp_path, c.case_id)
    assert finished_case_ids(tmp_path) == {c.case_id}


def test_unwritable_results_directory_is_a_usage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="cannot write results"):
        RecordWriter(blocker / "run")


def test_prepare_resume_clears_partial_cases_and_torn_lines(tmp_path):
    a, b, c, other = _case(9), _case(11), _case(13), _case(15)
    with RecordWriter(tmp_path) as w:
        w.write(record("r", a, "params", 1))
        w.write(record("r", other, "params", 4))  # a case outside the matrix: never touched
        w.write(record("r", a, "latency", 2.0, method="timeit"))
        w.write(record("r", b, "params", 3))
    mark_done(tmp_path, a.case_id)
    with open(tmp_path / "records.jsonl", "a") as fh:
        fh.write('{"run_id": "r", "case_id": "' + b.case_id + '", "metr')  # killed mid-write
    with open(tmp_path / "done.txt", "a") as fh:
        fh.write(b.case_id[:10])  # killed while marking b done
    done = prepare_resume(tmp_path, [a.case_id, b.case_id, c.case_id])
    assert done == {a.case_id}
    kept = read_records(tmp_path)
    assert [(r["case_id"], r["metric"]) for r in kept] == [
        (a.case_id, "params"), (other.case_id, "params"), (a.case_id, "latency"),
    ]  # fmt: skip
    assert (tmp_path / "done.txt").read_text() == a.case_id + "\n"


def test_prepare_resume_refuses_a_corrupt_file(tmp_path):
    good = json.dumps(record("r", _case(9), "params", 1))
    (tmp_path / "records.jsonl").write_text(good + "\nnot json\n" + good + "\n")
    with pytest.raises(UsageError, match=r"records.jsonl:2: not a JSON record"):
        prepare_resume(tmp_path, ["x"])


def _open_part(run_dir, case, expected):
    return new_part(run_dir, case, "r", expected, log="/logs/job.err")


def test_a_part_is_closed_exactly_once_keeping_what_the_job_measured(tmp_path):
    (case,) = tiny("rectangle")
    part = _open_part(tmp_path, case, ["params", "flops"])
    with RecordWriter(part) as w:
        w.write(record("r", case, "params", 123))
    assert close_part(tmp_path, part, why="killed; log: /logs/job.err")
    assert not close_part(tmp_path, part, why="seen again by a second watcher")
    recs = read_records(tmp_path)
    assert [(r["metric"], r["status"], r["value"]) for r in recs] == [("params", "ok", 123), ("flops", "error", None)]
    assert recs[1]["error"] == "killed; log: /logs/job.err"
    assert finished_case_ids(tmp_path) == set()  # a failed case stays for --resume


def test_resume_closes_parts_left_by_jobs_that_died_unwatched(tmp_path):
    case, earlier = tiny("rectangle", "single")
    orphan = _open_part(tmp_path, case, ["params"])
    with open(tmp_path / "records.jsonl", "w") as fh:
        fh.write(json.dumps(record("r", earlier, "params", 1)) + "\n")
        fh.write('{"case_id": "cut sho')  # cut by a kill: it must not fuse with the next record
    assert close_orphans(tmp_path) == 1 and not orphan.exists()
    recs = read_records(tmp_path)
    assert [(r["case_id"], r["status"]) for r in recs] == [(earlier.case_id, "ok"), (case.case_id, "error")]
    assert "found by --resume" in recs[1]["error"] and "/logs/job.err" in recs[1]["error"]

    orphan = _open_part(tmp_path, case, ["params"])  # the same happens inside a resumed run
    out = execute([case], tmp_path, run_id="r", job=JOB, executor="inline", resume=True, progress=False)
    assert out.finished == [case.case_id] and not orphan.exists()
    recs = read_records(tmp_path)  # the unfinished case was measured afresh; the other case untouched
    assert [(r["case_id"], r["status"]) for r in recs] == [(earlier.case_id, "ok"), (case.case_id, "ok")]
