"""MHFormer: official parameter counts and paper-protocol FLOPs, seq2frame centre output, pruning.

The official figures below were measured once by running the HoT release's own MHFormer code
(NationalGAILab/HoT, model/mhformer/mhformer.py and tpc_mhformer.py, with timm's DropPath stubbed)
with channel=512, d_hid=1024, n_joints=17, token_num=117, layer_index=1 on a (1, T, 17, 2) input:
parameters = sum of p.numel(), FLOPs = 2 x thop 0.1.1 ``profile`` MACs. The Vegetebird/MHFormer
release gives the same rectangle counts.
"""

from __future__ import annotations

import pytest
import torch
from thop import profile

import backbones
from backbones.mhformer import CHIBlock, SHRBlock
from bench.core.case import Case
from bench.core.errors import UsageError

CENTRE_27 = 13  # (27 - 1) // 2, the official --pad

# frames -> official parameter count; <= 27 frames the official embedding adds BatchNorm.
OFFICIAL_PARAMS = {27: 19_184_517, 81: 19_837_545, 351: 31_516_125}
# (variant, frames) -> official GFLOPs (2 x thop MACs, batch 1): MHFormer and HoT's TPC MHFormer.
OFFICIAL_GFLOPS = {"rectangle": 14.191710624, "single": 8.243243424}


def tiny(variant: str = "rectangle", frames: int = 27, **kw) -> torch.nn.Module:
    return backbones.create("mhformer", variant, frames=frames, size="tiny", **kw)


def record_stages(model: torch.nn.Module) -> list[torch.Tensor]:
    """Wrap model.tokens.prune to collect the absolute frame positions kept after every stage."""
    kept: list[torch.Tensor] = []
    prune = model.tokens.prune

    def spy(block, x, pos, received=None):
        x, new_pos = prune(block, x, pos, received)
        if new_pos.shape[1] != pos.shape[1]:
            kept.append(new_pos)
        return x, new_pos

    model.tokens.prune = spy
    return kept


@pytest.mark.parametrize("frames", sorted(OFFICIAL_PARAMS))
def test_parameter_count_equals_the_official_release(frames):
    for variant in backbones.VARIANTS:
        model = backbones.create("mhformer", variant, frames=frames)
        assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[frames], variant


@pytest.mark.parametrize("variant", sorted(OFFICIAL_GFLOPS))
def test_thop_gflops_match_the_official_code_at_351_frames(variant):
    model = backbones.create("mhformer", variant).eval()
    macs, _ = profile(model, inputs=(torch.rand(1, 351, 17, 2),), verbose=False)
    assert 2 * macs / 1e9 == pytest.approx(OFFICIAL_GFLOPS[variant], rel=0.015)


def test_canonical_layout_and_default_schedules():
    assert backbones.create("mhformer").token_profile == [351, 351, 351]
    single = backbones.create("mhformer", "single")
    assert single.token_profile == [351, 117, 117]  # HoT: 117 of 351 from SHR block 1 on
    assert (single.tokens.pruner, single.tokens.recoverer) == ("tpc", None)
    assert single.tokens.schedule_text == "1:117"
    hierarchical = backbones.create("mhformer", "hierarchical")
    assert hierarchical.token_profile == [351, 117, 39]
    assert [type(b) for b in hierarchical.blocks] == [SHRBlock, SHRBlock, CHIBlock]


@pytest.mark.parametrize("pruner", backbones.pruners())
@pytest.mark.parametrize("variant", ["single", "hierarchical"])
def test_every_pruner_returns_the_centre_frame_and_keeps_it_through_every_stage(variant, pruner):
    torch.manual_seed(0)
    model = tiny(variant, pruner=pruner).eval()
    kept = record_stages(model)
    with torch.no_grad():
        y = model(torch.randn(3, 27, 17, 2))
    assert y.shape == (3, 1, 17, 3)
    assert len(kept) == len(model.tokens.stages)
    for pos, (_, keep) in zip(kept, model.tokens.stages):
        assert pos.shape == (3, keep)
        assert (pos == CENTRE_27).any(dim=1).all()
        assert (pos.diff(dim=1) > 0).all()  # sorted by time, no duplicates


