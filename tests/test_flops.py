"""The three FLOP counters (fvcore, torch, paper): analytic checks, agreement, thop parity, canon."""

import functools
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import backbones
from backbones.blocks import Block
from bench.core.errors import UsageError
from bench.measure import flops as flops_module
from bench.measure import flops_paper, flops_torch
from bench.measure.flops import COUNTERS, FlopReport, count_all, count_flops
from bench.measure.flops_fvcore import FVCORE_NON_MATMUL

CASES = [(name, variant) for name in backbones.names() for variant in backbones.VARIANTS]


def _tiny(name: str, variant: str) -> tuple[nn.Module, torch.Tensor]:
    """The tiny size of a backbone at 27 frames (its canonical length if it cannot take 27)."""
    spec = backbones.spec(name)
    frames = 27 if spec.valid_frames(27) is None else spec.frames
    torch.manual_seed(0)
    model = backbones.create(name, variant, frames=frames, size="tiny")
    return model, torch.randn(1, frames, 17, spec.in_channels)


@functools.cache
def _tiny_reports(name: str, variant: str) -> dict[str, FlopReport]:
    model, x = _tiny(name, variant)
    return count_all(model, x)


class OneBlock(nn.Module):
    """A one-block model, so per-block figures of a single attention block can be checked."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, heads, hidden, qkv_bias=True)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks[0](x)


def _block_macs(batch: int, tokens: int, dim: int, hidden: int) -> tuple[int, int]:
    """(linear, attention) multiply-adds of one pre-norm ViT block, written out by hand."""
    linear = batch * tokens * (dim * 3 * dim + dim * dim + dim * hidden + hidden * dim)  # qkv, proj, fc1, fc2
    attention = 2 * batch * tokens * tokens * dim  # Q K^T and A V, summed over heads (heads x D = dim)
    return linear, attention


# --------------------------------------------------------------------------- analytic


@pytest.mark.parametrize("counter", ["torch", "fvcore"])
def test_one_block_matches_the_formula_and_scales_with_T(counter):
    b, dim, heads, hidden, n = 2, 16, 4, 32, 10
    model = OneBlock(dim, heads, hidden)
    small = count_flops(model, torch.randn(b, n, dim), counter)
    large = count_flops(model, torch.randn(b, 2 * n, dim), counter)
    lin, att = _block_macs(b, n, dim, hidden)
    # fvcore also counts its two LayerNorms at 5 per element; torch counts matmuls only
    norms = 2 * 5 * b * n * dim if counter == "fvcore" else 0
    assert small.blocks[0] * 1e9 == pytest.approx(2 * (lin + att + norms), rel=1e-9)
    assert small.total == pytest.approx(small.blocks[0], rel=1e-9)

    linear_op, attention_op = {
        "torch": ("aten.addmm", "aten._scaled_dot_product_flash_attention_for_cpu"),
        "fvcore": ("linear", "scaled_dot_product_attention"),
    }[counter]
    assert small.by_operator[linear_op] * 1e9 == pytest.approx(2 * lin, rel=1e-9)
    assert large.by_operator[linear_op] == pytest.approx(2 * small.by_operator[linear_op], rel=1e-9)
    assert small.by_operator[attention_op] * 1e9 == pytest.approx(2 * att, rel=1e-9)
    assert large.by_operator[attention_op] == pytest.approx(4 * small.by_operator[attention_op], rel=1e-9)


def test_paper_counter_leaves_attention_matmuls_out():
    b, dim, heads, hidden, n = 2, 16, 4, 32, 10
    model = OneBlock(dim, heads, hidden)
    small = count_flops(model, torch.randn(b, n, dim), "paper")
    large = count_flops(model, torch.randn(b, 2 * n, dim), "paper")
    lin, _ = _block_macs(b, n, dim, hidden)
    norms = 2 * 4 * b * n * dim  # thop: 2 per element, doubled for an affine LayerNorm
    assert small.blocks[0] * 1e9 == pytest.approx(2 * (lin + norms), rel=1e-9)
    assert large.blocks[0] == pytest.approx(2 * small.blocks[0], rel=1e-9)  # purely linear in T


class CrossAttend(nn.Module):
    """Attention of (B, H, Nq, D) queries over (B, H, Nk, D) keys, with value dim ``dv``."""

    def __init__(self, dv: int):
        super().__init__()
        self.dv = dv

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, kv, kv[..., : self.dv].contiguous())


# Dv = D takes torch's fused CPU kernel, Dv != D its matmul fallback; both must count the same.
@pytest.mark.parametrize("dv", [8, 5])
@pytest.mark.parametrize("counter", ["torch", "fvcore"])
def test_cross_attention_counts_queries_times_keys(counter, dv):
    q, kv = torch.randn(2, 3, 7, 8), torch.randn(2, 3, 11, 8)  # Nq = 7 != Nk = 11, D = 8
    report = count_flops(CrossAttend(dv), (q, kv), counter)
    assert report.total * 1e9 == pytest.approx(2 * 2 * 3 * 7 * 11 * (8 + dv), rel=1e-9)


def test_torch_counts_fused_attention_on_cpu():
    """torch's FlopCounterMode has no formula for the fused CPU kernel (it counts 0); ours has."""
    report = count_flops(CrossAttend(8), (torch.randn(1, 2, 9, 8), torch.randn(1, 2, 9, 8)), "torch")
    fused = report.by_operator.get("aten._scaled_dot_product_flash_attention_for_cpu", 0.0)
    assert fused > 0
    assert fused * 1e9 == pytest.approx(2 * 2 * 9 * 9 * (8 + 8), rel=1e-9)


