"""vptbench accuracy: every backbone x variant trains, evaluates and records; a variant learns."""

from __future__ import annotations

import csv
import dataclasses
import json
from importlib import resources

import numpy as np
import pytest
import torch

import backbones
from bench.accuracy.checkpoints import checkpoint_path, load_checkpoint, load_fitting
from bench.accuracy.data.synthetic import synthetic_data
from bench.accuracy.evaluate import METRICS, score
from bench.accuracy.job import PRESETS, accuracy_case, load_data
from bench.accuracy.metrics import mpjpe
from bench.accuracy.standardise import Standardiser
from bench.cli import main
from bench.core.case import Case
from bench.core.errors import UsageError
from bench.core.results import METRIC_UNITS, read_records

CASES = [(b, v) for b in backbones.names() for v in backbones.VARIANTS]


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


def test_smoke_steps_give_seq2frame_backbones_as_many_supervised_frames(tmp_path):
    from bench.cli import build_parser
    from bench.commands.accuracy import plan_cases

    preset = PRESETS["smoke"]
    args = build_parser().parse_args(["accuracy", "--backbones", "mhformer,mixste", "--variants", "rectangle"])
    batches = {c.backbone: c.batch for c in plan_cases(args, preset)}
    assert batches == {"mhformer": preset.batch * preset.frames, "mixste": preset.batch}  # 72 centre frames = 8 x 9
    args = build_parser().parse_args(["accuracy", "--backbones", "mhformer,mixste", "--batch", "4"])
    assert {c.batch for c in plan_cases(args, preset)} == {4}  # --batch sets every backbone's


def test_prediction_covers_every_test_frame_once(tiny_data):
    from bench.accuracy.evaluate import evaluation_clips, predict

    seq_len = len(tiny_data.test[0])
    for name, frames in (("mixste", 27),):
        model = backbones.create(name, frames=frames, size="tiny")
        preds = predict(model, evaluation_clips(tiny_data, frames, model.pipeline), batch=8, device="cpu")
        assert preds[0].shape == (seq_len, 17, 3)
        assert np.all(preds[0][:, 0] == 0)  # root joint set to the origin
    perfect = score([s.targets.astype(np.float64) for s in tiny_data.test], tiny_data)
    assert perfect == {"mpjpe": 0.0, "p_mpjpe": pytest.approx(0.0, abs=1e-6), "mpjve": 0.0}


