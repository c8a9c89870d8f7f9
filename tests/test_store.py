"""The run directory: the record writer, done.txt, parts closed exactly once, resume's repairs."""

import json

import pytest

from bench.cli import main
from bench.core.case import Case
from bench.core.errors import UsageError
from bench.core.results import read_records, record
from bench.run.executors import execute
from bench.run.jobs import BenchJob
from bench.run.store import (
    RecordWriter,
    close_orphans,
    close_part,
    finished_case_ids,
    mark_done,
    new_part,
    prepare_resume,
)

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


# --------------------------------------------------------------------------- records checked wherever read


def _run_dir(tmp_path, cases, name="run"):
    """A finished run of ``cases`` (params only, inline): records, done.txt and meta.json."""
    run = tmp_path / name
    execute(cases, run, run_id=name, job=JOB, executor="inline", progress=False)
    return run


def test_a_duplicated_record_is_refused_by_every_reader(tmp_path, capsys):
    run = _run_dir(tmp_path, tiny("rectangle", "single"))
    first = (run / "records.jsonl").read_text().splitlines()[0]
    with open(run / "records.jsonl", "a") as fh:
        fh.write(first + "\n")
    flags = ["--backbones", "mixste", "--variants", "rectangle,single", "--frames", "27", "--size", "tiny",
             "--metrics", "params", "--executor", "inline", "--no-report"]  # fmt: skip
    for argv in (["report", str(run), "--out", str(tmp_path / "rep")], ["gate", "--baseline", str(run), "--current",
                 str(run)], ["merge", str(run), "--out", str(tmp_path / "m")], ["run", "--resume", "--out", str(run),
                 *flags]):  # fmt: skip
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "records.jsonl:3:" in err and "also on line 1" in err, (argv, err)


def test_a_cut_last_line_warns_and_its_case_is_unfinished(tmp_path, capsys):
    cases = tiny("rectangle", "single")
    run = _run_dir(tmp_path, cases)
    whole = sorted((r["case_id"], r["metric"]) for r in read_records(run))
    text = (run / "records.jsonl").read_text()
    (run / "records.jsonl").write_text(text[:-40])  # the single case's record cut, although done.txt lists it
    capsys.readouterr()
    assert len(read_records(run)) == 1
    err = capsys.readouterr().err
    assert f"{run / 'records.jsonl'}:2: last line is not a whole record" in err and cases[1].case_id in err

    assert main(["merge", str(run), "--out", str(tmp_path / "merged")]) == 0
    assert finished_case_ids(tmp_path / "merged") == {cases[0].case_id}  # not trusted as finished

    out = execute(cases, run, run_id="run", job=JOB, executor="inline", resume=True, progress=False)
    assert out.finished == [cases[1].case_id] and out.skipped == [cases[0].case_id]
    assert sorted((r["case_id"], r["metric"]) for r in read_records(run)) == whole
    assert (run / "records.jsonl").read_text().endswith("\n")


@pytest.mark.parametrize("how", ["emptied", "deleted"])
def test_resume_measures_cases_done_txt_lists_without_records(tmp_path, how, capsys):
    cases = tiny("rectangle", "single")
    run = _run_dir(tmp_path, cases)
    whole = sorted((r["case_id"], r["metric"]) for r in read_records(run))
    if how == "emptied":
        (run / "records.jsonl").write_text("")
    else:
        (run / "records.jsonl").unlink()
    out = execute(cases, run, run_id="run", job=JOB, executor="inline", resume=True, progress=False)
    assert sorted(out.finished) == sorted(c.case_id for c in cases) and out.skipped == []
    assert "2 case(s) listed in done.txt lack records" in capsys.readouterr().err
    assert sorted((r["case_id"], r["metric"]) for r in read_records(run)) == whole
    assert finished_case_ids(run) == {c.case_id for c in cases}


def test_files_that_are_not_utf8_or_meta_that_is_not_an_object_exit_2(tmp_path, capsys):
    run = _run_dir(tmp_path, tiny("rectangle"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "records.jsonl").write_bytes(b'{"case_id": "\xff"}\n')
    (run / "meta.json").write_text("[1, 2]\n")
    done = tmp_path / "done"
    done.mkdir()
    (done / "records.jsonl").write_text("")
    (done / "done.txt").write_bytes(b"mixste\xfe\n")
    for argv, message in (
        (["gate", "--baseline", str(bad), "--current", str(bad)], "not UTF-8 text"),
        (["report", str(run), "--out", str(tmp_path / "rep")], "meta.json must hold a JSON object, got list"),
        (["merge", str(done), "--out", str(tmp_path / "m")], "done.txt: not UTF-8 text"),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (argv, err)
