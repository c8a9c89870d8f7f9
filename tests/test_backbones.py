"""Generic backbone tests: parametrised over the registry, so a newly registered backbone is tested for free."""

import pathlib

import pytest
import torch
import torch.nn as nn

import backbones
from backbones.registry import VariantSpec

FRAMES = 27  # short enough for every backbone's tiny size, odd and divisible by 9 (MHFormer)
NAMES = backbones.names()


def tiny(name: str, variant: str = "rectangle", **kw) -> nn.Module:
    return backbones.create(name, variant=variant, frames=FRAMES, size="tiny", **kw)


def inputs(name: str, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, FRAMES, 17, backbones.spec(name).in_channels)


def out_frames(name: str) -> int:
    return FRAMES if backbones.spec(name).pipeline == "seq2seq" else 1


@pytest.mark.parametrize("variant", backbones.VARIANTS)
@pytest.mark.parametrize("name", NAMES)
def test_every_variant_maps_2d_sequences_to_3d(name, variant):
    torch.manual_seed(0)
    model = tiny(name, variant).eval()
    with torch.no_grad():
        y = model(inputs(name))
    assert y.shape == (2, out_frames(name), 17, 3)
    assert torch.isfinite(y).all()
    assert model.pipeline == backbones.spec(name).pipeline
    assert (model.backbone, model.variant, model.size) == (name, variant, "tiny")


@pytest.mark.parametrize("variant", backbones.VARIANTS)
@pytest.mark.parametrize("name", NAMES)
def test_token_profile_has_one_entry_per_block_and_the_variant_shape(name, variant):
    model = tiny(name, variant)
    profile = model.token_profile
    assert len(profile) == len(model.blocks)
    assert profile[0] <= FRAMES and all(a >= b for a, b in zip(profile, profile[1:]))
    drops = len(set(profile)) - 1 + (profile[0] < FRAMES)
    assert drops == {"rectangle": 0, "single": 1, "hierarchical": len(model.tokens.stages)}[variant]
    if variant == "hierarchical":
        assert drops >= 2


@pytest.mark.parametrize("name", NAMES)
def test_every_pruner_and_recoverer_runs(name):
    spec = backbones.spec(name)
    recoverers = backbones.recoverers() if spec.pipeline == "seq2seq" else (None,)
    x = inputs(name)
    for pruner in backbones.pruners():
        for recoverer in recoverers:
            torch.manual_seed(0)
            model = tiny(name, "single", pruner=pruner, recoverer=recoverer).eval()
            with torch.no_grad():
                y = model(x)
            assert y.shape == (2, out_frames(name), 17, 3), (pruner, recoverer)
            assert torch.isfinite(y).all(), (pruner, recoverer)


@pytest.mark.parametrize("name", NAMES)
def test_training_step_reaches_every_parameter_of_a_pruned_variant(name):
    torch.manual_seed(0)
    model = tiny(name, "single").train()
    model(inputs(name)).square().mean().backward()
    # tpc selects without gradient, but everything that computes the output must learn.
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, no_grad


@pytest.mark.parametrize("variant", ["single", "hierarchical"])
@pytest.mark.parametrize("name", NAMES)
def test_rectangle_checkpoint_loads_into_pruned_variants(name, variant):
    state = tiny(name, "rectangle").state_dict()
    pruned = tiny(name, variant)
    result = pruned.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    # Only the token module's own parameters (HoT's kept-token embedding, the recoverer) are new.
    assert all(k.startswith("tokens.") for k in result.missing_keys), result.missing_keys
    if variant == "single" and backbones.spec(name).pipeline == "seq2seq":
        assert any(k.startswith("tokens.tra.") for k in result.missing_keys)


@pytest.mark.parametrize("name", NAMES)
def test_default_schedules_resolve_at_the_canonical_length(name):
    spec = backbones.spec(name)
    for variant in ("single", "hierarchical"):
        v = spec.variants[variant]
        stages = backbones.resolve_schedule(v.schedule, spec.frames, depth=10**6)
        assert len(stages) == (1 if variant == "single" else len(v.schedule)) and stages
    assert spec.variants["single"].pruner == "tpc"
    assert spec.variants["hierarchical"].pruner == "tps"
    if spec.pipeline == "seq2seq":
        assert spec.variants["single"].recoverer == "tra"
        assert spec.variants["hierarchical"].recoverer == "tri"


def test_mixste_single_is_hots_configuration():
    model = backbones.create("mixste", variant="single")
    assert model.token_profile == [243, 243, 243, 81, 81, 81, 81, 81]
    assert model.tokens.schedule_text == "3:81"
    assert (model.tokens.pruner, model.tokens.recoverer) == ("tpc", "tra")
    assert backbones.create("mixste", variant="hierarchical").token_profile == [243, 243, 81, 81, 81, 27, 27, 27]


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_mixste_parameter_counts_equal_the_official_release():
    # Official MixSTE (T=243, 8 blocks, dim 512) and HoT's hot_mixste.py (keep 81 at block 3),
    # counted by summing parameter numels of the official models built in a scratch folder.
    assert _params(backbones.create("mixste", variant="rectangle")) == 33_783_811
    assert _params(backbones.create("mixste", variant="single")) == 35_000_323
    # tps + tri add no parameters.
    assert _params(backbones.create("mixste", variant="hierarchical")) == 33_783_811


# --------------------------------------------------------------------------- registry


