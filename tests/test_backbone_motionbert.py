"""MotionBERT (DSTformer): official parameter counts and paper-protocol FLOPs, dual streams, pruning.

The official figures below were measured by running the official code on a (1, 243, 17, 3) input
with timm's DropPath/trunc_normal_ stubbed: the HoT release's model/motionbert/motionbert.py and
hot_motionbert.py (NationalGAILab/HoT; MotionBERT-Lite, keep 81 at layer_index 1) and MotionBERT's
lib/model/DSTformer.py (Walter0807/MotionBERT) built as in configs/pose3d/MB_ft_h36m.yaml
(dim_feat 512, mlp_ratio 2, dim_rep 512) and configs/pretrain/MB_lite.yaml (which gives the Lite
count below too). Parameters = sum of p.numel(); FLOPs = 2 x thop 0.1.1 ``profile`` MACs, batch 1.
With the official weights mapped onto this layout the outputs agree to 1e-6 (the HoT model too,
given the same kept frames).
"""

from __future__ import annotations

import pytest
import torch
from thop import profile

import backbones
from backbones.motionbert import DSTBlock, DSTformer

FRAMES = 27  # short sequences keep the tiny size fast; ratio schedules scale to 9 and 3 tokens

# (variant, size) -> official parameter count at T=243.
OFFICIAL_PARAMS = {
    ("rectangle", "lite"): 16_001_549,  # HoT motionbert.py == MotionBERT DSTformer MB_lite
    ("single", "lite"): 16_347_661,  # HoT hot_motionbert.py: + kept-token embedding (81x256) + TRA
    ("rectangle", "base"): 42_466_317,  # MotionBERT DSTformer MB_ft_h36m
}
# Official GFLOPs (2 x thop MACs) at T=243, Lite; HoT Fig. 1 publishes ~131 G and ~63 G.
OFFICIAL_GFLOPS = {"rectangle": 131.44114944, "single": 63.37191168}


def tiny(variant: str = "rectangle", frames: int = FRAMES, **kw) -> DSTformer:
    return backbones.create("motionbert", variant, frames=frames, size="tiny", **kw)


def inputs(batch: int = 2, frames: int = FRAMES) -> torch.Tensor:
    return torch.randn(batch, frames, 17, 3)


@pytest.mark.parametrize(("variant", "size"), sorted(OFFICIAL_PARAMS))
def test_parameter_count_equals_the_official_release(variant, size):
    model = backbones.create("motionbert", variant, size=size)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[variant, size]


@pytest.mark.slow
def test_thop_gflops_match_the_official_code_at_243_frames():
    x = torch.rand(1, 243, 17, 3)
    gflops = {}
    for variant in backbones.VARIANTS:
        model = backbones.create("motionbert", variant).eval()
        gflops[variant] = 2 * profile(model, inputs=(x,), verbose=False)[0] / 1e9
    assert gflops["rectangle"] == pytest.approx(OFFICIAL_GFLOPS["rectangle"], rel=1e-6)
    # HoT's joint pooling is an nn.AdaptiveAvgPool1d that thop counts (2 MFLOPs); ours is a mean.
    assert gflops["single"] == pytest.approx(OFFICIAL_GFLOPS["single"], rel=1e-4)
    # The documented hierarchical schedule lands inside the 50-60 % reduction it is meant to show.
    assert 0.50 < 1 - gflops["hierarchical"] / gflops["rectangle"] < 0.60


def test_token_profiles_of_the_default_schedules():
    assert tiny("rectangle", frames=243).token_profile == [243] * 5
    assert tiny("single", frames=243).token_profile == [243, 81, 81, 81, 81]  # HoT: 81 from block 1
    assert tiny("hierarchical", frames=243).token_profile == [243, 81, 81, 81, 27]
    assert tiny("single", frames=243).tokens.schedule_text == "1:81"


def test_single_defaults_are_hot_configuration():
    model = tiny("single")
    assert (model.tokens.pruner, model.tokens.recoverer) == ("tpc", "tra")
    assert list(model.tokens.embeds) == ["1"]  # one kept-token embedding, at the prune point


