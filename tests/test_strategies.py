"""The pruner and recoverer registries, per-stage pruners and token merging (tome)."""

import pytest
import torch
import torch.nn as nn

import backbones
from backbones.strategies import Merged, PruneInput, bipartite_merge, tome
from backbones.tokens import TokenHourglass, format_schedule, parse_schedule, stage_pruners
from bench.core.case import Case
from bench.core.errors import UsageError


@pytest.fixture
def registered():
    """Names registered by a test, unregistered afterwards."""
    names: list[tuple[str, str]] = []
    yield names
    for kind, name in names:
        (backbones.unregister_pruner if kind == "pruner" else backbones.unregister_recoverer)(name)


def _input(x, keep, pos=None, size=None, centre=None):
    b, t = x.shape[:2]
    pos = torch.arange(t).expand(b, t) if pos is None else pos
    return PruneInput(x, pos, keep, torch.ones(b, t) if size is None else size, centre=centre)


# --------------------------------------------------------------------------- registries


def test_builtins_are_ordinary_registered_entries():
    assert backbones.pruners()[:5] == ["tps", "tpc", "tpa", "tpmo", "tome"]
    assert backbones.recoverers()[:2] == ["tri", "tra"]
    assert backbones.pruner_spec("tpa").attention and not backbones.pruner_spec("tpc").attention
    assert all(backbones.pruner_spec(n).doc for n in backbones.pruners())
    with pytest.raises(ValueError, match="unknown pruner 'nope'; choose from tps, tpc"):
        backbones.pruner_spec("nope")
    with pytest.raises(ValueError, match="unknown recoverer 'nope'; choose from tri, tra"):
        backbones.recoverer_spec("nope")


def test_registering_twice_or_a_bad_name_is_an_error(registered):
    with pytest.raises(ValueError, match="already registered"):
        backbones.register_pruner("tpc")(lambda t: t.x)
    with pytest.raises(ValueError, match="identifier"):
        backbones.register_recoverer("my-rec")(lambda **kw: nn.Identity())


def test_a_registered_pruner_works_by_name_in_models_schedules_and_cases(registered):
    @backbones.register_pruner("last_frames")
    def last_frames(t: PruneInput) -> torch.Tensor:
        """Keep the latest frames (indices)."""
        b, n = t.pos.shape
        return torch.arange(n - t.keep, n).expand(b, -1)

    registered.append(("pruner", "last_frames"))
    assert "last_frames" in backbones.pruners()
    hg = TokenHourglass(frames=27, depth=3, dim=4, schedule=[(1, 9, "last_frames")], recoverer="tri")
    x = torch.randn(2, 27, 4)
    pos = hg.positions(x)
    x, pos = hg.prune(1, x, pos)
    assert pos[0].tolist() == list(range(18, 27))
    case = Case("mixste", "single", frames=27, size="tiny", schedule="2:9:last_frames").resolve()
    assert (case.pruner, case.schedule) == ("last_frames", "2:9")
    model = case.build()
    assert model.tokens.stage_pruner == {2: "last_frames"}


def test_a_pruner_returning_the_wrong_shape_is_named(registered):
    backbones.register_pruner("broken")(lambda t: t.x.mean(dim=-1)[:, :3])
    registered.append(("pruner", "broken"))
    hg = TokenHourglass(frames=9, depth=2, dim=4, schedule=[(1, 3)], pruner="broken", recoverer="tri")
    x = torch.randn(2, 9, 4)
    with pytest.raises(RuntimeError, match=r"pruner 'broken' at block 1 returned .*\(2, 3\).*expected float scores"):
        hg.prune(1, x, hg.positions(x))


def test_a_registered_recoverer_gets_the_models_sizes_and_stores_its_parameters_under_its_name(registered):
    seen = {}

    @backbones.register_recoverer("learned")
    def learned(*, frames, dim, heads, qkv_bias):
        seen.update(frames=frames, dim=dim, heads=heads)
        return nn.Linear(1, 1)  # a stand-in with parameters; forward is not called here

    registered.append(("recoverer", "learned"))
    model = backbones.create("mixste", "single", frames=27, size="tiny", recoverer="learned")
    assert seen == {"frames": 27, "dim": 32, "heads": 4}
    assert {"tokens.learned.weight", "tokens.learned.bias"} <= set(model.state_dict())


# --------------------------------------------------------------------------- per-stage pruners