# --------------------------------------------------------------------------- every backbone


@pytest.mark.parametrize("name, variant", CASES)
def test_fvcore_and_torch_agree_on_the_same_ops(name, variant):
    """Both count matmuls, attention, convolutions and cdist; fvcore alone counts norms,
    upsampling and adaptive pooling, so those are taken out of its total before comparing."""
    reports = _tiny_reports(name, variant)
    fv, th = reports["fvcore"], reports["torch"]
    extra = sum(v for op, v in fv.by_operator.items() if op in FVCORE_NON_MATMUL)
    assert th.total > 0
    assert fv.total - extra == pytest.approx(th.total, rel=0.01)
    assert fv.unsupported == {}, f"fvcore skipped ops that may have multiply-adds: {fv.unsupported}"


@pytest.mark.parametrize("name, variant", CASES)
def test_per_block_breakdown_follows_the_blocks(name, variant):
    model, _ = _tiny(name, variant)
    for counter, report in _tiny_reports(name, variant).items():
        assert len(report.blocks) == len(model.blocks), counter
        assert all(b > 0 for b in report.blocks), counter
        assert sum(report.blocks) <= report.total * (1 + 1e-9), counter
    # the hourglass: a block seeing fewer tokens than another costs less (fvcore, as reported)
    blocks, profile = _tiny_reports(name, variant)["fvcore"].blocks, model.token_profile
    for i in range(len(blocks)):
        for j in range(len(blocks)):
            if profile[j] < profile[i] and type(model.blocks[i]) is type(model.blocks[j]):
                assert blocks[j] < blocks[i], (i, j, profile)


@pytest.mark.parametrize("name, variant", CASES)
def test_paper_counter_equals_thop_0_1_1(name, variant):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # thop 0.1.1 imports distutils
        thop = pytest.importorskip("thop")
    model, x = _tiny(name, variant)  # the same weights and input as the cached reports
    macs, _ = thop.profile(model, inputs=(x,), verbose=False)
    assert macs > 0
    assert _tiny_reports(name, variant)["paper"].total == pytest.approx(2 * macs / 1e9, rel=1e-9)


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name, variant", CASES)
def test_torch_and_paper_sharing_one_forward_count_what_each_counts_alone(name, variant):
    model, x = _tiny(name, variant)
    shared = _tiny_reports(name, variant)  # count_all: torch and paper in one forward
    for counter in ("torch", "paper"):
        alone = count_flops(model, x, counter)
        got = shared[counter]
        assert (got.total, got.blocks, dict(got.by_operator), dict(got.unsupported)) == (
            alone.total, alone.blocks, dict(alone.by_operator), dict(alone.unsupported)
        ), counter


