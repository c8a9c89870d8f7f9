"""Presets: every registered backbone x variant, user backbones included, schedules scaled with T."""

from __future__ import annotations

import pytest
import torch.nn as nn

import backbones
from backbones.registry import VariantSpec, register
from backbones.tokens import parse_schedule
from bench.core.case import Case
from bench.core.errors import UsageError
from bench.run import presets
from bench.scenarios import measure_case


@pytest.fixture
def short_only():
    """A user backbone that cannot take more than 300 frames."""
    name = "presettest_short"

    @register(name, pipeline="seq2seq", in_channels=2, frames=81,
              single=VariantSpec(((1, 1 / 3),), "tps", "tri"),
              hierarchical=VariantSpec(((1, 1 / 3), (2, 1 / 9)), "tps", "tri"),
              sizes={"base": {}, "tiny": {}}, default_size="base",
              valid_frames=lambda t: None if t <= 300 else "its position table has 300 entries")  # fmt: skip
    def build(frames: int = 81, **kw) -> nn.Module:
        raise AssertionError("the preset tests never build this backbone")

    yield name
    backbones.unregister(name)


@pytest.mark.parametrize("name", ["smoke", "paper"])
def test_presets_cover_every_backbone_and_variant(name, short_only):
    cases = presets.build_matrix(presets.get_preset(name))
    pairs = [(c.backbone, c.variant) for c in cases]
    assert sorted(pairs) == sorted((b, v) for b in backbones.names() for v in backbones.VARIANTS)
    assert short_only in {b for b, _ in pairs}  # a user-registered backbone is in every preset
    assert len({c.case_id for c in cases}) == len(cases)


def test_paper_preset_is_the_canonical_configuration_at_batch_1():
    preset = presets.get_preset(None)
    assert preset.name == "paper"
    for case in presets.build_matrix(preset):
        spec = backbones.spec(case.backbone)
        assert (case.frames, case.size, case.batch) == (spec.frames, spec.default_size, 1)
        assert case == case.resolve()  # already resolved: records say exactly what was measured
        stages = parse_schedule(case.schedule)
        if case.variant == "hierarchical":
            assert len(stages) >= 2
        else:
            assert len(stages) == {"rectangle": 0, "single": 1}[case.variant]


def test_smoke_preset_uses_tiny_sizes_and_cheap_settings():
    smoke, paper = presets.get_preset("smoke"), presets.get_preset("paper")
    assert {c.size for c in presets.build_matrix(smoke)} == {"tiny"}
    assert smoke.settings.min_time_s <= paper.settings.min_time_s
    assert paper.settings.repeats >= 3 and paper.settings.warmup >= 1  # a median of at least 3 timings


def test_scaling_preset_scales_schedules_with_t():
    cases = presets.build_matrix(presets.get_preset("scaling"), backbone_names=["mixste"], variants=["single"])
    assert [c.frames for c in cases] == list(presets.SCALING_FRAMES)
    for case in cases:
        ((block, keep),) = parse_schedule(case.schedule)
        assert block == 3
        assert keep == pytest.approx(case.frames / 3, abs=0.5)  # HoT's 81 of 243, at every T


def test_scaling_preset_skips_lengths_a_backbone_cannot_take(short_only):
    preset = presets.get_preset("scaling")
    cases = presets.build_matrix(preset, backbone_names=[short_only], variants=["rectangle"])
    assert [c.frames for c in cases] == list(presets.SCALING_FRAMES)  # kept, with a stable id
    too_long = [c for c in cases if c.frames > 300]
    assert too_long
    records = list(measure_case(too_long[0], ["params", "latency"], "r"))
    assert [r["status"] for r in records] == ["skipped", "skipped"]
    assert "300 entries" in records[0]["error"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"backbone_names": ["nosuch"]}, "unknown backbone 'nosuch'"),
        ({"variants": ["square"]}, "unknown variant 'square'"),
        ({"size": "huge"}, "size 'huge' does not exist"),
        ({"dtype": "int8"}, "unknown dtype"),
        ({"batch": [0]}, "batch must be >= 1"),
        ({"frames": [0]}, "frames must be >= 1"),
    ],
)
def test_bad_overrides_are_usage_errors(overrides, message):
    with pytest.raises(UsageError, match=message):
        presets.build_matrix(presets.get_preset("paper"), **overrides)


def test_a_length_no_backbone_can_take_is_a_usage_error(short_only):
    with pytest.raises(UsageError, match="no selected backbone can take 400 frames"):
        presets.build_matrix(presets.get_preset("paper"), backbone_names=[short_only], frames=[400])


def test_unknown_preset():
    with pytest.raises(UsageError, match="unknown preset 'fast'; choose from smoke, paper, scaling"):
        presets.get_preset("fast")


def test_overrides_replace_the_preset_axes():
    cases = presets.build_matrix(
        presets.get_preset("paper"), backbone_names=["mixste"], variants=["rectangle", "hierarchical"],
        frames=[27, 81], batch=[2], size="tiny",
    )
    assert [(c.variant, c.frames, c.batch, c.size) for c in cases] == [
        ("rectangle", 27, 2, "tiny"), ("hierarchical", 27, 2, "tiny"),
        ("rectangle", 81, 2, "tiny"), ("hierarchical", 81, 2, "tiny"),
    ]  # fmt: skip
    assert all(isinstance(c, Case) for c in cases)


def test_pruned_cases_run_once_per_pruner_and_recoverer_rectangles_once():
    from bench.run.presets import with_strategies

    cases = presets.build_matrix(presets.get_preset("smoke"), backbone_names=["mixste", "mhformer"])
    out = with_strategies(cases, ["tpc", "tome"], ["tri", "tra"])
    by = {}
    for c in out:
        by.setdefault((c.backbone, c.variant), set()).add((c.pruner, c.recoverer))
    assert by[("mixste", "rectangle")] == {("", "")}
    assert by[("mixste", "single")] == {(p, r) for p in ("tpc", "tome") for r in ("tri", "tra")}
    assert by[("mhformer", "hierarchical")] == {("tpc", ""), ("tome", "")}  # seq2frame: no recoverer
    assert len({c.case_id for c in out}) == len(out)
    assert with_strategies(cases) == cases
