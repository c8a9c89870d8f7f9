"""Cases and tidy records: resolution of defaults, the record schema, line-numbered validation."""

import json
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.core.case import Case
from bench.core.errors import UsageError
from bench.core.results import RECORD_FIELDS, failure, git_dirty, read_records, record, scan_records, write_meta
from bench.run.store import drop_cut_line


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


# --------------------------------------------------------------------------- the reader, property-tested

_CASES = [Case("mixste", v, frames=t, size="tiny") for v in ("rectangle", "single") for t in (27, 81)]
_KEYS = [(c, m, meth) for c in _CASES for m, meth in (("params", "-"), ("flops", "fvcore"), ("flops", "paper"))]


@st.composite
def record_files(draw):
    """Distinct measurements, written one per line as RecordWriter does."""
    keys = draw(st.lists(st.sampled_from(_KEYS), min_size=1, max_size=8, unique=True))
    values = draw(st.lists(st.floats(0, 1e12) | st.none(), min_size=len(keys), max_size=len(keys)))
    recs = [record("r", c, m, v, method=meth, status="ok" if v is not None else "error")
            for (c, m, meth), v in zip(keys, values)]  # fmt: skip
    return recs, [json.dumps(r) for r in recs]


def _write_lines(tmp_path_factory, lines: list[str], tail: str = "\n"):
    path = tmp_path_factory.mktemp("rec") / "records.jsonl"
    path.write_text("\n".join(lines) + tail)
    return path


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record_files())
def test_whole_files_read_back_exactly(tmp_path_factory, data):
    recs, lines = data
    scan = scan_records(_write_lines(tmp_path_factory, lines))
    assert scan.records == recs and scan.cut_line is None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record_files(), st.data())
def test_a_cut_last_line_is_left_out_and_names_its_case(tmp_path_factory, capsys, data, draw):
    recs, lines = data
    cut = draw.draw(st.integers(1, len(lines[-1]) - 1))
    path = _write_lines(tmp_path_factory, [*lines[:-1], lines[-1][:cut]], tail="")
    scan = scan_records(path)
    assert scan.records == recs[:-1] and scan.cut_line == len(lines)
    assert scan.cut_case in (None, recs[-1]["case_id"])  # named when the fragment still shows it whole
    if f'"case_id": "{recs[-1]["case_id"]}"' in lines[-1][:cut]:
        assert scan.cut_case == recs[-1]["case_id"]
    assert f"{path}:{len(lines)}: last line is not a whole record" in capsys.readouterr().err
    drop_cut_line(path)  # what a writer does before appending: the file is whole again
    assert scan_records(path).records == recs[:-1] and scan_records(path).cut_line is None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record_files(), st.data())
def test_a_duplicated_measurement_is_an_error_naming_both_lines(tmp_path_factory, data, draw):
    recs, lines = data
    src = draw.draw(st.integers(0, len(lines) - 1))
    dup = dict(recs[src], value=draw.draw(st.floats(0, 10)))  # same key, whatever the value
    at = draw.draw(st.integers(src + 1, len(lines)))
    lines = [*lines[:at], json.dumps(dup), *lines[at:]]
    with pytest.raises(UsageError, match=rf"records.jsonl:{at + 1}: .* is also on line {src + 1}; "):
        scan_records(_write_lines(tmp_path_factory, lines))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record_files(), st.data())
def test_garbage_before_the_last_line_is_an_error_naming_it(tmp_path_factory, data, draw):
    recs, lines = data
    at = draw.draw(st.integers(0, len(lines) - 1))
    garbage = draw.draw(st.text(min_size=1).filter(lambda s: s.strip() and "\n" not in s and "\r" not in s))
    try:
        json.loads(garbage)
        return  # valid JSON is a different mistake (tested above)
    except ValueError:
        pass
    lines = [*lines[:at], garbage, *lines[at:]]
    with pytest.raises(UsageError, match=rf"records.jsonl:{at + 1}: not a JSON record"):
        scan_records(_write_lines(tmp_path_factory, lines))


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")
def test_git_dirty_ignores_untracked_files(tmp_path):
    """A plugin file created in the checkout (as docs/extending.md says) does not make a run 'dirty'."""
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)  # fmt: skip

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("commit", "-qm", "code")
    assert git_dirty(tmp_path) is False
    (tmp_path / "my_pruner.py").write_text("# a plugin, untracked\n")
    assert git_dirty(tmp_path) is False
    (tmp_path / "code.py").write_text("x = 2\n")  # the measured code changed
    assert git_dirty(tmp_path) is True
