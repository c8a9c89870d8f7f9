"""`vptbench export`: each format's output has the structure of that format's published example.

The examples below are copied from the projects that define the formats (keys, types, nesting
are what is compared; the values are theirs):

- github-action-benchmark, the action's own test data for its custom tools:
  https://github.com/benchmark-action/github-action-benchmark/blob/master/test/data/extract/customSmallerIsBetter_output.json
  https://github.com/benchmark-action/github-action-benchmark/blob/master/test/data/extract/customBiggerIsBetter_output.json
  (the README's "customSmallerIsBetter" section shows the same entries; the action parses them with
  the zod schema in src/extract.ts: name, value, unit required, range and extra optional strings).
- Bencher Metric Format: the example and the JSON schema of
  https://bencher.dev/docs/reference/bencher-metric-format/ (schema: https://bencher.dev/bmf.json).
- pytest-benchmark: its stored-run test data,
  https://github.com/ionelmc/pytest-benchmark/blob/master/tests/test_storage/0030_5b78858eb718649a31fb93d8dc96ca2cee41a4cd_20150815_030419_uncommitted-changes.json
  plus the fields later releases write (``Stats.fields`` and ``Metadata.as_dict`` in
  src/pytest_benchmark/stats.py: param, extra_info, ops, total, iterations); where pytest-benchmark
  is installed (the dev extra), its own ``pytest-benchmark compare`` reads our file.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
from test_history import CASES, MACHINE, records, write_run

from bench import cli
from bench.analysis.export import bigger_path, export_run, measure_slug, stats

GAB_SMALLER = [
    {"name": "My Custom Smaller Is Better Benchmark - CPU Load", "unit": "Percent", "value": 50, "range": "5%",
     "extra": "My Optional Information for the tooltip"},
    {"name": "My Custom Smaller Is Better Benchmark - Memory Used", "unit": "Megabytes", "value": 100},
]  # fmt: skip
GAB_BIGGER = [
    {"name": "My Custom Bigger Is Better Benchmark - Throughput", "unit": "req/s", "value": 70},
    {"name": "My Custom Bigger Is Better Benchmark - Free Memory", "unit": "Megabytes", "value": 150, "range": "3",
     "extra": "Optional Value #1: 25\nHelpful Num #2: 100\nAnything Else!"},
]  # fmt: skip

BMF_EXAMPLE = {
    "benchmark_name": {
        "latency": {"value": 88.0, "lower_value": 87.42, "upper_value": 88.88},
        "throughput": {"value": 5.55, "lower_value": 3.14, "upper_value": 6.30},
    },
    "/bin/sh -c ./my_build_script.sh": {"build-time": {"value": 87.0}},
    "my_binary": {"file-size": {"value": 42.0}},
}
BMF_SCHEMA = {
    "$id": "https://bencher.dev/bmf.json",
    "$schema": "http://json-schema.org/draft-07/schema",
    "type": "object",
    "patternProperties": {".+": {"type": "object", "patternProperties": {".+": {
        "type": "object",
        "properties": {"value": {"type": "number"}, "lower_value": {"type": "number"}, "upper_value": {"type": "number"}},
        "required": ["value"],
    }}}},
}  # fmt: skip

PYTEST_BENCHMARK_EXAMPLE = {
    "benchmarks": [{
        "name": "test_xfast_parametrized[0]", "group": None, "params": None,
        "stats": {"rounds": 9710, "iqr_outliers": 1726, "mean": 2.61205074138546e-07, "iterations": 431,
                  "hd15iqr": 2.666305223363182e-07, "outliers": "160;1726", "ld15iqr": 2.1795109087242604e-07,
                  "stddev": 2.639842188231226e-07, "stddev_outliers": 160, "median": 2.2016379230260297e-07,
                  "iqr": 1.8807962156503776e-08, "max": 1.329003796500009e-05, "min": 2.1795109087242604e-07,
                  "q1": 2.1795109087242604e-07, "q3": 2.3675905302892982e-07},
        "options": {"min_time": 2.5e-05, "max_time": 1.0, "min_rounds": 5, "warmup": False, "timer": "time",
                    "disable_gc": False},
        "fullname": "tests/test_normal.py::test_xfast_parametrized[0]",
    }],
    "datetime": "2015-08-15T00:04:18.687119+00:00",
    "machine_info": {"processor": "x86_64", "system": "Linux", "python_compiler": "GCC 4.6.3",
                     "release": "3.13.0-55-generic", "python_implementation": "CPython", "python_version": "2.7.3",
                     "node": "minibox", "machine": "x86_64"},
    "commit_info": {"id": "5b78858eb718649a31fb93d8dc96ca2cee41a4cd", "dirty": True},
    "version": "2.5.0",
}  # fmt: skip
# What releases since 2.5.0 add (pytest-benchmark 5.x, src/pytest_benchmark/stats.py).
PYTEST_BENCHMARK_LATER_KEYS = {"benchmark": {"param", "extra_info"}, "stats": {"ops", "total"}}


@pytest.fixture
def run(tmp_path) -> Path:
    recs = records("run-1", 0)
    for case_id, (backbone, variant) in CASES.items():
        samples = [120.0 + 3 * math.sin(j) for j in range(7)]
        recs.append({"run_id": "run-1", "case_id": case_id, "backbone": backbone, "variant": variant,
                     "metric": "train_step", "value": 120.0, "unit": "ms", "method": "timeit", "status": "ok",
                     "error": "", "samples": samples, "ci_low": 117.0, "ci_high": 123.0, "stable": False,
                     "unstable_reason": "CPU busy"})  # fmt: skip
    return write_run(tmp_path / "runs", 0, machine=MACHINE | {"platform": "Linux-6.1.0-x86_64-with-glibc2.36"},
                     recs=recs)  # fmt: skip


def _type(x: object) -> str:
    if isinstance(x, bool) or x is None:
        return type(x).__name__
    return "number" if isinstance(x, int | float) else type(x).__name__


def _check_like(ours: dict, example_entries: list[dict], where: str) -> None:
    """Keys within the examples' keys, the keys every example has present, each value of the example's type."""
    allowed = set().union(*(e.keys() for e in example_entries))
    required = set.intersection(*(set(e) for e in example_entries))
    types = {k: _type(e[k]) for e in example_entries for k in e}
    assert required <= set(ours) <= allowed, f"{where}: keys {sorted(ours)}, allowed {sorted(allowed)}"
    for k, v in ours.items():
        assert _type(v) == types[k], f"{where}: {k} is {_type(v)}, the example's is {types[k]}"


def test_github_action_benchmark_writes_both_directions_like_the_published_examples(run, tmp_path):
    out = tmp_path / "ci" / "bench.json"
    assert export_run(run, "github-action-benchmark", out) == [out, tmp_path / "ci" / "bench.bigger.json"]
    smaller, bigger = json.loads(out.read_text()), json.loads(bigger_path(out).read_text())
    for doc, example in ((smaller, GAB_SMALLER), (bigger, GAB_BIGGER)):
        assert isinstance(doc, list) and doc
        for entry in doc:
            _check_like(entry, example + GAB_SMALLER + GAB_BIGGER, entry["name"])
    names = {e["name"].rsplit(" ", 1)[1] for e in smaller}, {e["name"].rsplit(" ", 1)[1] for e in bigger}
    assert names == ({"params", "flops[paper]", "latency", "train_step", "peak_rss[inference]"}, {"fps", "speedup"})
    lat = next(e for e in smaller if e["name"].endswith(" latency"))
    assert lat["unit"] == "ms" and lat["range"].startswith("95% CI ") and f"commit {'1' * 7}" in lat["extra"]
    assert next(e for e in smaller if e["name"].endswith(" params"))["value"] == 100_000  # a count stays an integer
    fps = next(e for e in bigger if e["name"].endswith(" fps"))
    assert fps["unit"] == "frames/s" and "range" in fps  # the latency's CI, inverted


def test_bencher_metric_format_matches_the_published_example_and_schema(run, tmp_path):
    out = tmp_path / "bmf.json"
    export_run(run, "bencher", out)
    doc = json.loads(out.read_text())
    example_metrics = [m for b in BMF_EXAMPLE.values() for m in b.values()]
    assert isinstance(doc, dict) and set(doc) == set(CASES)
    for case, measures in doc.items():
        assert isinstance(measures, dict) and measures
        for slug, metric in measures.items():
            assert len(slug) <= 64 and slug == slug.lower() and " " not in slug  # a Bencher measure slug
            _check_like(metric, example_metrics, f"{case} {slug}")
            if "lower_value" in metric:
                assert metric["lower_value"] <= metric["value"] <= metric["upper_value"]
    assert {"latency-ms", "train-step-ms", "speedup-x", "params-count", "flops-paper-gflops",
            "peak-rss-inference-mib", "fps-frames-per-s"} == set(doc["mixste/hierarchical/T27/B1/tiny/2:9,5:3/tps+tri/cpu/float32"])  # fmt: skip
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(BMF_EXAMPLE, BMF_SCHEMA)
    jsonschema.validate(doc, BMF_SCHEMA)


def test_the_command_offers_the_formats_the_library_writes():
    from bench.analysis import export
    from bench.commands import export as command

    assert command.FORMATS == export.FORMATS


def test_measure_slugs_carry_the_unit():
    assert measure_slug("peak_rss[train]", "MiB") == "peak-rss-train-mib"
    assert measure_slug("achieved_gflops", "GFLOP/s") == "achieved-gflops-gflop-per-s"


def test_pytest_benchmark_json_has_the_published_structure(run, tmp_path):
    out = tmp_path / "pb.json"
    export_run(run, "pytest-benchmark", out)
    doc = json.loads(out.read_text())
    ex = PYTEST_BENCHMARK_EXAMPLE
    assert set(ex) <= set(doc) and all(_type(doc[k]) == _type(ex[k]) for k in ex)
    assert set(ex["machine_info"]) <= set(doc["machine_info"]) and set(ex["commit_info"]) <= set(doc["commit_info"])
    assert doc["commit_info"]["id"] == "1" * 40 and doc["machine_info"]["node"] == "ci-1"
    (example,) = ex["benchmarks"]
    assert len(doc["benchmarks"]) == 4  # latency and training step of both cases: the timings with samples
    for b in doc["benchmarks"]:
        assert set(example) | PYTEST_BENCHMARK_LATER_KEYS["benchmark"] <= set(b)
        assert set(example["stats"]) | PYTEST_BENCHMARK_LATER_KEYS["stats"] <= set(b["stats"])
        assert set(example["options"]) <= set(b["options"])
        for k in ("name", "fullname"):
            assert isinstance(b[k], str)
        for k, v in example["stats"].items():
            assert _type(b["stats"][k]) == _type(v), k
        assert isinstance(b["extra_info"], dict) and isinstance(b["params"], dict)
    lat = next(b for b in doc["benchmarks"] if b["group"] == "latency")
    assert lat["stats"]["median"] == pytest.approx(lat["extra_info"]["median_ms"] / 1e3, rel=0.02)  # seconds
    assert lat["extra_info"]["ci_low_s"] < lat["stats"]["median"] < lat["extra_info"]["ci_high_s"]


def test_pytest_benchmarks_own_compare_reads_the_export(run, tmp_path):
    exe = shutil.which("pytest-benchmark")
    if exe is None:
        pytest.skip("pytest-benchmark is in the dev extra")
    out = tmp_path / "0001_export.json"
    export_run(run, "pytest-benchmark", out)
    done = subprocess.run([exe, "compare", str(out), "--columns", "min,median,max,rounds"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "latency[mixste/rectangle/T27/B1/tiny/cpu/float32]" in done.stdout.replace("\n", "")


def test_stats_are_computed_as_pytest_benchmark_computes_its_own():
    pb = pytest.importorskip("pytest_benchmark.stats")
    for data in ([3.0], [1.0, 2.0], [5.0, 1.0, 4.0, 2.0, 3.0], [0.1 * (i % 7) + 1 for i in range(23)],
                 [1.0 + 0.01 * math.sin(i) for i in range(60)] + [9.0]):  # fmt: skip
        theirs = pb.Stats()
        for x in data:
            theirs.update(x)
        ours = stats(data)
        for k, v in theirs.as_dict().items():
            assert ours[k] == pytest.approx(v), k


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--format", "json"], "--format 'json': choose from github-action-benchmark, bencher, pytest-benchmark"),
        (["--format", "bencher", "--metrics", "latncy"], "unknown metric 'latncy'"),
        (["--format", "bencher", "--metrics", "mpjpe"], "no ok record of mpjpe"),
    ],
)
def test_bad_input_exits_2_with_one_line(run, tmp_path, capsys, argv, message):
    assert cli.main(["export", str(run), *argv, "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "x.json").exists()


def test_unwritable_out_or_a_directory_that_is_not_a_run_exits_2(run, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert cli.main(["export", str(run), "--format", "bencher", "--out", str(tmp_path / "file" / "x.json")]) == 2
    (tmp_path / "empty").mkdir()
    assert cli.main(["export", str(tmp_path / "empty"), "--format", "bencher", "--out", str(tmp_path / "y.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "cannot write --out" in err[0] and "not a run directory" in err[1]


def test_the_command_names_what_it_wrote(run, tmp_path, capsys):
    out = tmp_path / "b.json"
    assert cli.main(["export", str(run), "--format", "github-action-benchmark", "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"wrote {out}", f"wrote {tmp_path / 'b.bigger.json'}"]
