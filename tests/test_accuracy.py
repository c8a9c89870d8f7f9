"""vptbench accuracy: every backbone x variant trains, evaluates and records; a variant learns."""

from __future__ import annotations

import csv
import json
from importlib import resources

import numpy as np
import pytest
import torch

import backbones
from bench.accuracy import METRICS, PRESETS, accuracy_case, checkpoint_path, load_checkpoint, score
from bench.case import Case
from bench.cli import main
from bench.data.synthetic import synthetic_data
from bench.metrics import mpjpe
from bench.results import METRIC_UNITS, read_records

CASES = [(b, v) for b in backbones.names() for v in backbones.VARIANTS]


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models gain nothing from intra-op threads, and on a shared machine OpenMP spin-waits
    # make two threads over ten times slower than one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_data():
    return synthetic_data(seed=0, train_sequences=2, test_sequences=1, frames=40)


@pytest.mark.parametrize(("backbone", "variant"), CASES)
def test_every_case_trains_evaluates_and_checkpoints(backbone, variant, tiny_data, tmp_path):
    case = Case(backbone, variant, frames=27, size="tiny", batch=2).resolve()
    recs = accuracy_case(case, data=tiny_data, steps=2, batch=2, seed=0, run_dir=tmp_path, run_id="t", progress=False)
    assert [r["metric"] for r in recs] == list(METRICS)
    for r in recs:
        assert r["status"] == "ok", r["error"]
        assert r["method"] == "synthetic" and r["unit"] == METRIC_UNITS[r["metric"]] == "mm"
        assert r["steps"] == 2 and r["seed"] == 0 and r["case_id"] == case.case_id
        assert np.isfinite(r["value"]) and r["value"] > 0
    assert recs[0]["mean_pose_mpjpe"] > 0
    # The checkpoint rebuilds the same model: evaluating it gives the same numbers.
    path = checkpoint_path(tmp_path, case)
    ckpt = load_checkpoint(path)
    assert Case(**ckpt["case"]) == case and ckpt["steps"] == 2
    again = accuracy_case(case, data=tiny_data, steps=0, batch=2, seed=0, run_dir=tmp_path, run_id="t",
                          checkpoint=path, progress=False)  # fmt: skip
    assert [r["value"] for r in again] == pytest.approx([r["value"] for r in recs], rel=1e-5)


def test_same_seed_same_result_other_seed_other_result(tiny_data, tmp_path):
    case = Case("mixste", "rectangle", frames=27, size="tiny", batch=2).resolve()
    run = [
        accuracy_case(case, data=tiny_data, steps=3, batch=2, seed=s, run_dir=tmp_path, run_id="t", progress=False)[0]
        for s in (1, 1, 2)
    ]
    assert run[0]["value"] == run[1]["value"]
    assert run[0]["value"] != run[2]["value"]


def test_prediction_covers_every_test_frame_once(tiny_data):
    from bench.accuracy import evaluation_clips, predict

    seq_len = len(tiny_data.test[0])
    for name, frames in (("mixste", 27),):
        model = backbones.create(name, frames=frames, size="tiny")
        preds = predict(model, evaluation_clips(tiny_data, frames, model.pipeline), batch=8, device="cpu")
        assert preds[0].shape == (seq_len, 17, 3)
        assert np.all(preds[0][:, 0] == 0)  # root joint set to the origin
    perfect = score([s.targets.astype(np.float64) for s in tiny_data.test], tiny_data)
    assert perfect == {"mpjpe": 0.0, "p_mpjpe": pytest.approx(0.0, abs=1e-6), "mpjve": 0.0}


