"""The shared token pruning/recovering module: schedules, the four pruners, the two recoverers."""

import re

import pytest
import torch

import backbones
from backbones.strategies import (
    gather_tokens,
    interpolate_tokens,
    select_tpa,
    select_tpc,
    select_tpmo,
    select_tps,
)
from backbones.tokens import (
    TokenHourglass,
    ensure_centre,
    format_schedule,
    parse_schedule,
    resolve_schedule,
    token_profile,
)

# --------------------------------------------------------------------------- schedules


def test_resolve_turns_ratios_into_counts_of_T():
    assert resolve_schedule([(3, 1 / 3)], frames=243, depth=8) == [(3, 81)]
    assert resolve_schedule([(2, 1 / 3), (5, 1 / 9)], frames=243, depth=8) == [(2, 81), (5, 27)]
    assert resolve_schedule([(2, 1 / 3), (5, 1 / 9)], frames=729, depth=8) == [(2, 243), (5, 81)]
    assert resolve_schedule([(1, 81)], frames=243, depth=5) == [(1, 81)]


@pytest.mark.parametrize(
    "schedule, message",
    [
        ([(3, 81), (3, 27)], "strictly increasing"),
        ([(5, 81), (3, 27)], "strictly increasing"),
        ([(8, 81)], "outside the depth 8"),
        ([(-1, 81)], "outside the depth"),
        ([(3, 243)], "must be below the 243 tokens"),
        ([(2, 81), (4, 81)], "must be below the 81 tokens"),
        ([(3, 0)], "keep must be >= 1"),
        ([(3, 1.5)], "is a ratio of T and must lie in (0, 1)"),
        ([(3, 1.0)], "keep 1 at block 3 has a decimal point"),  # 1.0 is a ratio too, not one token
    ],
)
def test_bad_schedules_name_the_problem(schedule, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        resolve_schedule(schedule, frames=243, depth=8)


def test_parse_and_format_round_trip():
    stages = parse_schedule("3:81, 5:0.1")
    assert stages == ((3, 81), (5, 0.1))
    assert format_schedule(stages) == "3:81,5:0.1"
    assert parse_schedule("") == ()
    for bad in ("3", "a:81", "3:x", "-1:9"):
        with pytest.raises(ValueError, match="BLOCK"):
            parse_schedule(bad)


def test_token_profile_follows_the_schedule():
    assert token_profile([(3, 81)], 243, 8) == [243, 243, 243, 81, 81, 81, 81, 81]
    assert token_profile([(2, 81), (5, 27)], 243, 8) == [243, 243, 81, 81, 81, 27, 27, 27]
    assert token_profile([], 27, 3) == [27, 27, 27]


# --------------------------------------------------------------------------- pruners


def test_tps_is_uniform_and_deterministic():
    idx = select_tps(batch=2, tokens=243, keep=81)
    assert idx.shape == (2, 81)
    assert torch.equal(idx[0], idx[1])
    assert idx[0, 0] == 0 and idx[0, -1] == 242
    assert idx[0].tolist() == [round(i * 242 / 80) for i in range(81)]  # round(linspace(0, T-1, keep))
    assert set(idx[0].diff().tolist()) == {3, 4}  # 242 / 80 = 3.025: evenly spread
    assert torch.equal(idx, select_tps(batch=2, tokens=243, keep=81))
    assert select_tps(batch=2, tokens=3, keep=1).tolist() == [[0], [0]]  # as linspace(0, 2, 1)


def test_tpc_picks_one_token_per_cluster():
    # Four tight clusters of frames far apart in feature space: one representative each.
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]]) * 5
    labels = torch.tensor([0] * 5 + [1] * 7 + [2] * 4 + [3] * 8)
    feat = centres[labels] + 0.05 * torch.randn(len(labels), 2)
    x = feat.expand(3, -1, -1).unsqueeze(2).expand(3, len(labels), 17, 2)  # (B, T, J, C)
    idx = select_tpc(x, keep=4)
    for b in range(3):
        assert sorted(labels[idx[b]].tolist()) == [0, 1, 2, 3]
        assert idx[b].tolist() == sorted(idx[b].tolist())