def test_standardiser_whitens_training_inputs_and_zero_output_is_the_mean_pose(tiny_data):
    norm = Standardiser.fit(tiny_data)
    x = torch.from_numpy(np.concatenate([s.inputs for s in tiny_data.train]))
    z = norm.inputs(x).double()
    assert z.shape == x.shape
    assert z.mean(dim=0).abs().max() < 1e-4  # every (joint, channel)
    assert torch.allclose(z.std(dim=0, unbiased=False), torch.ones(17, 3, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(norm.inputs(x[..., :2]), norm.inputs(x)[..., :2])  # 2-channel backbones
    zero = norm.outputs(torch.zeros(1, 17, 3)).numpy()[0] * 1000.0
    np.testing.assert_allclose(zero, tiny_data.mean_pose(), atol=1e-3)
    assert Standardiser.from_dict(json.loads(json.dumps(norm.to_dict()))) == norm  # survives a checkpoint


def test_standardiser_sees_the_pose_relative_to_the_root_and_loses_nothing(tiny_data):
    norm = Standardiser.fit(tiny_data)
    x = torch.from_numpy(tiny_data.train[0].inputs[:5]).double()
    moved = x.clone()
    moved[..., :2] += torch.tensor([0.3, -0.2], dtype=torch.float64)  # the subject elsewhere in the image
    dz = norm.inputs(moved) - norm.inputs(x)
    assert dz[:, 0, :2].abs().min() > 0.1  # the root carries the image position...
    assert dz[:, 1:].abs().max() < 1e-9  # ...the other joints only the pose
    assert dz[..., 2].abs().max() == 0  # confidence untouched
    # Invertible: undo the scaling, then add the root back.
    raw = norm.inputs(x) * torch.tensor(norm.input_std, dtype=torch.float64) + torch.tensor(norm.input_mean, dtype=torch.float64)
    raw[..., 1:, :2] += raw[..., :1, :2]
    assert torch.allclose(raw, x, atol=1e-9)


def test_standardiser_leaves_a_constant_channel_finite(tiny_data):
    # Ground-truth 2D has confidence 1 everywhere: shifting it is enough, dividing by 0 is not.
    seqs = [dataclasses.replace(s, inputs=np.concatenate([s.inputs[..., :2], np.ones_like(s.inputs[..., :1])], -1))
            for s in tiny_data.train]  # fmt: skip
    norm = Standardiser.fit(dataclasses.replace(tiny_data, train=seqs))
    assert all(row[2] == 1.0 for row in norm.input_std)
    assert norm.input_std[0][:2] != (1.0, 1.0)  # the root's image position does vary
    assert torch.isfinite(norm.inputs(torch.from_numpy(seqs[0].inputs))).all()


@pytest.mark.slow
def test_smoke_budget_learns_far_below_the_mean_pose(tmp_path):
    # The smoke preset's data, length, batch, steps and learning rate, on one thread, for a pruned
    # variant of a seq2seq backbone (MixSTE's H2OT pyramid, the cheapest) and for the seq2frame
    # backbone (MHFormer's HoT variant): the pruned pipelines learn (~60 s on one idle core).
    preset = PRESETS["smoke"]
    data = load_data("synthetic", preset=preset, seed=0)
    baseline = None
    for name, variant in (("mixste", "hierarchical"), ("mhformer", "single")):
        batch = preset.batch_for(backbones.spec(name).pipeline)
        case = Case(name, variant, frames=preset.frames, size=preset.size, batch=batch).resolve()
        recs = accuracy_case(case, data=data, steps=preset.steps, batch=batch, seed=0, run_dir=tmp_path,
                             run_id="t", lr=preset.lr, weight_decay=preset.weight_decay, progress=False)  # fmt: skip
        by = {r["metric"]: r for r in recs}
        baseline = by["mpjpe"]["mean_pose_mpjpe"]
        # measured with this budget: MPJPE 0.50 / 0.46 of the mean pose, P-MPJPE 0.28 / 0.26
        assert by["mpjpe"]["value"] < 0.6 * baseline, (name, by["mpjpe"]["value"], baseline)
        assert by["p_mpjpe"]["value"] < 0.4 * baseline, (name, by["p_mpjpe"]["value"], baseline)
    targets = np.concatenate([s.targets for s in data.test])
    assert baseline == pytest.approx(mpjpe(np.broadcast_to(data.mean_pose(), targets.shape), targets))


def test_local_executor_gives_the_records_of_an_inline_run(tmp_path):
    common = ["accuracy", "--backbones", "mixste,mhformer", "--variants", "single", "--steps", "2", "--batch", "2"]
    assert main([*common, "--executor", "inline", "--out", str(tmp_path / "inline")]) == 0
    assert main([*common, "--executor", "local", "--out", str(tmp_path / "local")]) == 0
    inline, local = read_records(tmp_path / "inline"), read_records(tmp_path / "local")
    key = lambda r: (r["case_id"], r["metric"])  # noqa: E731
    assert sorted(map(key, local)) == sorted(map(key, inline))
    assert {r["backbone"] for r in local} == {"mixste", "mhformer"} and {r["metric"] for r in local} == set(METRICS)
    assert all(r["status"] == "ok" and r["threads"] == PRESETS["smoke"].threads for r in local + inline)
    # Same seed, data and thread count: the subprocess trains the very same model.
    values = {key(r): r["value"] for r in inline}
    assert [r["value"] for r in local] == pytest.approx([values[key(r)] for r in local], rel=1e-5)
    meta = json.loads((tmp_path / "local" / "meta.json").read_text())
    assert meta["executor"] == "local" and meta["kind"] == "accuracy" and meta["cases"] == 2


def test_shards_split_the_cases_without_overlap(tmp_path, capsys):
    common = ["accuracy", "--backbones", "mixste", "--variants", "rectangle,single,hierarchical", "--steps", "1",
              "--batch", "2", "--executor", "inline"]  # fmt: skip
    runs = [tmp_path / f"s{i}" for i in (1, 2)]
    for i, out in enumerate(runs, start=1):
        assert main([*common, "--shard", f"{i}/2", "--out", str(out)]) == 0
    variants = [{r["variant"] for r in read_records(out)} for out in runs]
    assert variants[0] | variants[1] == {"rectangle", "single", "hierarchical"}
    assert not variants[0] & variants[1] and all(variants)
    assert "hierarchical" in capsys.readouterr().out  # the summary table lists the shard's cases


def test_cli_writes_records_meta_checkpoint_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["accuracy", "--backbones", "mixste", "--variants", "rectangle,hierarchical", "--steps", "2",
            "--batch", "2", "--out", str(out), "--executor", "inline"]  # fmt: skip
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
    assert main(["accuracy", "--checkpoint", str(ckpt), "--out", str(out2), "--executor", "inline"]) == 0
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


def test_checkpoint_of_another_format_exits_2_naming_both_formats(tmp_path, capsys):
    # A /1 checkpoint's standardiser has per-channel statistics: evaluating it with this version's
    # root-relative inputs would give wrong numbers quietly.
    old = tmp_path / "old.pt"
    case = Case("mixste", "rectangle", frames=27, size="tiny", batch=2).resolve()
    torch.save({"format": "vptbench-accuracy-checkpoint/1", "case": dataclasses.asdict(case), "state_dict": {}}, old)
    assert main(["accuracy", "--checkpoint", str(old), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(old) in err
    assert "checkpoint/1" in err and "checkpoint/2" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_cuda_without_cuda_exits_2(tmp_path, capsys):
    assert main(["accuracy", "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    assert "CUDA" in capsys.readouterr().err


def test_reported_table_is_well_formed_and_matches_the_registry():
    text = resources.files("bench.analysis").joinpath("reported.csv").read_text(encoding="utf-8")
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


def test_weights_of_another_backbone_name_the_missing_and_unexpected_keys(tmp_path):
    case = Case("mixste", frames=27, size="tiny").resolve()
    other = backbones.create("motionbert", frames=27, size="tiny").state_dict()
    with pytest.raises(UsageError) as info:
        load_fitting(case.build(), other, "other.pt", case)
    message = str(info.value)
    assert "\n" not in message and "missing (" in message and "unexpected (" in message
    assert next(iter(other)) in message  # a key is named, not just counted
