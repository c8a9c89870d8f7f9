"""Official checkpoints in and out (backbones.official, bench.accuracy.checkpoints).

tests/data/official_keys.json pins every supported release's state_dict: key names and shapes as
the official repositories build them (names the file and configuration each comes from). Each
release becomes a synthetic checkpoint of random values in its release's container, is loaded
strictly, exported back and compared key by key, bit for bit. Forwards run on tiny models whose
official-format state_dicts hold the same names at small sizes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import backbones
from backbones.official import release_container, unwrap_state_dict
from backbones.releases import CheckpointMismatch
from bench.accuracy.checkpoints import load_checkpoint
from bench.cli import main
from bench.core.results import read_records

DATA = json.loads((Path(__file__).parent / "data" / "official_keys.json").read_text())["releases"]


def release_keys(name: str) -> list[tuple[str, tuple[int, ...]]]:
    entry = DATA[name]
    entries = DATA[entry["same_keys_as"]]["keys"] if "same_keys_as" in entry else entry["keys"]
    out: list[tuple[str, tuple[int, ...]]] = []
    for e in entries:
        if isinstance(e, dict):
            out += [(f"{e['repeat']}{i}.{k}", tuple(s)) for i in range(*e["range"]) for k, s in e["keys"]]
        else:
            out.append((e[0], tuple(e[1])))
    return out


def synthetic(keys: list[tuple[str, tuple[int, ...]]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values under the release's names (BatchNorm batch counters as integers, as saved)."""
    g = torch.Generator().manual_seed(seed)

    def value(k: str, s: tuple[int, ...]) -> torch.Tensor:
        if k.endswith("num_batches_tracked"):
            return torch.randint(0, 1000, s, generator=g)
        if k.endswith("running_var"):
            return torch.rand(s, generator=g) + 0.5
        return torch.randn(s, generator=g)

    return {k: value(k, s) for k, s in keys}


# release -> (backbone, load_official arguments, expected variant, size, frames, tokens of the last block)
RELEASES: dict[str, tuple[str, dict[str, Any], str, str, int, int]] = {
    "hot/mixste": ("mixste", {}, "rectangle", "base", 243, 243),
    "hot/hot_mixste": ("mixste", {}, "single", "base", 243, 81),
    "hot/tpc_mixste": ("mixste", {"variant": "single"}, "single", "base", 243, 61),
    "hot/mhformer": ("mhformer", {}, "rectangle", "base", 351, 351),
    "hot/tpc_mhformer": ("mhformer", {"variant": "single"}, "single", "base", 351, 117),
    "hot/motionbert": ("motionbert", {}, "rectangle", "lite", 243, 243),
    "hot/hot_motionbert": ("motionbert", {}, "single", "lite", 243, 81),
    "hot/motionagformer": ("motionagformer", {"source": "hot"}, "rectangle", "base", 243, 243),
    "hot/hot_motionagformer": ("motionagformer", {}, "single", "base", 243, 81),
    "original/mixste_243": ("mixste", {}, "rectangle", "base", 243, 243),
    "original/mixste_81": ("mixste", {}, "rectangle", "base", 81, 81),
    "original/motionbert_lite": ("motionbert", {}, "rectangle", "lite", 243, 243),
    "original/motionbert_base": ("motionbert", {}, "rectangle", "base", 243, 243),
    "original/mhformer_27": ("mhformer", {}, "rectangle", "base", 27, 27),
    "original/mhformer_81": ("mhformer", {}, "rectangle", "base", 81, 81),
    "original/mhformer_243": ("mhformer", {}, "rectangle", "base", 243, 243),
    "original/mhformer_351": ("mhformer", {}, "rectangle", "base", 351, 351),
    "original/motionagformer_xs": ("motionagformer", {}, "rectangle", "xsmall", 27, 27),
    "original/motionagformer_s": ("motionagformer", {}, "rectangle", "small", 81, 81),
    "original/motionagformer_b": ("motionagformer", {"source": "original"}, "rectangle", "base", 243, 243),
    "original/motionagformer_l": ("motionagformer", {}, "rectangle", "large", 243, 243),
}
# How each release saves: HoT and MHFormer a bare state_dict; the others under a key, from DataParallel.
CONTAINER = {"mixste": ("model_pos", True), "motionbert": ("model_pos", True), "motionagformer": ("model", True)}