def test_when_the_shared_forward_fails_each_counter_runs_alone(monkeypatch):
    model, x = _tiny("mixste", "single")
    calls = []
    real = flops_paper.paper_counting

    @flops_module.contextmanager
    def torch_fails(m):
        calls.append("shared")
        raise RuntimeError("dispatch mode broke")
        yield  # pragma: no cover

    monkeypatch.setattr(flops_torch, "torch_counting", torch_fails)
    reports = flops_module.count_each(model, x)
    assert calls == ["shared", "shared"]  # the shared pass, then torch alone
    assert isinstance(reports["torch"], RuntimeError) and "dispatch mode broke" in str(reports["torch"])
    assert isinstance(reports["paper"], FlopReport) and reports["paper"].total > 0
    assert isinstance(reports["fvcore"], FlopReport)
    assert real is flops_paper.paper_counting
    assert not any(m._forward_hooks for m in model.modules())
    with pytest.raises(RuntimeError, match="dispatch mode broke"):
        count_all(model, x)



def test_counting_leaves_the_model_as_it_was():
    model, x = _tiny("mixste", "single")
    model.train()
    model.embed.weight.requires_grad_(False)
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    for counter in COUNTERS:
        count_flops(model, x, counter)
    assert model.training
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert not any(hasattr(m, "total_ops") for m in model.modules())


def test_unknown_counter_is_a_usage_error():
    model, x = _tiny("mixste", "rectangle")
    with pytest.raises(UsageError, match="'thop'.*fvcore, torch, paper"):
        count_flops(model, x, "thop")


def test_reports_carry_counter_and_note():
    reports = _tiny_reports("mixste", "rectangle")
    assert list(reports) == list(COUNTERS)
    for counter, report in reports.items():
        assert report.counter == counter
        assert report.note and report.seconds > 0
    assert "attention" in reports["paper"].note  # says what the published protocol leaves out


# --------------------------------------------------------------------------- canonical (paper)


def _paper(name: str, variant: str) -> float:
    model = backbones.create(name, variant)
    x = torch.randn(1, model.frames, 17, model.in_channels)
    return count_flops(model, x, "paper").total


@pytest.mark.slow
def test_mixste_243_matches_the_published_gflops():
    # HoT (Li et al., CVPR 2024), Fig. 1: MixSTE ~277 G, HoT w. MixSTE ~168 G (thop MACs x 2, batch 1)
    rectangle, single = _paper("mixste", "rectangle"), _paper("mixste", "single")
    assert rectangle == pytest.approx(277, rel=0.015)
    assert single == pytest.approx(168, rel=0.015)
    # H2OT's headline for MixSTE: -57.4 % FLOPs; the hierarchical default must land in 55-60 %
    reduction = 1 - _paper("mixste", "hierarchical") / rectangle
    assert 0.55 <= reduction <= 0.60


@pytest.mark.slow
def test_motionbert_lite_matches_the_published_gflops():
    # HoT, Fig. 1: MotionBERT (lite) ~131 G, HoT w. MotionBERT ~63 G
    assert _paper("motionbert", "rectangle") == pytest.approx(131, rel=0.015)
    assert _paper("motionbert", "single") == pytest.approx(63, rel=0.015)


# --------------------------------------------------------------------------- fused kernels, disagreement