def test_schedules_name_a_pruner_per_stage():
    stages = parse_schedule("2:81:tpc, 5:0.1:tps")
    assert stages == ((2, 81, "tpc"), (5, 0.1, "tps"))
    assert format_schedule(stages) == "2:81:tpc,5:0.1:tps"
    for bad in ("2:81:", "2:81:t-c", "2:81:tpc:x"):
        with pytest.raises(ValueError, match="BLOCK:KEEP|PRUNER"):
            parse_schedule(bad)
    # One spelling per experiment: stages using the main pruner drop its name.
    assert stage_pruners([(2, 9, "tpc"), (5, 3, "tome")], "tps") == ("tpc", [(2, 9), (5, 3, "tome")])
    assert stage_pruners([(2, 9), (5, 3, "tome")], "tpmo") == ("tpmo", [(2, 9), (5, 3, "tome")])
    assert stage_pruners([(2, 9, "tps"), (5, 3, "tps")], None) == ("tps", [(2, 9), (5, 3)])


def test_tpc_then_tome_gives_the_hourglass_on_tiny_mixste_and_names_both_in_the_case():
    case = Case("mixste", "hierarchical", frames=27, size="tiny", schedule="2:9:tpc,5:3:tome").resolve()
    assert (case.schedule, case.pruner, case.recoverer) == ("2:9,5:3:tome", "tpc", "tri")
    assert "/2:9,5:3:tome/tpc+tri/" in case.case_id
    assert case.fields()["schedule"] == "2:9,5:3:tome"
    torch.manual_seed(0)
    model = case.build().eval()
    assert model.token_profile == [27, 27, 9, 9, 9, 3, 3, 3]
    seen = []
    prune = model.tokens.prune

    def spy(i, x, pos, received=None):
        x, pos = prune(i, x, pos, received)
        seen.append(x.shape[1])
        return x, pos

    model.tokens.prune = spy
    with torch.no_grad():
        y = model(torch.randn(2, 27, 17, 2))
    assert seen == [27, 27, 9, 9, 9, 3, 3, 3] and y.shape == (2, 27, 17, 3)
    # tpc dropped 18 tokens; tome merged the 9 left into 3 that stand for all 9
    assert model.tokens._size.sum(dim=1).tolist() == [9.0, 9.0]


def test_unknown_stage_pruners_are_usage_errors():
    with pytest.raises(UsageError, match="unknown pruner 'tpx'; choose from tps, tpc, tpa, tpmo, tome"):
        Case("mixste", "hierarchical", frames=27, size="tiny", schedule="2:9:tpc,5:3:tpx").resolve()
    with pytest.raises(ValueError, match="'tpa' needs a block before"):
        backbones.create("mixste", "single", frames=27, size="tiny", schedule=((0, 9, "tpa"),))


# --------------------------------------------------------------------------- tome


def test_bipartite_merge_averages_the_most_similar_pair_by_size_at_the_destinations_frame():
    # Frames 0..3; frame 2 (set A) is nearly frame 3 (set B), frames 0 and 1 are dissimilar.
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 1.1]]])
    size = torch.tensor([[1.0, 1.0, 3.0, 1.0]])
    out, pos, new_size = bipartite_merge(x, torch.arange(4)[None], size, r=1)
    assert pos.tolist() == [[0, 1, 3]]  # frame 2 merged into frame 3, which keeps its frame
    assert new_size.tolist() == [[1.0, 1.0, 4.0]]
    torch.testing.assert_close(out[0, 2], (3 * x[0, 2] + x[0, 3]) / 4)  # size-weighted
    torch.testing.assert_close(out[0, :2], x[0, :2])


def test_tome_reaches_any_keep_and_conserves_frames_and_mass():
    torch.manual_seed(0)
    x = torch.randn(3, 27, 17, 8)
    size = torch.rand(3, 27) + 0.5
    merged = tome(_input(x, keep=3, size=size))  # more than one round: a round at most halves
    assert isinstance(merged, Merged)
    assert merged.x.shape == (3, 3, 17, 8) and merged.pos.shape == (3, 3)
    assert (merged.pos.diff(dim=1) > 0).all()  # sorted, distinct frames
    torch.testing.assert_close(merged.size.sum(dim=1), size.sum(dim=1))
    mass = (x * size[:, :, None, None]).sum(dim=1)
    torch.testing.assert_close((merged.x * merged.size[:, :, None, None]).sum(dim=1), mass, rtol=1e-4, atol=1e-4)


def test_tome_never_merges_the_centre_frame_away():
    torch.manual_seed(0)
    for centre in range(9):  # centre at an even (set A) and an odd (set B) position
        x = torch.randn(2, 9, 4)
        x[:, centre] = x[:, (centre + 1) % 9]  # its twin: the first pair a matcher would merge
        merged = tome(_input(x, keep=2, centre=centre))
        assert (merged.pos == centre).any(dim=1).all(), centre


def test_tome_then_tri_recovers_every_frame_and_trains():
    torch.manual_seed(0)
    model = backbones.create("motionbert", "hierarchical", frames=27, size="tiny", pruner="tome").train()
    model(torch.randn(2, 27, 17, 3)).square().mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []  # merging is differentiable