@pytest.mark.parametrize(
    ("name", "embedding", "released_std"),
    [("mixste", "spatial_pos", 0.02), ("motionbert", "pos_embed", 0.02), ("motionagformer", "pos_embed", 0.0)],
)
def test_tiny_joint_embeddings_start_at_unit_spread_and_canonical_ones_as_released(name, embedding, released_std):
    # The tiny sizes train for minutes, so their joints must be told apart from the first step;
    # the canonical sizes keep the released initialisation.
    tiny = dict(backbones.create(name, frames=9, size="tiny").named_parameters())[embedding].detach()
    assert 0.7 < float(tiny.std()) < 1.1
    canonical = dict(backbones.create(name, frames=9).named_parameters())[embedding].detach()
    assert float(canonical.std()) == pytest.approx(released_std, abs=0.004)


def test_unknown_names_are_rejected_with_the_choices():
    with pytest.raises(ValueError, match="unknown backbone 'nope'; choose from .*mixste"):
        backbones.create("nope")
    with pytest.raises(ValueError, match="unknown variant 'square'"):
        backbones.create("mixste", variant="square", size="tiny")
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        backbones.create("mixste", size="huge")


def test_variant_names_the_shape_of_the_schedule():
    with pytest.raises(ValueError, match="takes no schedule"):
        backbones.create("mixste", "rectangle", frames=FRAMES, size="tiny", schedule=[(1, 9)])
    with pytest.raises(ValueError, match="takes one stage"):
        backbones.create("mixste", "single", frames=FRAMES, size="tiny", schedule=[(1, 9), (2, 3)])
    with pytest.raises(ValueError, match="must be strictly increasing"):
        backbones.create("mixste", "hierarchical", frames=FRAMES, size="tiny", schedule=[(2, 9), (2, 3)])


def test_users_register_their_own_backbone_and_it_is_created_like_the_others():
    @backbones.register(
        "user-mlp",
        pipeline="seq2seq",
        in_channels=2,
        frames=9,
        single=VariantSpec(schedule=((1, 1 / 3),), pruner="tps", recoverer="tri"),
        hierarchical=VariantSpec(schedule=((1, 2 / 3), (2, 1 / 3)), pruner="tps", recoverer="tri"),
        sizes={"tiny": {}},
        default_size="tiny",
    )
    def user_mlp(frames, schedule, pruner, recoverer, embed_kept):
        return _UserMLP(frames, schedule, pruner, recoverer)

    try:
        assert "user-mlp" in backbones.names()
        model = backbones.create("user-mlp", variant="hierarchical")
        assert model.token_profile == [9, 6, 3]
        assert model(torch.randn(2, 9, 17, 2)).shape == (2, 9, 17, 3)
        with pytest.raises(ValueError, match="already registered"):
            backbones.register(
                "user-mlp", pipeline="seq2seq", in_channels=2, frames=9, single=VariantSpec(),
                hierarchical=VariantSpec(), sizes={"tiny": {}}, default_size="tiny",
            )(user_mlp)
    finally:
        backbones.unregister("user-mlp")
    assert "user-mlp" not in backbones.names()


class _UserMLP(nn.Module):
    pipeline = "seq2seq"

    def __init__(self, frames, schedule, pruner, recoverer):
        super().__init__()
        self.frames, self.in_channels = frames, 2
        self.embed = nn.Linear(2, 8)
        self.blocks = nn.ModuleList(nn.Linear(8, 8) for _ in range(3))
        self.tokens = backbones.tokens.TokenHourglass(
            frames=frames, depth=3, dim=8, schedule=schedule, pruner=pruner, recoverer=recoverer
        )
        self.head = nn.Linear(8, 3)

    @property
    def token_profile(self):
        return self.tokens.profile

    def forward(self, x):
        x = self.embed(x)
        pos = self.tokens.positions(x)
        for i, blk in enumerate(self.blocks):
            x, pos = self.tokens.prune(i, x, pos)
            x = blk(x)
        return self.head(self.tokens.recover(x, pos))


def test_backbones_never_import_the_harness():
    root = pathlib.Path(backbones.__file__).parent
    offenders = [
        p.name for p in root.glob("*.py")
        if "import bench" in p.read_text() or "from bench" in p.read_text()
    ]
    assert offenders == []


def test_the_registration_gives_the_model_what_it_does_not_define():
    class Bare(nn.Module):  # no pipeline, frames, in_channels or token_profile of its own
        def __init__(self, frames, schedule, pruner, recoverer):
            super().__init__()
            self.tokens = backbones.tokens.TokenHourglass(
                frames=frames, depth=3, dim=8, schedule=schedule, pruner=pruner, recoverer=recoverer
            )

    @backbones.register(
        "user-bare", pipeline="seq2seq", in_channels=3, frames=9,
        single=VariantSpec(schedule=((1, 3),), pruner="tome", recoverer="tri"), hierarchical=VariantSpec(),
        sizes={"tiny": {}}, default_size="tiny",
    )  # fmt: skip
    def user_bare(frames, schedule, pruner, recoverer, embed_kept):
        return Bare(frames, schedule, pruner, recoverer)

    try:
        model = backbones.create("user-bare", "single", frames=27)
    finally:
        backbones.unregister("user-bare")
    assert (model.pipeline, model.frames, model.in_channels) == ("seq2seq", 27, 3)
    assert model.token_profile == [27, 3, 3]
