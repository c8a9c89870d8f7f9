"""MotionAGFormer-B: official parameter counts and paper FLOPs, variants, and the per-frame BatchNorm."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import backbones
from backbones.motionagformer import GraphMixer, frame_batch_norm, normalise_adjacency

TINY = 27  # frames for the tiny checks: 27 -> 9 -> 3 under the hierarchical default

# Measured once on the official code: NationalGAILab/HoT model/motionagformer/{motionagformer,
# hot_motionagformer}.py, Model(args with maxlen=243), timm stubbed, in a scratch dir; params =
# sum of p.numel(), MACs = thop 0.1.1 profile(model, inputs=(torch.rand(1, 243, 17, 3),)) in eval.
OFFICIAL_PARAMS = {"rectangle": 11_723_811, "single": 11_828_031}
OFFICIAL_THOP_MACS = {"rectangle": 48_301_370_496, "single": 30_473_283_456}
# HoT's pruned layers 7..15 normalise their temporal GCN over the 81 kept slots (BatchNorm1d(81));
# ours keep BatchNorm1d(243) over absolute frames so a rectangle checkpoint loads (module docstring).
HOT_SLOT_NORM_DEFICIT = 9 * 2 * (243 - 81)  # 9 layers x (weight + bias) x missing channels


def _tiny(variant: str = "rectangle", frames: int = TINY, **kw) -> nn.Module:
    return backbones.create("motionagformer", variant, frames=frames, size="tiny", **kw)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_official_release():
    rect = backbones.create("motionagformer", "rectangle")
    single = backbones.create("motionagformer", "single")
    assert _params(rect) == OFFICIAL_PARAMS["rectangle"]
    assert _params(single) == OFFICIAL_PARAMS["single"] + HOT_SLOT_NORM_DEFICIT
    # What HoT adds (kept-token embedding 81x128, TRA queries 243x128 and cross-attention) lives
    # under `tokens.`: 10,368 + 31,104 + 65,664 parameters in the official breakdown.
    tokens = sum(p.numel() for n, p in single.named_parameters() if n.startswith("tokens."))
    assert tokens == 10_368 + 31_104 + 65_664
    assert _params(single) - tokens == _params(rect)


def test_hot_slot_norm_reproduces_hots_release_exactly():
    # The switch for users who load HoT's own checkpoints: BatchNorm over the kept slots.
    single = backbones.create("motionagformer", "single", hot_slot_norm=True)
    assert _params(single) == OFFICIAL_PARAMS["single"]
    norms = [blk.graph_temporal.mixer.batch_norm.num_features for blk in single.blocks]
    assert norms == [243] * 7 + [81] * 9
    tiny = _tiny("hierarchical", hot_slot_norm=True).eval()
    with torch.no_grad():
        assert tiny(torch.randn(2, TINY, 17, 3)).shape == (2, TINY, 17, 3)
    # ...at the price of the shared weight layout: a rectangle checkpoint no longer fits.
    with pytest.raises(RuntimeError, match="size mismatch"):
        tiny.load_state_dict(_tiny("rectangle").state_dict(), strict=False)


@pytest.mark.slow
def test_paper_flops_match_official_release():
    thop = pytest.importorskip("thop")
    x = torch.rand(1, 243, 17, 3)
    gflops = {}
    for variant in ("rectangle", "single", "hierarchical"):
        model = backbones.create("motionagformer", variant).eval()
        macs, _ = thop.profile(model, inputs=(x,), verbose=False)
        gflops[variant] = 2 * macs / 1e9
    for variant, macs in OFFICIAL_THOP_MACS.items():
        assert gflops[variant] == pytest.approx(2 * macs / 1e9, rel=0.015), variant
    # The documented hierarchical default sits in the H2OT band of FLOPs reduction.
    assert 0.50 <= 1 - gflops["hierarchical"] / gflops["rectangle"] <= 0.60


def test_single_is_hots_configuration():
    model = _tiny("single", frames=243)
    assert model.token_profile == [243] * 7 + [81] * 9
    assert model.tokens.schedule_text == "7:81"
    assert (model.tokens.pruner, model.tokens.recoverer) == ("tpc", "tra")
    assert set(model.tokens.embeds) == {"7"}
    assert len(model.blocks) == len(model.token_profile) == 16


def test_hierarchical_default_is_a_pyramid():
    profile = _tiny("hierarchical", frames=243).token_profile
    assert profile == [243] * 4 + [81] * 6 + [27] * 6


@pytest.mark.parametrize("variant", ["single", "hierarchical"])
@pytest.mark.parametrize("pruner", backbones.pruners())
@pytest.mark.parametrize("recoverer", backbones.recoverers())
def test_pruned_forward_shapes(variant: str, pruner: str, recoverer: str):
    torch.manual_seed(0)
    model = _tiny(variant, pruner=pruner, recoverer=recoverer).eval()
    with torch.no_grad():
        y = model(torch.randn(2, TINY, 17, 3))
    assert y.shape == (2, TINY, 17, 3)
    assert torch.isfinite(y).all()


def test_rectangle_forward_shape_and_attributes():
    model = _tiny().eval()
    with torch.no_grad():
        y = model(torch.randn(2, TINY, 17, 3))
    assert y.shape == (2, TINY, 17, 3)
    assert (model.pipeline, model.in_channels, model.frames) == ("seq2seq", 3, TINY)
    assert model.token_profile == [TINY] * 16


def test_tpa_tracks_attention_only_before_each_stage():
    model = _tiny("hierarchical", frames=243, pruner="tpa")
    tracked = [i for i, blk in enumerate(model.blocks) if blk.att_temporal.mixer.track_received]
    assert tracked == [3, 9]  # the layers before the prune points 4 and 10


def test_pruned_training_step_reaches_every_block():
    torch.manual_seed(0)
    model = _tiny("single", pruner="tpc", recoverer="tra").train()
    model(torch.randn(2, TINY, 17, 3)).square().mean().backward()
    for i, blk in enumerate(model.blocks):
        grad = blk.graph_temporal.mixer.V.weight.grad
        assert grad is not None and grad.abs().sum() > 0, f"block {i}"


def test_temporal_graph_survives_fewer_tokens_than_neighbours():
    # Down to a single token: the kNN graph must cap k at the token count.
    model = _tiny("hierarchical", schedule=((2, 3), (4, 1))).eval()
    assert model.token_profile[4:] == [1] * 12
    with torch.no_grad():
        y = model(torch.randn(1, TINY, 17, 3))
    assert y.shape == (1, TINY, 17, 3) and torch.isfinite(y).all()


@pytest.mark.parametrize("variant", ["single", "hierarchical"])
def test_rectangle_checkpoint_loads_into_pruned_variants(variant: str):
    state = _tiny().state_dict()
    result = _tiny(variant).load_state_dict(state, strict=False)
    assert result.unexpected_keys == []
    assert all(k.startswith("tokens.") for k in result.missing_keys), result.missing_keys


def test_frame_norm_is_batch_norm_when_all_frames_are_kept():
    torch.manual_seed(0)
    b, j, t, c = 3, 5, 7, 4
    x = torch.randn(b, j, t, c) * 2 + 1
    pos = torch.arange(t).expand(b, t)
    ref, ours = nn.BatchNorm1d(t), nn.BatchNorm1d(t)
    with torch.no_grad():
        for bn in (ref, ours):
            bn.weight.copy_(torch.linspace(0.5, 2, t))
            bn.bias.copy_(torch.linspace(-1, 1, t))
    expected = ref(x.reshape(b * j, t, c)).reshape(b, j, t, c)
    torch.testing.assert_close(frame_batch_norm(ours, x, pos), expected)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ref.eval(), ours.eval()
    torch.testing.assert_close(frame_batch_norm(ours, x, pos), ref(x.reshape(b * j, t, c)).reshape(b, j, t, c))


def test_frame_norm_gives_kept_tokens_their_own_frames_statistics():
    torch.manual_seed(0)
    b, j, t, c = 2, 3, 9, 4
    bn = nn.BatchNorm1d(t).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(t))
        bn.running_var.copy_(torch.rand(t) + 0.5)
        bn.weight.copy_(torch.randn(t))
        bn.bias.copy_(torch.randn(t))
    x = torch.randn(b, j, t, c)
    pos = torch.tensor([[0, 4, 8], [1, 2, 7]])  # different frames kept per sample
    full = bn(x.reshape(b * j, t, c)).reshape(b, j, t, c)
    batch = torch.arange(b)[:, None]
    kept = x.transpose(1, 2)[batch, pos].transpose(1, 2)  # (B, J, K, C)
    expected = full.transpose(1, 2)[batch, pos].transpose(1, 2)
    torch.testing.assert_close(frame_batch_norm(bn, kept, pos), expected)


def test_frame_norm_training_updates_only_frames_that_were_kept():
    bn = nn.BatchNorm1d(6).train()
    x = torch.randn(2, 3, 2, 4) + 5
    frame_batch_norm(bn, x, torch.tensor([[1, 3], [1, 4]]))
    moved = (bn.running_mean != 0).nonzero().flatten().tolist()
    assert moved == [1, 3, 4]
    assert (bn.running_var[[0, 2, 5]] == 1).all()


def test_degree_normalisation_equals_the_diagonal_matrix_form():
    torch.manual_seed(0)
    adj = (torch.rand(4, 6, 6) > 0.5).float() + torch.eye(6)  # every node has a neighbour
    d = torch.diag_embed(adj.sum(-1).pow(-0.5))
    torch.testing.assert_close(normalise_adjacency(adj), d @ adj @ d)


def test_temporal_graph_links_each_frame_to_its_most_similar_frames():
    # Frames 0-2 and 3-5 form two well-separated groups: with k = 2 no edge crosses between them,
    # so a change in one group cannot reach the other through the aggregation.
    gcn = GraphMixer(2, temporal=True, frames=6, joints=17, neighbours=2).eval()
    base = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3).reshape(1, 6, 1, 2)
    bumped = base.clone()
    bumped[0, 0, 0, 0] = 1.1
    with torch.no_grad():
        a, b = gcn(base), gcn(bumped)
    assert torch.equal(a[0, 3:], b[0, 3:])
    assert not torch.equal(a[0, 1:3], b[0, 1:3])