def test_tpc_tells_apart_densities_below_float32_resolution():
    """Why TPC's distances are float64 (docs/breakdown.md, What TPC costs): two pairs of near-duplicate frames
    have densities 1 - 5e-9 and 1 - 2e-8, equal in float32; float64 ranks them, and the position tie-break
    decides within a pair (the later frame). The same code in float32 keeps frame 0 instead of frame 5."""
    x = torch.tensor([[[0.0], [1e-4], [10.0], [10.0 + 2e-4], [5.0], [5.3]]])  # (B, T, C)
    assert select_tpc(x, keep=2).tolist() == [[1, 3]]
    assert select_tpc(x, keep=3).tolist() == [[1, 3, 5]]
    assert select_tpc(x.repeat(2, 1, 1), keep=3).tolist() == [[1, 3, 5]] * 2  # deterministic, row by row


def test_tpa_keeps_the_most_attended_tokens_in_time_order():
    received = torch.tensor([[0.1, 5.0, 0.2, 3.0, 0.3, 4.0]])
    assert select_tpa(received, keep=3).tolist() == [[1, 3, 5]]


def test_tpmo_keeps_the_frames_that_move():
    feat = torch.zeros(1, 12, 4)
    feat[0, 4:] += 1.0  # a jump between frames 3 and 4
    feat[0, 9:] += 3.0  # a bigger jump between 8 and 9
    idx = select_tpmo(feat, keep=4)
    assert idx.tolist() == [[3, 4, 8, 9]]


@pytest.mark.parametrize("pruner", backbones.pruners())
def test_seq2frame_keeps_the_centre_frame_through_every_stage(pruner):
    torch.manual_seed(1)
    frames = 27
    hg = TokenHourglass(
        frames=frames, depth=4, dim=8, schedule=[(1, 9), (3, 3)], pruner=pruner, pipeline="seq2frame"
    )
    x = torch.randn(2, frames, 8)
    x[:, hg.centre] = 0.0  # a dull centre frame that no scoring rule would choose by itself
    pos = hg.positions(x)
    for block in range(4):
        received = torch.rand(2, x.shape[1]) if backbones.pruner_spec(pruner).attention else None
        if received is not None:
            received[:, (pos == hg.centre)[0]] = 0.0
        x, pos = hg.prune(block, x, pos, received)
        assert (pos == hg.centre).any(dim=1).all(), f"centre lost at block {block}"
    assert pos.shape == (2, 3)
    assert torch.equal(hg.centre_token(x, pos), gather_tokens(x, (pos == hg.centre).long().argmax(1, keepdim=True)))


def test_positions_compose_across_stages():
    hg = TokenHourglass(frames=27, depth=4, dim=4, schedule=[(1, 9), (2, 3)], pruner="tps", recoverer="tri")
    x = torch.arange(27.0).reshape(1, 27, 1).expand(1, 27, 4)
    pos = hg.positions(x)
    for block in range(4):
        x, pos = hg.prune(block, x, pos)
    # Kept tokens still carry their original frame index, both as position and as content.
    assert torch.equal(pos[0], x[0, :, 0].long())
    assert pos[0].tolist() == [0, 13, 26]


# --------------------------------------------------------------------------- recoverers


def test_tri_reproduces_a_linear_signal_exactly():
    frames = 243
    t = torch.arange(frames, dtype=torch.float32)
    signal = (2.5 * t - 7.0)[None, :, None, None].expand(2, frames, 17, 3)  # (B, T, J, C) linear in time
    pos = torch.tensor([[0, 10, 11, 50, 120, 200, 242], [0, 3, 90, 91, 92, 180, 242]])
    kept = gather_tokens(signal, pos)
    recovered = interpolate_tokens(kept, pos, frames)
    assert recovered.shape == signal.shape
    torch.testing.assert_close(recovered, signal)