def test_centre_is_forced_in_when_uniform_sampling_would_skip_it():
    # round(linspace(0, 26, 8)) = 0, 4, 7, 11, 15, 19, 22, 26: no 13 unless the pruner adds it.
    model = tiny("single", schedule=((1, 8),), pruner="tps").eval()
    kept = record_stages(model)
    with torch.no_grad():
        model(torch.randn(2, 27, 17, 2))
    assert (kept[0] == CENTRE_27).any(dim=1).all()


def test_output_is_the_centre_frame_of_the_rectangle():
    # Every frame token is regressed; the answer must be the centre's, not e.g. the first one's.
    torch.manual_seed(0)
    model = tiny().eval()
    x = torch.randn(2, 27, 17, 2)
    frames = {}
    model.head.register_forward_hook(lambda m, i, out: frames.setdefault("all", out))
    with torch.no_grad():
        y = model(x)
    every = frames["all"].reshape(2, 17, 3, 27).permute(0, 3, 1, 2)  # (B, T, J, 3)
    torch.testing.assert_close(y[:, 0], every[:, CENTRE_27])
    assert not torch.allclose(y[:, 0], every[:, 0])


@pytest.mark.parametrize("variant, tracked", [("single", [0]), ("hierarchical", [0, 1])])
def test_tpa_reads_the_shr_attention_of_the_block_before_each_stage(variant, tracked):
    model = tiny(variant, pruner="tpa").eval()
    for i, blk in enumerate(model.blocks):
        attns = blk.attns if isinstance(blk, SHRBlock) else []
        assert all(a.track_received == (i in tracked) for a in attns)
    with torch.no_grad():
        model(torch.randn(2, 27, 17, 2))
    received = model.blocks[0].received
    assert received is not None and received.shape == (2, 27)
    assert torch.allclose(received.sum(dim=1), torch.full((2,), 27.0))  # every query spends weight 1


def test_tpa_cannot_prune_before_the_first_block():
    with pytest.raises(ValueError, match="tpa"):
        tiny("hierarchical", schedule=((0, 9), (1, 3)), pruner="tpa")


@pytest.mark.parametrize("frames", [27, 81])
def test_short_clips_use_the_official_batchnorm_embedding(frames):
    model = tiny(frames=frames)
    has_bn = any(isinstance(m, torch.nn.BatchNorm1d) for m in model.embeds.modules())
    assert has_bn == (frames <= 27)


@pytest.mark.parametrize("frames", [26, 100, 350])
def test_frames_that_are_not_a_multiple_of_nine_are_rejected(frames):
    with pytest.raises(ValueError, match=rf"mhformer cannot take {frames} frames: .*multiple of 9"):
        backbones.create("mhformer", frames=frames, size="tiny")
    with pytest.raises(UsageError, match="multiple of 9"):
        Case("mhformer", frames=frames).resolve()


def test_even_multiples_of_nine_predict_the_left_middle_frame():
    model = tiny("single", frames=18, pruner="tps")
    kept = record_stages(model)
    assert model.tokens.centre == 8  # (T - 1) // 2, the official --pad
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 18, 17, 2)).shape == (1, 1, 17, 3)
    assert (kept[0] == 8).any()


@pytest.mark.parametrize("variant, overrides", [
    ("single", {}),
    ("hierarchical", {}),
    ("single", {"embed_kept": True}),
    ("hierarchical", {"pruner": "tpa", "embed_kept": True}),
])
def test_a_rectangle_checkpoint_loads_into_the_pruned_variants(variant, overrides):
    state = tiny().state_dict()
    pruned = tiny(variant, **overrides)
    result = pruned.load_state_dict(state, strict=False)
    assert result.unexpected_keys == []
    assert all(k.startswith("tokens.") for k in result.missing_keys)
    expected = {f"tokens.embeds.{b}" for b, _ in pruned.tokens.stages} if overrides.get("embed_kept") else set()
    assert set(result.missing_keys) == expected


def test_a_training_step_at_batch_one_reaches_every_parameter():
    # BatchNorm in the embedding (T <= 27) and the head sees every frame, so batch 1 trains.
    model = tiny("single").train()
    model(torch.randn(1, 27, 17, 2)).square().mean().backward()
    untouched = [n for n, p in model.named_parameters() if p.grad is None]
    assert untouched == []
