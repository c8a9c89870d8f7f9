"""The public face: every name `bench` promises resolves, and its docstring's example works as written."""

from __future__ import annotations

import subprocess
import sys

import pytest

import bench


def test_every_public_name_resolves_to_what_its_module_holds():
    import importlib

    for name, (module, attr) in bench._PUBLIC.items():
        assert getattr(bench, name) is getattr(importlib.import_module(module), attr), name
    assert set(bench.__all__) == {*bench._PUBLIC, "__version__"}
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        bench.nope  # noqa: B018


def test_import_bench_loads_no_torch():
    code = "import sys, bench, bench.cli; bench.cli.build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_the_docstring_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from bench import Case, gate, load_rules, measure_case, read_records, run_matrix, write_report

    case = Case("mixste", "hierarchical", frames=27, size="tiny").resolve()
    recs = list(measure_case(case, ["params", "flops"], run_id="mine"))
    assert {r["metric"] for r in recs} == {"params", "flops", "flops_block"} and all(r["status"] == "ok" for r in recs)
    fast = bench.Settings(warmup=0, repeats=2, min_time_s=0.0)
    summary = run_matrix([case], "results/mine", run_id="mine", metrics=["params", "latency"], settings=fast)
    page = write_report(summary.run_dir, out="reports/mine") / "index.html"
    assert page.is_file()
    result = gate(read_records("results/mine"), read_records("results/mine"), load_rules(None))
    assert result.passed