class EncoderLayers(nn.Module):
    """A backbone built from nn.TransformerEncoderLayer (whose eval fast path is one fused kernel)."""

    def __init__(self, dim: int = 64, heads: int = 4, hidden: int = 128, depth: int = 2):
        super().__init__()
        self.embed = nn.Linear(17 * 2, dim)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, hidden, dropout=0.0, batch_first=True) for _ in range(depth)
        )
        self.head = nn.Linear(dim, 17 * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        x = self.embed(x.reshape(b, t, -1))
        for blk in self.blocks:
            x = blk(x)
        return self.head(x).reshape(b, t, 17, 3)


def _encoder_analytic_gflops(t: int, dim: int = 64, hidden: int = 128, depth: int = 2) -> float:
    """Linear layers (embed, in/out projections, MLP, head) plus Q K^T and A V, 2 FLOPs per MAC."""
    linear = t * (34 * dim + depth * (dim * 3 * dim + dim * dim + 2 * dim * hidden) + dim * 51)
    attention = depth * 2 * t * t * dim
    return 2 * (linear + attention) / 1e9


def test_torch_counts_transformer_encoder_layers_within_5_percent_of_the_formula():
    torch.manual_seed(0)
    model, x = EncoderLayers().eval(), torch.randn(1, 27, 17, 2)
    expected = _encoder_analytic_gflops(27)
    with torch.inference_mode():  # the harness' own mode must not switch the fused fast path back on
        rep = count_flops(model, x, "torch")
    assert rep.total == pytest.approx(expected, rel=0.05)
    assert count_flops(model, x, "fvcore").total == pytest.approx(expected, rel=0.05)  # plus its norms
    assert torch.backends.mha.get_fastpath_enabled()  # restored afterwards


def test_a_blind_counter_is_flagged_with_the_fused_op_it_missed():
    torch.manual_seed(0)
    model, x = EncoderLayers().eval(), torch.randn(1, 27, 17, 2)
    # What the torch counter saw before: the fused fast path, counted as (almost) nothing.
    with torch.no_grad():
        for p in model.parameters():
            p.requires_grad_(False)
        blind = flops_torch.count_torch(model, (x,))
    assert blind.total < 0.2 * _encoder_analytic_gflops(27)
    assert "aten._transformer_encoder_layer_fwd" in blind.unsupported
    reports = {"fvcore": count_flops(model, x, "fvcore"), "torch": blind}
    (warning,) = flops_module.disagreements(reports)
    assert "torch" in warning and "fvcore" in warning and "_transformer_encoder_layer_fwd" in warning


def test_paper_protocol_missing_multihead_attention_is_flagged_but_its_attention_gap_is_not():
    model, x = EncoderLayers().eval(), torch.randn(1, 27, 17, 2)
    reports = count_all(model, x)
    assert reports["paper"].unsupported == {"MultiheadAttention": 2}  # in/out projections uncounted
    assert any("MultiheadAttention" in w for w in flops_module.disagreements(reports))
    # A built-in backbone at long T: attention is most of the work and the paper protocol leaves it
    # out by design, more than 2x below the others, without a warning.
    torch.manual_seed(0)
    mix = backbones.create("mixste", "rectangle", frames=243, size="tiny", depth=2)
    reports = count_all(mix, torch.randn(1, 243, 17, 2))
    assert reports["fvcore"].total > 1.9 * reports["paper"].total
    assert flops_module.disagreements(reports) == []


def test_measured_flops_records_carry_the_disagreement_warning(capsys):
    from bench.core.case import Case
    from bench.scenarios import measure_case

    @backbones.register(
        "encoder-layers", pipeline="seq2seq", in_channels=2, frames=27, single=backbones.VariantSpec(),
        hierarchical=backbones.VariantSpec(), sizes={"tiny": {}}, default_size="tiny",
    )  # fmt: skip
    def build(frames, schedule, pruner, recoverer, embed_kept):
        return EncoderLayers()  # no pipeline, frames or in_channels: the registration gives them

    try:
        records = {r["method"]: r for r in measure_case(Case("encoder-layers", frames=27), ["flops"], "t")}
    finally:
        backbones.unregister("encoder-layers")
    assert records["torch"]["value"] == pytest.approx(_encoder_analytic_gflops(27), rel=0.05)
    assert "MultiheadAttention" in records["paper"]["warning"]
    assert "warning" not in records["torch"]
    assert "FLOP counters disagree" in capsys.readouterr().err