def test_tri_holds_edge_values_outside_the_kept_range():
    kept = torch.tensor([[[1.0], [3.0]]])  # (B, K, C) at frames 2 and 4
    out = interpolate_tokens(kept, torch.tensor([[2, 4]]), frames=7)
    assert out[0, :, 0].tolist() == [1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 3.0]


def _interpolate_with_searchsorted(x, pos, frames):
    """The recoverer as it was before it had to export to ONNX (which has no searchsorted)."""
    b, k = pos.shape
    t = torch.arange(frames, dtype=torch.float32).expand(b, frames).contiguous()
    p = pos.to(torch.float32).contiguous()
    right = torch.searchsorted(p, t).clamp(1, k - 1)
    left = right - 1
    p_left, p_right = torch.gather(p, 1, left), torch.gather(p, 1, right)
    w = ((t - p_left) / (p_right - p_left).clamp_min(1e-6)).clamp(0.0, 1.0)
    w = w.to(x.dtype).reshape(b, frames, *([1] * (x.dim() - 2)))
    return gather_tokens(x, left) * (1 - w) + gather_tokens(x, right) * w


def test_tri_is_bitwise_the_searchsorted_interpolation():
    gen = torch.Generator().manual_seed(0)
    for frames, keep in ((27, 9), (243, 81), (243, 2), (10, 9)):
        pos = torch.stack([torch.randperm(frames, generator=gen)[:keep].sort().values for _ in range(3)])
        x = torch.randn(3, keep, 17, 8, generator=gen)
        assert torch.equal(interpolate_tokens(x, pos, frames), _interpolate_with_searchsorted(x, pos, frames))


def test_ensure_centre_leaves_selections_that_hold_it_untouched():
    pos = torch.arange(9).expand(2, 9)
    idx = torch.tensor([[0, 4, 8], [1, 4, 6]])
    assert torch.equal(ensure_centre(idx, pos, 4, None), idx)
    # one sample lacks the centre: only that one changes (its closest token in time makes room)
    idx = torch.tensor([[0, 4, 8], [1, 3, 6]])
    assert ensure_centre(idx, pos, 4, None).tolist() == [[0, 4, 8], [1, 4, 6]]


def test_tra_maps_kept_tokens_back_to_all_frames():
    hg = TokenHourglass(frames=27, depth=2, dim=16, schedule=[(1, 9)], pruner="tps", recoverer="tra", heads=4)
    x = torch.randn(2, 9, 17, 16)
    out = hg.recover(x, torch.arange(9).expand(2, 9))
    assert out.shape == (2, 27, 17, 16)
    names = {n for n, _ in hg.named_parameters()}
    assert "tra.query" in names and any(n.startswith("tra.attn.linear_q") for n in names)


def test_rectangle_hourglass_is_the_identity():
    hg = TokenHourglass(frames=27, depth=4, dim=8)
    x = torch.randn(2, 27, 17, 8)
    pos = hg.positions(x)
    for block in range(4):
        y, p = hg.prune(block, x, pos)
        assert y is x and p is pos
    assert hg.recover(x, pos) is x
    assert hg.profile == [27] * 4 and list(hg.parameters()) == []


def test_unknown_pruner_or_recoverer_is_rejected():
    with pytest.raises(ValueError, match="unknown pruner 'foo'"):
        TokenHourglass(frames=27, depth=4, dim=8, schedule=[(1, 9)], pruner="foo", recoverer="tri")
    with pytest.raises(ValueError, match="unknown recoverer 'bar'"):
        TokenHourglass(frames=27, depth=4, dim=8, schedule=[(1, 9)], pruner="tps", recoverer="bar")
    with pytest.raises(ValueError, match="tpa"):
        TokenHourglass(frames=27, depth=4, dim=8, schedule=[(0, 9)], pruner="tpa", recoverer="tri")
