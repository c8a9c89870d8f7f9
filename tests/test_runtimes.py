"""Deployment runtimes: the runtime axis of cases, torch.compile's records, ONNX export parity, the CLI.

The ONNX tests need the ``deploy`` extra (onnx, onnxruntime, onnxscript), which CI installs; they
are skipped where it is missing. torch.compile is exercised with its ``eager`` backend: the same
dynamo tracing, counters and records, without minutes of inductor code generation on CI.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from bench import cli, scenarios
from bench.analysis.runtimes_section import section
from bench.core import results
from bench.core.case import Case
from bench.core.errors import UsageError
from bench.measure import runtimes
from bench.scenarios import Settings, example_inputs, measure_case

FAST = Settings(warmup=1, repeats=2, min_time_s=0.0)


def tiny(backbone: str, variant: str, frames: int = 9, **kw) -> tuple[Case, nn.Module, torch.Tensor]:
    case = Case(backbone, variant, frames=frames, size="tiny", **kw).resolve()
    torch.manual_seed(0)
    model = case.build().eval()
    return case, model, example_inputs(case, model)[0]


# --------------------------------------------------------------------------- the runtime axis


def test_eager_case_ids_are_unchanged_and_other_runtimes_are_named():
    eager = Case("mixste", "rectangle", frames=27, size="tiny").resolve()
    assert eager.case_id == "mixste/rectangle/T27/B1/tiny/cpu/float32"  # the committed baseline's ids
    onnx = Case("mixste", "rectangle", frames=27, size="tiny", runtime="onnxruntime").resolve()
    assert onnx.case_id == eager.case_id + "/onnxruntime"
    assert onnx.fields()["runtime"] == "onnxruntime"
    with pytest.raises(UsageError, match="unknown runtime 'tvm'; choose from eager, compile, onnxruntime"):
        Case("mixste", runtime="tvm").resolve()


def test_dtypes_are_refused_where_a_runtime_cannot_run_them():
    runtimes.check("eager", "cpu", "bfloat16")
    runtimes.check("compile", "cpu", "float16")
    pytest.importorskip("onnxruntime")
    runtimes.check("onnxruntime", "cpu", "float32")
    with pytest.raises(UsageError, match="cannot run --dtype bfloat16 on cpu; it takes float32"):
        runtimes.check("onnxruntime", "cpu", "bfloat16")
    with pytest.raises(UsageError, match="cannot run --dtype float16 on cpu"):
        runtimes.check("onnxruntime", "cpu", "float16")


def test_onnxruntime_without_the_extra_names_it(monkeypatch):
    monkeypatch.setattr(runtimes, "_importable", lambda m: m != "onnxruntime")
    with pytest.raises(UsageError, match=r'needs onnxruntime: install the deploy extra \(pip install -e "\.\[deploy\]"\)'):
        runtimes.check("onnxruntime")


def test_eager_runtime_times_the_model_itself():
    _, model, x = tiny("mixste", "rectangle")
    prepared = runtimes.prepare("eager", model, x)
    with torch.inference_mode():
        assert torch.equal(prepared.forward(), model(x))
    assert prepared.reports == [] and prepared.fields == {"runtime": "eager"}


# --------------------------------------------------------------------------- torch.compile


class Breaking(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a(x)
        torch._dynamo.graph_break()
        return self.b(x)


def test_compile_records_first_call_time_and_graph_breaks():
    prepared = runtimes.prepare("compile", Breaking().eval(), torch.randn(2, 4), compile_backend="eager")
    (rep,) = prepared.reports
    assert rep.metric == "compile_s" and rep.method == "compile" and rep.value > 0 and not rep.error
    assert rep.extra["graph_breaks"] >= 1 and rep.extra["graphs"] == 2
    assert prepared.fields["runtime"] == "compile" and prepared.fields["graph_breaks"] >= 1


def test_the_pruned_models_compile_without_graph_breaks():
    # The pruners' gathers are traced, not broken out: the whole forward is one graph.
    _, model, x = tiny("mixste", "single")
    prepared = runtimes.prepare("compile", model, x, compile_backend="eager")
    rep = prepared.reports[0]
    assert rep.extra["graph_breaks"] == 0 and rep.extra["graphs"] == 1
    assert rep.extra["max_abs_diff"] == 0.0  # the eager backend runs the same kernels
    with torch.inference_mode():
        torch.testing.assert_close(prepared.forward(), model(x), rtol=0, atol=0)


# --------------------------------------------------------------------------- ONNX Runtime


@pytest.mark.parametrize(("backbone", "variant", "pruner"), [
    ("mixste", "single", "tpc"),  # clustering top-k + gather, TRA
    ("mixste", "hierarchical", "tps"),  # uniform sampling, interpolation (was searchsorted)
    ("motionbert", "single", "tpmo"),  # motion; the dual-stream model
    ("mhformer", "single", "tpc"),  # seq2frame: the centre frame is forced in
])  # fmt: skip
def test_pruned_models_export_with_parity(tmp_path, backbone, variant, pruner):
    pytest.importorskip("onnxruntime")
    case, model, x = tiny(backbone, variant, pruner=pruner)
    prepared = runtimes.prepare("onnxruntime", model, x, save_dir=tmp_path, name="m")
    (rep,) = prepared.reports
    assert rep.metric == "export_error" and not rep.error, rep.error
    assert 0 <= rep.value <= 1e-4 and rep.extra["inputs"] == 2
    assert rep.extra["exporter"] in runtimes.EXPORTERS and rep.extra["provider"] == "CPUExecutionProvider"
    assert (tmp_path / "m.onnx").stat().st_size > 1000
    (out,) = prepared.forward()
    with torch.inference_mode():
        assert out.shape == tuple(model(x).shape)


class TinyHourglass(nn.Module):
    """The token module alone around one layer: clustering top-k, gather, interpolation.

    27 frames: below 26 tokens torch.cdist (tpc's distances) runs ``aten::_cdist_forward``, which
    the dynamo exporter cannot translate (the TorchScript one can); from 26 on it is matmuls.
    """

    def __init__(self) -> None:
        super().__init__()
        from backbones.tokens import TokenHourglass

        self.lin = nn.Linear(2, 8)
        self.tokens = TokenHourglass(frames=27, depth=2, dim=8, schedule=[(1, 9)], pruner="tpc", recoverer="tri")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = self.tokens.positions(x)
        x, pos = self.tokens.prune(1, self.lin(x), pos)
        return self.tokens.recover(x, pos)


@pytest.mark.parametrize("exporter", runtimes.EXPORTERS)
def test_both_exporters_take_the_token_module(exporter):
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    prepared = runtimes.prepare("onnxruntime", TinyHourglass().eval(), torch.randn(2, 27, 17, 2), exporter=exporter)
    (rep,) = prepared.reports
    assert rep.extra["exporter"] == exporter and not rep.error and rep.value <= 1e-4


class BakedChoice(nn.Module):
    """A data-dependent choice made in Python: tracing freezes the branch the traced input took."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if bool(x.sum() > 0) else x - 1


def test_a_choice_frozen_by_the_export_fails_parity_on_the_second_input():
    pytest.importorskip("onnxruntime")
    x = torch.ones(1, 3, 17, 2) * 5  # its sum is positive; the second input's need not be
    prepared = runtimes.prepare("onnxruntime", BakedChoice(), x, exporter="torchscript")
    (rep,) = prepared.reports
    assert rep.value > 1e-4
    assert "differs from eager" in rep.error and prepared.error == rep.error


def test_measure_case_fails_latency_when_export_parity_fails(monkeypatch):
    pytest.importorskip("onnxruntime")
    case = Case("mixste", "rectangle", frames=9, size="tiny", runtime="onnxruntime")
    monkeypatch.setattr(runtimes, "tolerance", lambda dtype: -1.0)  # nothing can pass
    recs = list(measure_case(case, ["latency", "memory"], "r", settings=FAST))
    by = {r["metric"]: r for r in recs}
    assert by["export_error"]["status"] == "error" and by["export_error"]["value"] is not None
    assert by["latency"]["status"] == "error" and "differs from eager" in by["latency"]["error"]
    assert by["peak_rss"]["status"] == "skipped" and "eager runtime only" in by["peak_rss"]["error"]
    assert all(r["runtime"] == "onnxruntime" for r in recs)
    pruned = Case("mixste", "single", frames=9, size="tiny", runtime="onnxruntime")
    by = {r["metric"]: r for r in measure_case(pruned, ["latency", "speedup"], "r", settings=FAST)}
    assert [by[m]["status"] for m in ("export_error", "latency", "speedup")] == ["error"] * 3
    assert "differs from eager" in by["speedup"]["error"]


def test_a_pruned_case_is_paired_with_its_rectangle_on_its_own_runtime():
    pytest.importorskip("onnxruntime")
    case = Case("mixste", "hierarchical", frames=9, size="tiny", runtime="onnxruntime")
    recs = list(measure_case(case, ["latency", "speedup"], "r", settings=FAST))
    by = {r["metric"]: r for r in recs}
    assert [r["metric"] for r in recs].count("export_error") == 1  # the case's own, not its rectangle's
    assert by["export_error"]["status"] == "ok"
    sp, lat = by["speedup"], by["latency"]
    assert sp["status"] == "ok" and sp["method"] == "paired" and sp["runtime"] == "onnxruntime"
    assert sp["reference"] == scenarios.reference_case(case.resolve()).case_id and "onnxruntime" in sp["reference"]
    assert lat["paired"] is True and lat["samples"] == sp["samples_pruned"] and lat["runtime"] == "onnxruntime"


def test_onnxruntime_sessions_do_not_spin(monkeypatch):
    """Two sessions alternate in a speed-up's pairs: a spinning idle pool would take the other's cores."""
    ort = pytest.importorskip("onnxruntime")
    seen = []
    real = ort.InferenceSession

    def capture(data, sess_options=None, **kw):
        seen.append(sess_options.get_session_config_entry("session.intra_op.allow_spinning"))
        return real(data, sess_options=sess_options, **kw)

    monkeypatch.setattr(ort, "InferenceSession", capture)
    prepared = runtimes.prepare("onnxruntime", nn.Linear(3, 2).eval(), torch.randn(4, 3), exporter="torchscript")
    assert seen == ["0"] and prepared.fields["ort_spinning"] is False


def test_a_rectangle_that_cannot_run_on_the_runtime_fails_the_speedup_but_not_the_latency(monkeypatch):
    pytest.importorskip("onnxruntime")
    real = runtimes.prepare

    def rectangle_fails(runtime, model, x, **kw):
        prepared = real(runtime, model, x, **kw)
        if "rectangle" in kw["name"]:
            prepared.reports.append(runtimes.Report("export_error", None, "onnxruntime", error="export broke"))
        return prepared

    monkeypatch.setattr(runtimes, "prepare", rectangle_fails)
    case = Case("mixste", "single", frames=9, size="tiny", runtime="onnxruntime")
    by = {r["metric"]: r for r in measure_case(case, ["latency", "speedup"], "r", settings=FAST)}
    assert by["latency"]["status"] == "ok" and "paired" not in by["latency"]
    assert by["speedup"]["status"] == "error" and "cannot run on onnxruntime: export broke" in by["speedup"]["error"]


# --------------------------------------------------------------------------- the command line and report


def test_run_over_runtimes_records_and_reports_them(tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    argv = ["run", "--preset", "smoke", "--backbones", "mixste", "--variants", "rectangle,hierarchical",
            "--frames", "9", "--metrics", "latency", "--runtime", "eager,onnxruntime", "--save-onnx",
            "--out", str(out), "--executor", "inline"]  # fmt: skip
    assert cli.main(argv) == 0
    recs = results.read_records(out)
    assert {(r["variant"], r["runtime"]) for r in recs} == {
        (v, rt) for v in ("rectangle", "hierarchical") for rt in ("eager", "onnxruntime")
    }
    errs = [r for r in recs if r["metric"] == "export_error"]
    assert len(errs) == 2 and all(r["status"] == "ok" and r["value"] <= 1e-4 for r in errs)
    lat = [r for r in recs if r["metric"] == "latency" and r["runtime"] == "onnxruntime"]
    assert all(r["status"] == "ok" and r["exporter"] in runtimes.EXPORTERS for r in lat)
    assert len(list((out / "onnx").glob("*.onnx"))) == 2
    assert json.loads((out / "meta.json").read_text())["runtimes"] == ["eager", "onnxruntime"]
    page = capsys.readouterr().out.split("report: ")[-1].strip()  # the last line names the page
    report = (tmp_path / page).with_name("index.md").read_text()
    assert "## Deployment runtimes" in report and "Export and compile status" in report
    assert "x eager" in report and "over its rectangle" in report


@pytest.mark.parametrize(("argv", "message"), [
    (["--runtime", "tvm"], "unknown runtime 'tvm'"),
    (["--runtime", "onnxruntime", "--dtype", "bfloat16"], "cannot run --dtype bfloat16"),
    (["--save-onnx"], "--save-onnx saves the models that --runtime onnxruntime exports"),
])  # fmt: skip
def test_bad_runtime_options_are_one_line(tmp_path, capsys, argv, message):
    pytest.importorskip("onnxruntime")
    code = cli.main(["run", "--preset", "smoke", "--out", str(tmp_path / "r"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_missing_extra_is_one_line_on_the_command_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runtimes, "_importable", lambda m: False)
    code = cli.main(["run", "--preset", "smoke", "--runtime", "onnxruntime", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "deploy extra" in err and len(err.strip().splitlines()) == 1


def _rec(variant: str, runtime: str, metric: str, value: float, **extra) -> dict:
    case = Case("mixste", variant, frames=9, size="tiny", runtime=runtime).resolve()
    return results.record("r", case, metric, value, **extra)


def test_report_section_speedups_are_within_each_runtime():
    import pandas as pd

    recs = pd.DataFrame([
        _rec("rectangle", "eager", "latency", 10.0), _rec("hierarchical", "eager", "latency", 5.0),
        _rec("rectangle", "onnxruntime", "latency", 4.0), _rec("hierarchical", "onnxruntime", "latency", 1.0),
        _rec("rectangle", "onnxruntime", "export_error", 1e-7, method="onnxruntime", exporter="torchscript"),
    ])  # fmt: skip
    sec = section(recs)
    assert sec is not None
    titles = [t[0] for t in sec.tables]
    latency, speedup, status = (sec.tables[titles.index(t)] for t in titles)
    assert latency[1] == ["case", "eager", "onnxruntime"]
    assert any("2.50x eager" in c for row in latency[2] for c in row)  # 10 ms eager vs 4 ms
    (row,) = speedup[2]
    assert row[1:] == ["2.00x", "4.00x"]  # 10/5 eager, 4/1 onnxruntime: never across runtimes
    rect = next(r for r in status[2] if " rectangle " in r[0])
    assert rect[1:4] == ["onnxruntime", "torchscript", "export_error 1e-07"]
    eager_only = recs[recs["runtime"] == "eager"]
    assert section(eager_only) is None


def test_gate_speedups_never_mix_runtimes():
    from bench.analysis.gate import _speedups

    recs = [
        _rec("rectangle", "eager", "latency", 10.0), _rec("hierarchical", "eager", "latency", 5.0),
        _rec("rectangle", "onnxruntime", "latency", 4.0), _rec("hierarchical", "onnxruntime", "latency", 1.0),
    ]  # fmt: skip
    got = {cid: round(v, 3) for cid, (v, _) in _speedups(recs).items()}
    assert sorted(got.values()) == [2.0, 4.0]