def test_every_pinned_release_is_tested():
    assert set(RELEASES) == set(DATA)


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_release_loads_strictly_and_exports_bit_for_bit(release):
    backbone, kwargs, variant, size, frames, last = RELEASES[release]
    keys = release_keys(release)
    sd = synthetic(keys)
    key, wrapped = CONTAINER.get(backbone, (None, False))
    ckpt: Any = sd
    if release.startswith("original/") and key:
        ckpt = {"epoch": 3, key: {("module." if wrapped else "") + k: v for k, v in sd.items()}}
    model = backbones.load_official(backbone, ckpt, **kwargs)
    assert (model.variant, model.size, model.frames, model.token_profile[-1]) == (variant, size, frames, last)
    out = backbones.official_state_dict(model, source=release.split("/")[0])
    assert [(k, tuple(v.shape)) for k, v in out.items()] and set(out) == set(sd)
    for k, v in sd.items():
        assert out[k].dtype == v.dtype and torch.equal(out[k], v), k
    names = list(out)
    if backbone == "mixste":  # the release's order: every spatial block, then every temporal block
        assert max(i for i, n in enumerate(names) if n.startswith("STEblocks.")) < names.index("TTEblocks.0.norm1.weight")
    # the release's top-level order
    assert list(dict.fromkeys(n.split(".")[0] for n in names)) == list(dict.fromkeys(k.split(".")[0] for k, _ in keys))


@pytest.mark.parametrize("release", ["original/motionagformer_xs", "original/mhformer_27"])
def test_small_releases_run_at_full_size(release):
    backbone, kwargs, *_ = RELEASES[release]
    model = backbones.load_official(backbone, synthetic(release_keys(release)), **kwargs).eval()
    x = torch.randn(1, model.frames, 17, model.in_channels)
    with torch.inference_mode():
        y = model(x)
    assert y.shape[-2:] == (17, 3) and torch.isfinite(y).all()


def test_mixste_blocks_are_matched_by_name_not_by_order():
    sd = synthetic(release_keys("original/mixste_243"))
    model = backbones.load_official("mixste", sd)
    for i in (0, 5, 7):
        assert torch.equal(model.blocks[i].spatial.attn.qkv.weight, sd[f"STEblocks.{i}.attn.qkv.weight"])
        assert torch.equal(model.blocks[i].temporal.mlp.fc2.bias, sd[f"TTEblocks.{i}.mlp.fc2.bias"])


def test_mhformer_hypotheses_map_to_their_slices():
    sd = synthetic(release_keys("original/mhformer_81"))
    model = backbones.load_official("mhformer", sd)
    c = model.cfg.dim
    for h in range(3):
        assert torch.equal(model.pos_embed[..., h * c:(h + 1) * c], sd[f"Transformer_hypothesis.pos_embed_{h + 1}"])
    # CHI: norm3_<h><1, 2, 3> normalise the query, key and value sources of hypothesis h's update
    chi = model.blocks[-1]
    assert torch.equal(chi.norm_k[1].weight, sd["Transformer_hypothesis.CHI_blocks.0.norm3_22.weight"])
    assert torch.equal(chi.norm_v[2].bias, sd["Transformer_hypothesis.CHI_blocks.0.norm3_33.bias"])


def test_hot_motionagformer_takes_hot_conventions_and_slot_norms():
    model = backbones.load_official("motionagformer", synthetic(release_keys("hot/hot_motionagformer")))
    assert (model.cfg.heads, model.cfg.neighbours, model.cfg.hot_slot_norm) == (4, 4, True)
    assert model.tokens.stages == [(7, 81)] and model.tokens.recoverer == "tra"
    base = backbones.load_official("motionagformer", synthetic(release_keys("original/motionagformer_b")), source="original")
    assert (base.cfg.heads, base.cfg.neighbours) == (8, 2)


# --------------------------------------------------------------------------- tiny forwards


TINY = [  # (backbone, variant, create overrides, load_official arguments)
    ("mixste", "rectangle", {}, {}),
    ("mixste", "single", {"schedule": ((3, 3),)}, {}),  # HoT-MixSTE: prunes before block 3
    ("mixste", "single", {"schedule": ((7, 3),), "recoverer": "tri", "embed_kept": False},
     {"variant": "single", "schedule": ((7, 3),)}),  # TPC-MixSTE at a tiny keep
    ("motionbert", "rectangle", {}, {}),
    ("motionbert", "single", {"schedule": ((1, 3),)}, {}),
    ("mhformer", "rectangle", {}, {}),
    ("mhformer", "single", {}, {"variant": "single"}),
    ("motionagformer", "rectangle", {}, {"source": "original", "heads": 4}),
    ("motionagformer", "single", {"schedule": ((7, 3),), "hot_slot_norm": True, "neighbours": 4}, {"heads": 4}),
]


