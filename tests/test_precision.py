"""Reduced precision: the precision axis of cases, int8 on eager and ONNX Runtime, pose error in mm,
the paired speed-ups over fp32, skipped precisions, the CLI, sweeps, plugins, gate, compare and report.

Everything runs tiny models at T = 9 or 27 with a few training steps for the pose-error weights
(the steps only have to move the outputs off the mean pose; canonical sizes are in docs/precision.md).
The ONNX tests need the ``deploy`` extra and are skipped without it.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

import backbones
from bench import cli
from bench.accuracy import weights as pose_weights_mod
from bench.accuracy.checkpoints import save_checkpoint
from bench.analysis import compare as compare_mod
from bench.analysis import gate
from bench.analysis.report import write_report
from bench.core import results
from bench.core.case import Case
from bench.core.errors import UsageError
from bench.measure import precision
from bench.scenarios import Settings, measure_case

FAST = Settings(warmup=1, repeats=3, min_time_s=0.0, pose_steps=20)
# The bound on int8's pose error: a tenth of how far the fp32 poses move at all (``pose_spread``).
# A quantization that broke the model moves its poses as far as they move (ratio ~1); per-tensor
# int8 weights round each weight by at most 1/254 of its layer's largest, and after 20 steps every
# variant of tiny MixSTE, MHFormer and MotionAGFormer measures 0.4-4.1 % of the spread (canonical
# models: docs/precision.md). Tiny MotionBERT is left out: its poses stay within 0.5 mm of the mean
# pose for hundreds of steps (the plateau the accuracy smoke preset describes), so its ratio means little.
RELATIVE_BOUND = 0.1


def _records(case: Case, metrics, tmp_path, settings: Settings = FAST) -> list[dict]:
    return list(measure_case(case, metrics, "t", settings=settings, run_dir=tmp_path))


def _one(recs, metric, method=None):
    found = [r for r in recs if r["metric"] == metric and (method is None or r["method"] == method)]
    assert len(found) == 1, [(r["metric"], r["method"], r["status"], r["error"]) for r in recs]
    return found[0]


# --------------------------------------------------------------------------- the precision axis


def test_fp32_case_ids_are_unchanged_and_int8_is_named():
    fp32 = Case("mixste", "rectangle", frames=27, size="tiny").resolve()
    assert fp32.case_id == "mixste/rectangle/T27/B1/tiny/cpu/float32"  # the committed baseline's ids
    assert fp32.precision == "fp32" and fp32.fields()["precision"] == "fp32"
    int8 = Case("mixste", "rectangle", frames=27, size="tiny", precision="int8", runtime="onnxruntime").resolve()
    assert int8.case_id == "mixste/rectangle/T27/B1/tiny/cpu/float32/int8/onnxruntime"
    assert int8.dtype == "float32"  # int8 weights, float32 activations


def test_half_precisions_are_the_float_dtypes_in_either_spelling():
    by_dtype = Case("mixste", frames=27, size="tiny", dtype="bfloat16").resolve()
    by_precision = Case("mixste", frames=27, size="tiny", precision="bf16").resolve()
    assert by_dtype == by_precision and by_dtype.precision == "bf16" and by_dtype.dtype == "bfloat16"
    assert Case("mixste", frames=27, size="tiny", precision="bf16").case_id == by_dtype.case_id  # unresolved too
    with pytest.raises(UsageError, match="precision int8 and dtype float16 disagree"):
        Case("mixste", dtype="float16", precision="int8").resolve()
    with pytest.raises(UsageError, match="unknown precision 'int4'; choose from fp32, fp16, bf16, int8"):
        Case("mixste", precision="int4").resolve()


def test_matrix_has_a_precision_axis_and_adds_pose_error():
    from bench.run.presets import build_matrix, get_preset, with_pose_error

    cases = build_matrix(get_preset("smoke"), backbone_names=["mixste"], variants=["rectangle"],
                         precisions=["fp32", "int8"], runtimes=["onnxruntime"])  # fmt: skip
    assert [c.precision for c in cases] == ["fp32", "int8"]
    assert "pose_error" in with_pose_error(["latency"], cases)
    assert with_pose_error(["latency"], cases[:1]) == ["latency"]  # an fp32 run trains nothing
    with pytest.raises(UsageError, match="--dtype float16 and --precision fp32,int8: give one"):
        build_matrix(get_preset("smoke"), precisions=["fp32", "int8"], dtype="float16")


def test_where_each_precision_runs_is_said_in_one_line(monkeypatch):
    assert precision.unsupported("fp32", "onnxruntime") == ""
    assert "no bf16 inference" in precision.unsupported("bf16", "onnxruntime")
    assert "fp16 there needs --device cuda" in precision.unsupported("fp16", "onnxruntime")
    assert "runs on the CPU only" in precision.unsupported("int8", "eager", "cuda")
    precision._cpu_half_missing.cache_clear()
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_fp16_supported", lambda: False)
    try:
        assert "no native fp16 matrix multiply" in precision.unsupported("fp16", "eager", "cpu")
    finally:
        precision._cpu_half_missing.cache_clear()


def test_torch_dynamic_quantization_replaces_the_linear_layers():
    case = Case("mixste", frames=9, size="tiny").resolve()
    torch.manual_seed(0)
    model = case.build().eval()
    q = precision.quantize_eager(model)
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert precision.quantized_linears(q) == linears > 0
    assert precision.quantized_linears(model) == 0  # the float model is untouched


# --------------------------------------------------------------------------- pose error


def test_fp32_eager_against_itself_gives_zero(tmp_path):
    rec = _one(_records(Case("mixste", "single", frames=9, size="tiny"), ["pose_error"], tmp_path), "pose_error")
    assert rec["status"] == "ok" and rec["value"] == 0.0 and rec["mpjpe_delta"] == 0.0
    assert rec["unit"] == "mm" and rec["weights"] == "synthetic:20 steps" and rec["pose_spread"] > 0


def test_int8_eager_pose_error_is_finite_positive_and_small(tmp_path):
    case = Case("mhformer", "hierarchical", frames=9, size="tiny", precision="int8")
    rec = _one(_records(case, ["pose_error"], tmp_path), "pose_error")
    assert rec["status"] == "ok", rec["error"]
    assert math.isfinite(rec["value"]) and 0 < rec["value"] < RELATIVE_BOUND * rec["pose_spread"]
    assert math.isfinite(rec["mpjpe_delta"]) and rec["quantizer"] == precision.EAGER_QUANTIZER
    assert rec["mpjpe_delta"] == pytest.approx(rec["mpjpe_case"] - rec["mpjpe_fp32"])


@pytest.mark.parametrize("variant", ["rectangle", "single"])
def test_int8_onnxruntime_cases_export_run_and_stay_close(tmp_path, variant):
    pytest.importorskip("onnxruntime")
    case = Case("mixste", variant, frames=9, size="tiny", precision="int8", runtime="onnxruntime")
    recs = _records(case, ["latency", "pose_error"], tmp_path)
    export = _one(recs, "export_error")
    assert export["status"] == "ok" and export["value"] < 1e-4  # the float export, checked before quantizing
    assert export["quantizer"] == precision.ONNX_QUANTIZER and export["onnx_bytes_int8"] < export["onnx_bytes_fp32"]
    assert _one(recs, "latency")["status"] == "ok"
    rec = _one(recs, "pose_error")
    assert rec["status"] == "ok", rec["error"]
    assert 0 < rec["value"] < RELATIVE_BOUND * rec["pose_spread"]


def test_pose_error_measures_the_float_difference_that_fails_the_latency_groups_parity_check(tmp_path, monkeypatch):
    # Trained weights can put an export's float noise just above the latency group's 1e-4 (MotionAGFormer-243:
    # 1.1e-4). That difference is what pose_error measures in mm, so only a broken export fails it.
    pytest.importorskip("onnxruntime")
    from bench.measure import runtimes

    monkeypatch.setattr(runtimes, "tolerance", lambda dtype: 0.0)  # every export now "differs" for latency
    case = Case("mixste", "rectangle", frames=9, size="tiny", precision="int8", runtime="onnxruntime")
    recs = _records(case, ["latency", "pose_error"], tmp_path)
    assert _one(recs, "export_error")["status"] == "error"
    rec = _one(recs, "pose_error")
    assert rec["status"] == "ok", rec["error"]
    assert rec["quantizer"] == precision.ONNX_QUANTIZER and 0 < rec["value"] < RELATIVE_BOUND * rec["pose_spread"]


def test_weights_are_trained_once_and_shared_by_the_variants_without_parameters_of_their_own(tmp_path):
    cache = tmp_path / "weights"
    rect = Case("mixste", "rectangle", frames=9, size="tiny").resolve()
    first = pose_weights_mod.pose_weights(rect, steps=2, cache=cache)
    assert first.info["cached"] is False and first.label == "synthetic:2 steps"
    # hierarchical (tps+tri) has no parameters of its own: the rectangle's file, not trained again
    hier = pose_weights_mod.pose_weights(Case("mixste", "hierarchical", frames=9, size="tiny").resolve(), steps=2,
                                         cache=cache)  # fmt: skip
    assert hier.info["cached"] is True and hier.info["trained"] == "rectangle"
    assert list(cache.glob("*.pt")) == [pose_weights_mod.weights_file(rect, 2, cache)]
    own = first.model.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in hier.model.state_dict().items())
    # single (tpc+tra): TRA's queries are its own, so it trains itself, into a file of its own
    single_case = Case("mixste", "single", frames=9, size="tiny").resolve()
    single = pose_weights_mod.pose_weights(single_case, steps=2, cache=cache)
    assert single.info["cached"] is False and single.info["trained"] == "single"
    assert len(list(cache.glob("*.pt"))) == 2 and pose_weights_mod.weights_file(single_case, 2, cache).exists()
    queries = [k for k in single.model.state_dict() if k.startswith("tokens.")]
    assert queries and any(single.model.state_dict()[k].abs().sum() > 0 for k in queries)


def test_a_checkpoint_gives_the_weights_where_it_fits(tmp_path):
    case = Case("mixste", "rectangle", frames=9, size="tiny").resolve()
    torch.manual_seed(3)
    model = case.build()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model, case, steps=7)
    settings = Settings(warmup=1, repeats=2, min_time_s=0.0, checkpoint=str(path))
    rec = _one(_records(Case("mixste", "hierarchical", frames=9, size="tiny", precision="int8"), ["pose_error"],
                        tmp_path, settings), "pose_error")  # fmt: skip
    assert rec["status"] == "ok" and rec["weights"] == f"checkpoint:{path}"
    other = _one(_records(Case("mixste", frames=27, size="tiny", precision="int8"), ["pose_error"], tmp_path,
                          settings), "pose_error")  # fmt: skip
    assert other["weights"].startswith("synthetic:")  # another T: the checkpoint does not fit


# --------------------------------------------------------------------------- speed-ups over fp32


def test_a_pruned_int8_case_is_timed_in_rounds_with_its_fp32_references(tmp_path):
    case = Case("mixste", "hierarchical", frames=9, size="tiny", precision="int8").resolve()
    recs = _records(case, ["latency", "speedup"], tmp_path)
    fp32 = Case("mixste", "hierarchical", frames=9, size="tiny").resolve()
    rect = Case("mixste", "rectangle", frames=9, size="tiny")
    assert _one(recs, "precision_speedup", "paired")["reference"] == fp32.case_id
    combined = _one(recs, "precision_speedup", "paired_rectangle")
    assert combined["reference"] == rect.resolve().case_id and combined["against"] == "fp32 rectangle"
    pruning = _one(recs, "speedup", "paired")
    assert pruning["reference"] == Case("mixste", frames=9, size="tiny", precision="int8").resolve().case_id
    latency = _one(recs, "latency")
    assert latency["paired"] is True and latency["samples"] == combined["samples_case"]
    for r in (pruning, combined):
        assert r["value"] > 0 and r["ci_low"] <= r["value"] <= r["ci_high"] and "stable" in r
    keys = [results.measurement_key(r) for r in recs]
    assert len(keys) == len(set(keys))


def test_an_int8_rectangle_has_a_speedup_over_fp32_and_skips_what_int8_does_not_measure(tmp_path):
    case = Case("mixste", "rectangle", frames=9, size="tiny", precision="int8")
    recs = _records(case, ["params", "speedup", "memory", "train"], tmp_path)
    assert _one(recs, "precision_speedup")["status"] == "ok"
    assert not [r for r in recs if r["metric"] == "speedup"]
    for metric in ("peak_rss", "train_step"):
        rec = _one(recs, metric)
        assert rec["status"] == "skipped" and "float precisions only" in rec["error"]
    assert _one(recs, "params")["value"] == sum(p.numel() for p in case.build().parameters())


# --------------------------------------------------------------------------- the commands


def _fp16_unsupported(monkeypatch):
    real = precision.unsupported
    monkeypatch.setattr(precision, "unsupported", lambda p, r, d="cpu": "fp16 on this CPU: no native fp16 matrix "
                        "multiply (test)" if p == "fp16" else real(p, r, d))  # fmt: skip


def test_run_with_an_unsupported_precision_skips_it_with_the_reason_and_exits_0(tmp_path, monkeypatch, capsys):
    _fp16_unsupported(monkeypatch)
    out = tmp_path / "run"
    code = cli.main(["run", "--preset", "smoke", "--backbones", "mhformer", "--variants", "rectangle,hierarchical",
                     "--frames", "9", "--precision", "fp32,fp16,int8", "--metrics", "latency,speedup,pose_error",
                     "--pose-steps", "2", "--executor", "inline", "--out", str(out), "--no-report"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    recs = results.read_records(out)
    fp16 = [r for r in recs if r["precision"] == "fp16"]
    assert fp16 and all(r["status"] == "skipped" and "no native fp16" in r["error"] for r in fp16)
    assert {r["metric"] for r in fp16} == {"latency", "precision_speedup", "speedup", "pose_error"}
    ok = [r for r in recs if r["precision"] in ("fp32", "int8") and r["status"] != "ok"]
    assert not ok, ok
    assert {r["metric"] for r in recs if r["precision"] == "int8"} >= {"pose_error", "precision_speedup"}
    assert "skipped (the records say why)" in capsys.readouterr().out


def test_profile_measures_each_precision_and_prints_json(capsys):
    code = cli.main(["profile", "mhformer", "--size", "tiny", "--frames", "9", "--precision", "fp32,int8",
                     "--metrics", "latency,speedup,pose_error", "--pose-steps", "2", "--json"])  # fmt: skip
    assert code == 0
    recs = json.loads(capsys.readouterr().out)
    assert {r["precision"] for r in recs} == {"fp32", "int8"}
    int8 = [r for r in recs if r["precision"] == "int8" and r["metric"] == "pose_error"]
    assert int8[0]["status"] == "ok" and int8[0]["value"] > 0


def test_bad_precision_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse's own errors exit from inside parse_args
        cli.main(["run", "--precision", "fp8"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown precision 'fp8'; choose from fp32, fp16, bf16, int8" in err and "Traceback" not in err


def _docs_pruner() -> str:
    """my_pruner.py as docs/extending.md shows it (the energy pruner and the nearest recoverer)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "extending.md").read_text(encoding="utf-8")
    return re.search(r"```python\n(.*?)```", text[text.index("\n## Your own pruner\n") :], re.S).group(1)