@pytest.mark.slow
def test_a_pruned_variant_learns_far_below_the_mean_pose(tmp_path):
    # MHFormer's HoT variant (seq2frame, 27 -> 9 tokens) is the cheapest model to train, so it
    # shows in ~20 s on one core that the pruned pipeline learns. The subset is the walks of the
    # synthetic data (gaits are learnt fastest; free movement needs more steps than a unit test).
    data = synthetic_data(seed=0, train_sequences=48, test_sequences=8, frames=120, walk_fraction=1.0)
    name = "mhformer" if "mhformer" in backbones.names() else "mixste"
    case = Case(name, "single", frames=27, size="tiny", batch=32).resolve()
    recs = accuracy_case(case, data=data, steps=300, batch=32, seed=0, run_dir=tmp_path, run_id="t", lr=3e-3,
                         progress=False)  # fmt: skip
    learned, baseline = recs[0]["value"], recs[0]["mean_pose_mpjpe"]
    targets = np.concatenate([s.targets for s in data.test])
    assert baseline == pytest.approx(mpjpe(np.broadcast_to(data.mean_pose(), targets.shape), targets))
    assert learned < 0.8 * baseline, (learned, baseline)
    assert recs[1]["value"] < 0.5 * baseline  # P-MPJPE: the pose shape is learnt best


def test_cli_writes_records_meta_checkpoint_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["accuracy", "--backbones", "mixste", "--variants", "rectangle,hierarchical", "--steps", "2",
            "--batch", "2", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    recs = read_records(out)
    assert len(recs) == 2 * len(METRICS)
    assert {r["variant"] for r in recs} == {"rectangle", "hierarchical"}
    assert all(r["size"] == "tiny" and r["frames"] == PRESETS["smoke"].frames for r in recs)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == "accuracy" and meta["data"]["source"] == "synthetic" and meta["end_time"]
    assert "mpjpe" in capsys.readouterr().out  # the summary table
    # --resume skips both finished cases: no new records
    assert main(args + ["--resume"]) == 0
    assert len(read_records(out)) == 2 * len(METRICS)
    # --checkpoint re-evaluates a saved model on the same synthetic test split
    ckpt = next((out / "checkpoints").glob("*rectangle*.pt"))
    out2 = tmp_path / "eval"
    assert main(["accuracy", "--checkpoint", str(ckpt), "--out", str(out2)]) == 0
    evaluated = read_records(out2)[0]
    trained = next(r for r in recs if r["variant"] == "rectangle" and r["metric"] == "mpjpe")
    assert evaluated["value"] == pytest.approx(trained["value"], rel=1e-5)
    assert evaluated["steps"] == 2


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--backbones", "nosuch"], "nosuch"),
        (["--preset", "huge"], "huge"),
        (["--steps", "0"], "--steps"),
        (["--data", "h36m"], "--data-dir"),
    ],
)
def test_bad_input_exits_2_with_one_line(extra, needle, tmp_path, capsys):
    assert main(["accuracy", "--out", str(tmp_path / "r"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_malformed_checkpoint_exits_2_naming_file_and_key(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {}}, bad)
    assert main(["accuracy", "--checkpoint", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "'case'" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_cuda_without_cuda_exits_2(tmp_path, capsys):
    assert main(["accuracy", "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    assert "CUDA" in capsys.readouterr().err


def test_reported_table_is_well_formed_and_matches_the_registry():
    text = resources.files("bench").joinpath("data/reported.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    assert rows and list(rows[0]) == ["backbone", "variant", "frames", "size", "metric", "value", "unit",
                                      "gflops_paper", "source"]  # fmt: skip
    for row in rows:
        assert row["metric"] in METRICS and row["unit"] == METRIC_UNITS[row["metric"]]
        assert 20.0 < float(row["value"]) < 100.0  # published Human3.6M errors, mm
        assert row["variant"] in backbones.VARIANTS and row["source"].strip()
        if row["gflops_paper"]:
            assert float(row["gflops_paper"]) > 0
        if row["backbone"] in backbones.names():
            spec = backbones.spec(row["backbone"])
            assert row["size"] in spec.sizes, row
            assert spec.valid_frames(int(row["frames"])) is None, row
    # the HoT headline pair: MixSTE and HoT w. MixSTE at 243 frames
    assert {(r["backbone"], r["variant"]) for r in rows} >= {("mixste", "rectangle"), ("mixste", "single")}
