"""``vptbench merge``: shards combine into the unsharded run; overlaps and malformed sources are refused."""

import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.core.case import Case
from bench.core.errors import UsageError
from bench.core.results import read_meta, read_records
from bench.run.executors import execute, shard
from bench.run.jobs import BenchJob
from bench.run.merge import merge_runs
from bench.run.store import finished_case_ids

JOB = BenchJob(("params",))


def tiny(*variants: str) -> list[Case]:
    return [Case("mixste", v, frames=27, size="tiny").resolve() for v in variants]


def comparable(recs):
    """Records in a fixed order."""
    return sorted(recs, key=lambda r: json.dumps(r, sort_keys=True))


def _run_shards(tmp_path, cases, n):
    dirs = []
    for i in range(1, n + 1):
        d = tmp_path / f"shard{i}"
        execute(shard(cases, f"{i}/{n}"), d, run_id=d.name, job=JOB, executor="inline", progress=False)
        dirs.append(d)
    return dirs


def test_merging_shards_gives_the_unsharded_case_set(tmp_path, capsys):
    cases = tiny("rectangle", "single", "hierarchical")
    whole = tmp_path / "whole"
    execute(cases, whole, run_id="whole", job=JOB, executor="inline", progress=False)
    a, b = _run_shards(tmp_path, cases, 2)
    assert main(["merge", str(a), str(b), "--out", str(tmp_path / "merged")]) == 0
    merged = read_records(tmp_path / "merged")
    assert sorted(r["case_id"] for r in merged) == sorted(r["case_id"] for r in read_records(whole))
    assert {r["run_id"] for r in merged} == {"merged"} and {r["source_run_id"] for r in merged} == {"shard1", "shard2"}
    strip = [{k: v for k, v in r.items() if k not in ("run_id", "source_run_id")} for r in merged]
    assert comparable(strip) == comparable([{k: v for k, v in r.items() if k != "run_id"} for r in read_records(whole)])
    assert finished_case_ids(tmp_path / "merged") == finished_case_ids(whole)
    meta = read_meta(tmp_path / "merged")
    assert [Path(s["run_dir"]).name for s in meta["merged_from"]] == ["shard1", "shard2"]
    assert "merged 3 records" in capsys.readouterr().out


def test_merge_refuses_overlapping_sources_and_malformed_files(tmp_path, capsys):
    cases = tiny("rectangle", "single")
    (a,) = _run_shards(tmp_path, cases, 1)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "records.jsonl").write_bytes((a / "records.jsonl").read_bytes())
    assert main(["merge", str(a), str(copy), "--out", str(tmp_path / "m1")]) == 2
    assert "shards must not overlap" in capsys.readouterr().err
    assert not (tmp_path / "m1").exists()  # nothing written on refusal

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "records.jsonl").write_text((a / "records.jsonl").read_text().splitlines()[0] + "\n{oops}\n{}\n")
    assert main(["merge", str(bad), "--out", str(tmp_path / "m2")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{bad / 'records.jsonl'}:2" in err

    assert main(["merge", str(tmp_path / "nope"), "--out", str(tmp_path / "m3")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    with pytest.raises(UsageError, match="already holds records"):
        merge_runs([a], a)