def test_precision_works_with_the_docs_user_pruner(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    (tmp_path / "my_pruner.py").write_text(_docs_pruner())
    out = tmp_path / "run"
    try:
        code = cli.main(["run", "--preset", "smoke", "--backbones", "mixste", "--variants", "single", "--frames", "9",
                         "--pruners", "energy", "--recoverers", "nearest", "--precision", "int8", "--runtime",
                         "eager,onnxruntime", "--metrics", "speedup,pose_error", "--pose-steps", "20", "--plugin",
                         str(tmp_path / "my_pruner.py"), "--out", str(out), "--no-report"])  # fmt: skip
        assert code == 0, capsys.readouterr().err
    finally:
        backbones.unregister_pruner("energy")
        backbones.unregister_recoverer("nearest")
        sys.modules.pop("my_pruner", None)
    recs = results.read_records(out)
    assert {(r["pruner"], r["recoverer"]) for r in recs} == {("energy", "nearest")}
    assert all(r["status"] == "ok" for r in recs), [(r["metric"], r["error"]) for r in recs]
    pose = [r for r in recs if r["metric"] == "pose_error"]
    assert len(pose) == 2 and all(0 < r["value"] < RELATIVE_BOUND * r["pose_spread"] for r in pose)


def test_sweep_takes_precision(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = cli.main(["sweep", "mixste", "--size", "tiny", "--frames", "9", "--stages", "1", "--blocks", "2",
                     "--keep", "1/3", "--no-references", "--precision", "fp32,int8", "--metrics",
                     "flops,latency,pose_error", "--pose-steps", "2", "--executor", "inline", "--out", str(out),
                     "--no-report"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    import pandas as pd

    table = pd.read_csv(out / "schedules.csv")
    assert sorted(table["precision"]) == ["fp32", "int8"]
    assert table.set_index("precision").loc["int8", "pose_error_mm"] > 0
    assert table.set_index("precision").loc["fp32", "pose_error_mm"] == 0


# --------------------------------------------------------------------------- gate, compare, report (records only)


def _fake(case: Case, metric: str, value: float, method: str = "-", **extra) -> dict:
    return results.record("r", case.resolve(), metric, value, method=method, **extra)


def _fake_run(pose: float = 1.0, speed: float = 1.5) -> list[dict]:
    recs = []
    for variant in ("rectangle", "hierarchical"):
        fp32 = Case("mixste", variant, frames=27, size="tiny", runtime="onnxruntime")
        int8 = Case("mixste", variant, frames=27, size="tiny", runtime="onnxruntime", precision="int8")
        for c in (fp32, int8):
            recs.append(_fake(c, "latency", 10.0, "timeit", ci_low=9.0, ci_high=11.0))
            recs.append(_fake(c, "pose_error", pose if c is int8 else 1e-5, "fp32_eager", weights="synthetic:2 steps",
                              mpjpe_delta=0.1, pose_spread=60.0 if variant == "rectangle" else 5.0))  # fmt: skip
        ci = {"ci_low": speed * 0.9, "ci_high": speed * 1.1, "stable": True}
        recs.append(_fake(int8, "precision_speedup", speed, "paired", **ci))
        if variant != "rectangle":
            recs.append(_fake(fp32, "speedup", 2.0, "paired", ci_low=1.9, ci_high=2.1))
            recs.append(_fake(int8, "precision_speedup", 2 * speed, "paired_rectangle", ci_low=2.9, ci_high=3.1))
    return recs


def test_gate_compares_a_precision_case_with_the_same_precision():
    base = _fake_run()
    assert gate.compare(base, _fake_run()).passed
    slower = gate.compare(base, _fake_run(speed=0.9))
    assert not slower.passed and {c.metric for c in slower.failures} == {"precision_speedup[paired]"}
    worse = gate.compare(base, _fake_run(pose=2.0))
    assert [c.metric for c in worse.failures] == ["pose_error[fp32_eager]"] * 2
    assert all("int8" in c.case_id for c in worse.failures)
    assert gate.compare(base, _fake_run(pose=1.04)).passed


def test_compare_calls_a_pose_error_change_beyond_noise():
    rows, _ = compare_mod.compare_runs([_fake_run(), _fake_run(pose=1.5)])
    pose = {r.case_id: r for r in rows if r.metric.startswith("pose_error")}
    int8 = [r for cid, r in pose.items() if "int8" in cid]
    assert int8 and all(r.beyond_noise == [True] for r in int8)
    assert all(r.beyond_noise == [False] for cid, r in pose.items() if "int8" not in cid)


def test_report_has_the_precision_section_and_figure(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _fake_run()))
    out = write_report(run, accuracy=[], out=tmp_path / "report")
    md = (out / "index.md").read_text()
    assert "## Reduced precision" in md and "3.00 [2.90, 3.10]" in md  # int8 hierarchical vs the fp32 rectangle
    # poses that hardly move are marked, and the remark names the cases and what to do
    section = md.split("## Reduced precision", 1)[1]
    assert "| 60 " in section and "5 (still)" in section
    assert "Still poses: mixste hierarchical 2:" in section and "--checkpoint" in section
    assert "mixste rectangle" not in section.split("Still poses:", 1)[1].split("\n", 1)[0]
    assert (out / "plots" / "precision_tradeoff.png").is_file()
    import pandas as pd

    summary = pd.read_csv(out / "summary.csv")
    int8 = summary[summary["precision"] == "int8"]
    assert len(int8) == 2 and (int8["pose_error_mm"] == 1.0).all()
