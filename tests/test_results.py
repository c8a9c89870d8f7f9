"""Cases and tidy records: resolution of defaults, the record schema, line-numbered validation."""

import json

import pytest

from bench.case import Case
from bench.errors import UsageError
from bench.results import (
    RECORD_FIELDS,
    failure,
    read_records,
    record,
    write_meta,
)


def test_resolve_fills_the_variant_defaults_with_counts():
    c = Case("mixste", "single").resolve()
    assert (c.frames, c.size, c.schedule, c.pruner, c.recoverer) == (243, "base", "3:81", "tpc", "tra")
    c = Case("mixste", "hierarchical", frames=729).resolve()
    assert c.schedule == "2:243,5:81"  # ratios of T scale with the sequence length
    c = Case("mixste", "single", schedule="4:0.5", pruner="tps", recoverer="tri", frames=100).resolve()
    assert (c.schedule, c.pruner, c.recoverer) == ("4:50", "tps", "tri")
    assert Case("mixste").resolve().schedule == ""


@pytest.mark.parametrize(
    "case, message",
    [
        (Case("nope"), "unknown backbone 'nope'"),
        (Case("mixste", "square"), "unknown variant 'square'"),
        (Case("mixste", "single", pruner="foo"), "unknown pruner 'foo'"),
        (Case("mixste", "single", recoverer="bar"), "unknown recoverer 'bar'"),
        (Case("mixste", "single", schedule="3:300"), "bad schedule '3:300'"),
        (Case("mixste", "single", schedule="x"), "bad schedule 'x'"),
        (Case("mixste", "rectangle", schedule="3:81"), "rectangle variant takes no schedule"),
        (Case("mixste", dtype="int8"), "unknown dtype 'int8'"),
        (Case("mixste", size="huge"), "unknown size 'huge'"),
        (Case("mixste", frames=1), "cannot take 1 frames"),
    ],
)
def test_bad_cases_raise_one_line_usage_errors(case, message):
    with pytest.raises(UsageError, match=message) as info:
        case.resolve()
    assert "\n" not in str(info.value)


def test_a_schedule_beyond_the_depth_fails_when_the_model_is_built():
    with pytest.raises(UsageError, match="outside the depth 8"):
        Case("mixste", "single", schedule="9:81").build()


def test_records_carry_every_field_in_order_and_the_metric_unit():
    c = Case("mixste", "single", size="tiny", frames=27).resolve()
    r = record("run1", c, "flops", 1.5, method="fvcore", unsupported={"aten::foo": 2})
    assert list(r)[: len(RECORD_FIELDS)] == list(RECORD_FIELDS)
    assert (r["unit"], r["method"], r["status"], r["schedule"], r["pipeline"]) == (
        "GFLOPs", "fvcore", "ok", "3:9", "seq2seq",
    )
    assert r["unsupported"] == {"aten::foo": 2}
    f = failure("run1", c, "latency", MemoryError("out of memory\ntrace..."), status="oom")
    assert (f["value"], f["status"], f["error"]) == (None, "oom", "MemoryError: out of memory")
    with pytest.raises(ValueError, match="unknown metric"):
        record("run1", c, "speed", 1.0)


def test_malformed_records_name_file_and_line(tmp_path):
    good = json.dumps(record("r", Case("mixste", size="tiny", frames=27).resolve(), "params", 1))
    path = tmp_path / "records.jsonl"
    path.write_text(good + "\n{not json}\n" + good + "\n")
    with pytest.raises(UsageError, match=r"records.jsonl:2: not a JSON record"):
        read_records(path)
    path.write_text(good + "\n" + json.dumps({"case_id": "x"}) + "\n")
    with pytest.raises(UsageError, match=r"records.jsonl:2: record lacks backbone"):
        read_records(path)
    path.write_text(good.replace('"value": 1', '"value": "big"') + "\n")
    with pytest.raises(UsageError, match=r"records.jsonl:1: value must be a finite number"):
        read_records(path)
    with pytest.raises(UsageError, match="no such results file"):
        read_records(tmp_path / "missing")


def test_a_record_cut_short_by_a_kill_is_dropped(tmp_path):
    good = json.dumps(record("r", Case("mixste", size="tiny", frames=27).resolve(), "params", 1))
    path = tmp_path / "records.jsonl"
    path.write_text(good + "\n" + good[:40])
    assert len(read_records(path)) == 1


def test_meta_records_the_environment(tmp_path):
    meta = write_meta(tmp_path, {"preset": "smoke"})
    on_disk = json.loads((tmp_path / "meta.json").read_text())
    assert on_disk == meta
    for key in ("schema_version", "package_version", "git_commit", "python", "torch", "threads", "cpu_model",
                "hostname", "start_time", "command"):
        assert key in meta
    assert meta["preset"] == "smoke"