@pytest.mark.parametrize(("backbone", "variant", "create_kw", "load_kw"), TINY)
def test_tiny_official_state_dict_loads_back_to_the_same_outputs(backbone, variant, create_kw, load_kw):
    torch.manual_seed(0)
    model = backbones.create(backbone, variant, frames=9, size="tiny", **create_kw).eval()
    sd = backbones.official_state_dict(model)
    loaded = backbones.load_official(backbone, {k: v.clone() for k, v in sd.items()}, **load_kw).eval()
    assert loaded.token_profile == model.token_profile and loaded.size == "tiny"
    x = torch.randn(2, 9, 17, model.in_channels)
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))
    assert all(torch.equal(a, b) for a, b in zip(backbones.official_state_dict(loaded).values(), sd.values(), strict=True))


# --------------------------------------------------------------------------- mismatches


def test_missing_and_unexpected_keys_are_listed_with_shapes():
    sd = synthetic(release_keys("hot/hot_mixste"))
    del sd["TTEblocks.7.mlp.fc2.bias"]
    sd["cross_attention.extra"] = torch.zeros(3, 4)
    with pytest.raises(CheckpointMismatch) as e:
        backbones.load_official("mixste", sd)
    msg = str(e.value)
    assert "1 missing: TTEblocks.7.mlp.fc2.bias [512]" in msg and "1 unexpected: cross_attention.extra [3, 4]" in msg
    assert "\n" not in msg


def test_a_wrong_shape_is_named_with_both_shapes():
    sd = synthetic(release_keys("hot/mixste"))
    sd["head.1.weight"] = torch.zeros(4, 512)
    with pytest.raises(CheckpointMismatch, match=r"head\.1\.weight \[4, 512\] \(expected \[3, 512\]\)"):
        backbones.load_official("mixste", sd)


@pytest.mark.parametrize(("release", "backbone", "kwargs", "match"), [
    ("hot/mixste", "motionbert", {}, "mixste's, not motionbert's"),
    ("original/motionagformer_b", "motionagformer", {}, "pass source='hot' or source='original'"),
    ("hot/hot_motionbert", "motionbert", {"source": "original"}, "HoT's token pruning"),
    ("hot/hot_mixste", "mixste", {"variant": "hierarchical"}, "the single variant"),
    ("hot/mixste", "mixste", {"frames": 81}, "hold 243 frames"),
    ("hot/mixste", "mixste", {"source": "paper"}, "unknown source 'paper'"),
])  # fmt: skip
def test_what_does_not_fit_is_a_value_error_saying_why(release, backbone, kwargs, match):
    with pytest.raises(ValueError, match=match):
        backbones.load_official(backbone, synthetic(release_keys(release)), **kwargs)


def test_containers_and_dataparallel_prefix_are_unwrapped():
    sd = {"a.weight": torch.zeros(2)}
    for ckpt in (sd, {"model_pos": sd}, {"model": {"module.a.weight": sd["a.weight"]}}, {"state_dict": sd, "epoch": 1}):
        assert list(unwrap_state_dict(ckpt)) == ["a.weight"]
    with pytest.raises(CheckpointMismatch, match="none under model_pos"):
        unwrap_state_dict({"epoch": 1, "optimizer": {}})


def test_a_file_with_numpy_rng_state_loads_without_unpickling_code(tmp_path):
    # MixSTE's run.py saves numpy's RNG state beside the weights.
    sd = synthetic(release_keys("original/mixste_81"))
    path = tmp_path / "epoch_80.bin"
    torch.save({"epoch": 80, "random_state": np.random.RandomState(0).get_state(),
                "model_pos": {f"module.{k}": v for k, v in sd.items()}}, path)  # fmt: skip
    model = backbones.load_official("mixste", path)
    assert model.frames == 81 and torch.equal(backbones.official_state_dict(model)["Temporal_pos_embed"],
                                              sd["Temporal_pos_embed"])  # fmt: skip


# --------------------------------------------------------------------------- CLI