@pytest.mark.parametrize("recoverer", ["tri", "tra"])
@pytest.mark.parametrize("pruner", ["tps", "tpc", "tpa", "tpmo"])
@pytest.mark.parametrize("variant", ["single", "hierarchical"])
def test_every_pruner_and_recoverer_gives_full_length_3d_output(variant, pruner, recoverer):
    torch.manual_seed(0)
    model = tiny(variant, pruner=pruner, recoverer=recoverer).eval()
    with torch.no_grad():
        y = model(inputs())
    assert y.shape == (2, FRAMES, 17, 3)
    assert torch.isfinite(y).all()


def test_rectangle_forward_shape_and_block_count():
    model = tiny().eval()
    with torch.no_grad():
        y = model(inputs(batch=3))
    assert y.shape == (3, FRAMES, 17, 3)
    assert len(model.blocks) == len(model.token_profile) == 5
    assert all(isinstance(b, DSTBlock) for b in model.blocks)


def test_tpa_tracks_both_temporal_attentions_of_the_block_before_each_stage():
    model = tiny("hierarchical", pruner="tpa")  # stages at blocks 1 and 4
    tracked = [
        (b.st.temporal.attn.track_received, b.ts.temporal.attn.track_received) for b in model.blocks
    ]
    assert tracked == [(True, True), (False, False), (False, False), (True, True), (False, False)]
    assert not any(b.st.spatial.attn.track_received for b in model.blocks)


def test_tpa_keeps_the_frames_that_received_most_attention():
    torch.manual_seed(0)
    model = tiny("single", pruner="tpa", recoverer="tri").eval()
    seen = {}
    prune = model.tokens.prune

    def spy(block, x, pos, received=None):
        if block == 1:
            seen["received"] = received
        out = prune(block, x, pos, received)
        if block == 1:
            seen["pos"] = out[1]
        return out

    model.tokens.prune = spy
    with torch.no_grad():
        model(inputs(batch=2))
    received = seen["received"]
    assert received.shape == (2, FRAMES)
    best = received.topk(9, dim=1).indices.sort(dim=1).values
    assert torch.equal(seen["pos"], best)


def test_fusion_starts_as_the_mean_of_the_two_streams():
    # The official init (zero weights, equal biases) must survive the model-wide weight init.
    torch.manual_seed(0)
    block = tiny().blocks[2].eval()
    x = torch.randn(2, 5, 17, block.fusion.in_features // 2)
    with torch.no_grad():
        expected = (block.st(x) + block.ts(x)) / 2
        assert torch.allclose(block(x), expected, atol=1e-6)


def test_streams_run_in_opposite_orders():
    torch.manual_seed(0)
    block = tiny().blocks[0].eval()
    block.ts.load_state_dict(block.st.state_dict())  # same weights: only the order differs
    x = torch.randn(1, 5, 17, block.fusion.in_features // 2)
    with torch.no_grad():
        assert not torch.allclose(block.st(x), block.ts(x), atol=1e-4)


@pytest.mark.parametrize(
    ("variant", "recoverer"), [("single", "tra"), ("single", "tri"), ("hierarchical", "tri"), ("hierarchical", "tra")]
)
def test_rectangle_checkpoint_loads_into_pruned_variants(variant, recoverer):
    state = tiny().state_dict()
    model = tiny(variant, recoverer=recoverer)
    result = model.load_state_dict(state, strict=False)
    assert result.unexpected_keys == []
    assert all(k.startswith("tokens.") for k in result.missing_keys)
    own = {k for k, _ in model.named_parameters() if k.startswith("tokens.")}
    assert set(result.missing_keys) == own  # exactly the pruning/recovering parameters are new
    assert (recoverer == "tra" or variant == "single") == bool(own)


def test_base_size_builds_the_base_configuration():
    model = backbones.create("motionbert", size="base")
    assert model.size == "base"
    assert (model.cfg.dim, model.cfg.mlp_hidden, model.cfg.dim_rep) == (512, 1024, 512)
    assert model.blocks[0].st.spatial.mlp.fc1.out_features == 1024
    assert model.head.in_features == 512
    lite = backbones.create("motionbert")
    assert lite.size == "lite" and lite.cfg.dim == 256 and lite.cfg.mlp_hidden == 1024


def test_registration_facts():
    spec = backbones.spec("motionbert")
    assert (spec.pipeline, spec.in_channels, spec.frames, spec.default_size) == ("seq2seq", 3, 243, "lite")
    assert set(spec.sizes) == {"lite", "base", "tiny"}
    with pytest.raises(ValueError, match="at least 2 frames"):
        backbones.create("motionbert", frames=1, size="tiny")