def _tiny_release(path: Path, backbone: str = "mixste", variant: str = "single", **kw: Any) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    if variant == "single":
        kw.setdefault("schedule", ((3, 3),) if backbone == "mixste" else ((1, 3),))
    model = backbones.create(backbone, variant, frames=9, size="tiny", **kw)
    sd = backbones.official_state_dict(model)
    torch.save(release_container(backbone, "original", sd), path)
    return sd


def test_convert_round_trips_through_a_vptbench_checkpoint(tmp_path, capsys):
    sd = _tiny_release(tmp_path / "hot.pth")
    assert main(["convert", str(tmp_path / "hot.pth"), "--out", str(tmp_path / "v.pt")]) == 0
    ckpt = load_checkpoint(tmp_path / "v.pt")
    assert ckpt["case"]["variant"] == "single" and ckpt["official"]["release"] == "HoT-MixSTE"
    assert main(["convert", str(tmp_path / "v.pt"), "--to-official", "--out", str(tmp_path / "back.pth")]) == 0
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    assert list(back) == list(sd) and all(torch.equal(back[k], sd[k]) for k in sd)  # HoT: a bare state_dict
    assert "HoT-MixSTE" in capsys.readouterr().out


def test_convert_to_official_writes_the_original_container(tmp_path):
    sd = _tiny_release(tmp_path / "mb.bin", "motionbert", "rectangle")
    assert main(["convert", str(tmp_path / "mb.bin"), "--to-official", "--out", str(tmp_path / "o.bin")]) == 0
    out = torch.load(tmp_path / "o.bin", weights_only=True)
    assert set(out) == {"model_pos"} and all(torch.equal(out["model_pos"][f"module.{k}"], v) for k, v in sd.items())


@pytest.mark.parametrize(("argv", "match"), [
    (["--backbone", "motionbert"], "mixste's, not motionbert's"),
    (["--variant", "sideways"], "unknown variant 'sideways'"),
    (["--variant", "rectangle"], "does not fit HoT-MixSTE"),
])  # fmt: skip
def test_convert_mismatches_are_one_line_exit_2(tmp_path, capsys, argv, match):
    _tiny_release(tmp_path / "hot.pth")
    assert main(["convert", str(tmp_path / "hot.pth"), "--out", str(tmp_path / "v.pt"), *argv]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1 and "Traceback" not in err


def test_convert_of_a_file_that_is_not_a_checkpoint_exits_2(tmp_path, capsys):
    (tmp_path / "x.pth").write_text("not a checkpoint")
    assert main(["convert", str(tmp_path / "x.pth"), "--out", str(tmp_path / "v.pt")]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err


def test_profile_measures_the_model_of_an_official_file(tmp_path, capsys):
    _tiny_release(tmp_path / "hot.pth")
    argv = ["profile", "mixste", "--checkpoint", str(tmp_path / "hot.pth"), "--metrics", "params", "--json"]
    assert main(argv) == 0
    [rec] = json.loads(capsys.readouterr().out)
    assert rec["metric"] == "params" and rec["variant"] == "single" and rec["frames"] == 9 and rec["size"] == "tiny"
    assert main(["profile", "mixste", "--checkpoint", str(tmp_path / "hot.pth"), "--frames", "27"]) == 2
    assert "drop --frames" in capsys.readouterr().err


def test_accuracy_evaluates_an_official_file_on_human36m_files(tmp_path, capsys):
    from test_h36m import write_h36m  # tests/ is on sys.path (pytest prepends it)

    write_h36m(tmp_path)
    _tiny_release(tmp_path / "magf.bin", "motionagformer", "rectangle")
    out = tmp_path / "run"
    argv = ["accuracy", "--checkpoint", str(tmp_path / "magf.bin"), "--source", "original", "--data", "h36m",
            "--data-dir", str(tmp_path), "--executor", "inline", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    recs = read_records(out)
    assert {r["metric"] for r in recs} == {"mpjpe", "p_mpjpe", "mpjve"}
    for r in recs:
        assert r["status"] == "ok" and r["method"] == "h36m" and r["backbone"] == "motionagformer", r
        assert np.isfinite(r["value"]) and r["checkpoint"].endswith("official-magf.pt") and r["standardised"] is False
    # more than one model for an official file is a user mistake
    argv2 = [*argv[:-1], str(tmp_path / "run2"), "--variants", "rectangle,single"]
    assert main(argv2) == 2
    assert "one value" in capsys.readouterr().err
