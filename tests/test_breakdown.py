"""Time by part and block, the GEMM peak, training FLOPs and traces (bench.measure.profiler and
bench.measure.gemm; their records: bench.scenarios.breakdown).

Tiny models at T=9: what is checked is the bookkeeping (every part named, the parts partitioning
the profiled call, backward time given to the forward's parts), never a speed.
"""

from __future__ import annotations

import json

import pytest
import torch

import backbones
from bench.cli import main
from bench.core.case import Case
from bench.measure import gemm, profiler
from bench.measure.flops import count_flops
from bench.measure.flops_torch import count_train_step
from bench.scenarios import Settings, example_inputs, measure_case
from bench.scenarios import breakdown as bd


def tiny(backbone: str, variant: str = "hierarchical") -> tuple[Case, torch.nn.Module, torch.Tensor, torch.Tensor]:
    case = Case(backbone, variant=variant, frames=9, size="tiny").resolve()
    torch.manual_seed(0)
    model = case.build().eval()
    x, y = example_inputs(case, model)
    return case, model, x, y


@pytest.mark.parametrize("backbone", backbones.names())
def test_every_backbone_has_its_main_parts_labelled(backbone):
    _, model, _, _ = tiny(backbone, "single")
    parts = profiler.part_modules(model, backbone)
    found = {p for p, _ in parts.values()}
    assert found <= set(profiler.PARTS)
    assert {"mlp", "norm", "head"} <= found
    assert {"spatial_attention", "temporal_attention"} & found
    assert not any(isinstance(dict(model.named_modules())[n], torch.nn.ModuleList) for n in parts)
    blocks = {b for _, b in parts.values() if b is not None}
    assert blocks == set(range(len(model.blocks)))  # type: ignore[arg-type]


def test_module_names_map_to_the_parts_they_are():
    _, model, _, _ = tiny("mixste", "single")
    parts = profiler.part_modules(model, "mixste")
    assert parts["blocks.3.spatial.attn"] == ("spatial_attention", 3)
    assert parts["blocks.0.temporal.mlp"] == ("mlp", 0)
    assert parts["embed"] == ("embed", None)
    assert parts["tokens.tra"] == ("recover", None)
    assert parts["head"] == ("head", None)
    assert "blocks.0.temporal.mlp.fc1" not in parts  # nested modules belong to their part
    _, mag, _, _ = tiny("motionagformer", "rectangle")
    assert profiler.part_modules(mag, "motionagformer")["blocks.1.graph_temporal.mixer"] == ("graph", 1)
    assert profiler.parse_label(profiler.label("prune", 2)) == ("prune", 2)
    assert profiler.parse_label("aten::addmm") is None


def test_split_profile_gives_each_event_to_the_innermost_part():
    class Ev:
        def __init__(self, name, self_us, children=(), seq=-1, start=0):
            self.name, self.self_cpu_time_total, self.cpu_children = name, self_us, list(children)
            self.sequence_nr, self.cpu_parent = seq, None
            self.time_range = type("R", (), {"start": start})()
            for c in self.cpu_children:
                c.cpu_parent = self

    fwd = Ev(profiler.FORWARD_ROOT, 100, [
        Ev(profiler.label("mlp", 1), 10, [Ev("aten::addmm", 500, seq=7)]),
        Ev(profiler.label("prune", 1), 5, [Ev("aten::topk", 40)]),
        Ev("aten::add", 30),
    ])  # fmt: skip
    bwd = Ev(profiler.STEP_ROOT + "backward", 1, [Ev("autograd::engine::evaluate_function: AddmmBackward0", 200, seq=7),
                                            Ev("autograd::engine::evaluate_function: X", 50, seq=99)], start=1)
    fwd.name = profiler.STEP_ROOT + "forward"
    (call,) = profiler.split_profile([fwd, bwd])
    assert call[("forward", "mlp", 1)] == pytest.approx(0.51)
    assert call[("forward", "prune", 1)] == pytest.approx(0.045)
    assert call[("forward", "other", None)] == pytest.approx(0.13)
    assert call[("backward", "mlp", 1)] == pytest.approx(0.2)  # linked by the sequence number
    assert call[("backward", "other", None)] == pytest.approx(0.051)


def test_stats_median_interval_and_stability():
    s = profiler.stats([10.0] * 9)
    assert (s.median, s.n, s.ci_low, s.ci_high, s.stable) == (10.0, 9, 10.0, 10.0, True)
    wide = profiler.stats([1.0, 5.0, 10.0, 20.0, 40.0])
    assert wide.ci_low <= wide.median <= wide.ci_high and not wide.stable
    assert wide.unstable_reason.startswith("CI half-width")  # the rule of bench.measure.timing, said the same way
    # A timed record's own verdict stands: it knew the load while its samples were taken.
    busy = {"stable": False, "unstable_reason": "CPU busy with other processes (1.20 cores)", "ci_low": 9.0,
            "ci_high": 11.0}
    s = profiler.stats([10.0] * 9, busy)
    assert (s.stable, s.unstable_reason, s.ci_low, s.ci_high) == (False, busy["unstable_reason"], 9.0, 11.0)


def test_breakdown_records_of_a_case(tmp_path, monkeypatch):
    monkeypatch.setitem(gemm.GEMM_SIZES, "cpu", (64, 128))  # the bookkeeping, not this machine's peak
    (tmp_path / "meta.json").write_text(json.dumps({"run_id": "t"}))
    case, model, _, _ = tiny("mixste")
    quick = Settings(warmup=1, repeats=2, min_time_s=0.0, train_warmup=1, train_repeats=1, train_min_time_s=0.0)
    recs = list(measure_case(case, ["flops", "latency", "breakdown", "flops_train"], "t", model=model, run_dir=tmp_path,
                             settings=quick))  # fmt: skip
    assert all(r["status"] == "ok" for r in recs), [r["error"] for r in recs if r["status"] != "ok"]
    parts = [r for r in recs if r["metric"] == "time_by_part"]
    assert {r["phase"] for r in parts} == {"inference", "train"}
    stages = [int(s.split(":")[0]) for s in case.schedule.split(",")]
    pruned = {(r["part"], r["block"]) for r in parts if r["phase"] == "inference"}
    assert {("prune", b) for b in stages} | {("recover", None)} <= pruned
    assert {r["part"] for r in parts} <= set(profiler.PARTS)
    # hooks and the wrapped token steps are gone afterwards
    assert "prune" not in vars(model.tokens) and not model.blocks[0].spatial.attn._forward_pre_hooks
    assert {r["step"] for r in parts if r["phase"] == "train"} == set(profiler.STEPS)
    inference = [r for r in parts if r["phase"] == "inference"]
    assert sum(r["value"] for r in inference) == pytest.approx(inference[0]["sum_ms"])
    assert all({"n", "ci_low", "ci_high", "stable", "latency_ms", "flops_g"} <= set(r) for r in inference)
    assert sum(r["flops_g"] for r in inference) == pytest.approx(count_flops(model, case_x(case, model), "torch").total)
    achieved = {r["method"]: r for r in recs if r["metric"] == "achieved_gflops"}
    assert set(achieved) == {"fvcore", "torch", "paper"}
    (peak,) = [r for r in recs if r["metric"] == "machine_peak_gflops"]
    assert peak["method"] == "gemm" and peak["value"] > 0
    assert achieved["torch"]["of_peak"] == pytest.approx(achieved["torch"]["value"] / peak["value"])
    # the peak is cached in the run's meta.json: a second case does not measure it again
    assert json.loads((tmp_path / "meta.json").read_text())["machine_peak_gflops"]
    again = gemm.machine_peak(case.device, case.dtype, torch.get_num_threads(), tmp_path)
    assert again["cached"] and again["value"] == peak["value"]


def case_x(case: Case, model: torch.nn.Module) -> torch.Tensor:
    return example_inputs(case, model)[0]


def test_flops_train_counts_the_backward_too():
    case, model, x, y = tiny("mixste", "rectangle")
    forward = count_flops(model, x, "torch").total
    train = count_train_step(model, x, y)
    assert 2.5 * forward < train < 3.5 * forward  # backward ~ twice the forward (attention included)
    assert all(p.grad is None for p in model.parameters()) and not model.training


def test_profile_writes_a_chrome_trace_labelled_by_part_and_block(tmp_path, capsys):
    path = tmp_path / "trace.json"
    rc = main(["profile", "mixste", "--variant", "hierarchical", "--size", "tiny", "--frames", "9", "--trace", str(path)])
    assert rc == 0
    events = json.loads(path.read_text())["traceEvents"]
    names = {e.get("name", "") for e in events}
    assert profiler.FORWARD_ROOT in names and "vpt.recover" in names
    assert any(n.startswith("vpt.prune.block") for n in names)
    assert any(n.startswith("vpt.temporal_attention.block") for n in names)
    assert capsys.readouterr().out == ""


def test_profile_trace_to_an_unwritable_path_is_a_usage_error(tmp_path, capsys):
    rc = main(["profile", "mixste", "--size", "tiny", "--frames", "9", "--trace", str(tmp_path / "no" / "such" / "t.json")])
    assert rc == 2
    assert "--trace" in capsys.readouterr().err


def test_report_shows_the_breakdown(tmp_path):
    from bench.analysis.report import write_report
    from bench.core.results import record

    recs = []
    ms = {"rectangle": {"temporal_attention": 60.0, "mlp": 30.0, "norm": 10.0},
          "hierarchical": {"temporal_attention": 20.0, "mlp": 10.0, "norm": 6.0, "prune": 2.0, "recover": 2.0}}
    for variant, parts in ms.items():
        case = Case("mixste", variant=variant, frames=27, size="tiny").resolve()
        gflops = 3.0 if variant == "rectangle" else 1.0
        recs.append(record("r", case, "flops", gflops, method="torch"))
        recs.append(record("r", case, "machine_peak_gflops", 100.0, method="gemm"))
        recs.append(record("r", case, "achieved_gflops", 25.0, method="torch"))
        recs.append(record("r", case, "peak_mem_activations", 50.0, method="rss_delta", phase="train"))
        for part, value in parts.items():
            recs.append(record("r", case, "time_by_part", value / 2, method="torch.profiler", part=part, block=0,
                               phase="inference", flops_g=gflops / 2))
            recs.append(record("r", case, "time_by_part", value / 2, method="torch.profiler", part=part, block=1,
                               phase="inference", flops_g=gflops / 2))
    run = tmp_path / "run"
    run.mkdir()
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = write_report(run, accuracy=[], out=tmp_path / "rep")
    summary = __import__("pandas").read_csv(out / "summary.csv").set_index("variant")
    assert summary.at["hierarchical", "prune_recover_pct"] == pytest.approx(10.0)  # 4 of 40 ms
    assert summary.at["rectangle", "of_peak_pct"] == pytest.approx(25.0)
    assert summary.at["hierarchical", "peak_mem_activations_train_mib"] == pytest.approx(50.0)
    md = (out / "index.md").read_text()
    assert "3.00x fewer FLOPs (torch) and a 2.50x speed-up (100.0 -> 40.0 ms)" in md
    assert "pruning + recovering add 4.0 ms" in md
    png = out / "plots" / "time_by_part.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_memory_by_part_of_a_hierarchical_case(monkeypatch):
    monkeypatch.setitem(gemm.GEMM_SIZES, "cpu", (64,))
    case, model, x, y = tiny("mixste")
    quick = Settings(warmup=1, repeats=2, min_time_s=0.0, train_warmup=1, train_repeats=1, train_min_time_s=0.0)
    recs = list(bd.breakdown_records("t", case, model, x, y, quick, train=True))
    mem = [r for r in recs if r["metric"] == "mem_by_part"]
    assert {r["phase"] for r in mem} == {"inference", "train"}
    assert all(r["unit"] == "MiB" and r["method"] == "torch.profiler" and "net of what it freed" in r["summed"]
               for r in mem)  # fmt: skip
    assert all(r["value"] >= 0 for r in mem)
    stages = [int(s.split(":")[0]) for s in case.schedule.split(",")]
    for phase in ("inference", "train"):
        mine = [r for r in mem if r["phase"] == phase]
        keys = {(r["part"], r["block"]) for r in mine}
        assert {("prune", b) for b in stages} | {("recover", None)} <= keys
        assert {r["part"] for r in mine} <= set(profiler.PARTS)
        assert sum(r["value"] for r in mine) == pytest.approx(mine[0]["total_mib"])
    inference = {(r["part"], r["block"]): r["value"] for r in mem if r["phase"] == "inference"}
    # the head allocates the output at least; the attention of an unpruned block more than that of a pruned one
    assert inference[("head", None)] >= model(x).numel() * 4 / 2**20
    assert inference[("temporal_attention", 0)] > inference[("temporal_attention", stages[-1])] > 0
    assert all(inference[("prune", b)] > 0 for b in stages)  # selection and gather allocate the kept tokens
    train = [r for r in mem if r["phase"] == "train"]
    assert {r["step"] for r in train} == set(profiler.STEPS)
    backward = {(r["part"], r["block"]): r["value"] for r in train if r["step"] == "backward"}
    assert backward[("mlp", 0)] > 0  # gradients given to the forward's parts
    assert sum(r["value"] for r in train) > sum(inference.values())  # a training step allocates more than a forward


def test_report_of_a_tiny_breakdown_run_draws_the_roofline_and_memory_by_part(tmp_path, monkeypatch):
    from bench.analysis.report import write_report

    monkeypatch.setitem(gemm.GEMM_SIZES, "cpu", (64,))
    run = tmp_path / "run"
    run.mkdir()
    (run / "meta.json").write_text(json.dumps({"run_id": "t"}))
    quick = Settings(warmup=1, repeats=2, min_time_s=0.0)
    recs = []
    for variant in ("rectangle", "hierarchical"):
        case, model, _, _ = tiny("mixste", variant)
        recs += measure_case(case, ["flops", "latency", "breakdown"], "t", model=model, run_dir=run, settings=quick)
    assert all(r["status"] == "ok" for r in recs), [r["error"] for r in recs if r["status"] != "ok"]
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = write_report(run, accuracy=[], out=tmp_path / "rep")
    for name in ("roofline", "mem_by_part"):
        for ext in ("png", "svg"):
            assert (out / "plots" / f"{name}.{ext}").stat().st_size > 1000
    md = (out / "index.md").read_text()
    assert "### Achieved FLOP/s against the machine's GEMM peak" in md
    assert "### Where the memory goes: MiB allocated by part" in md
    assert "not drawn; no breakdown records" not in md
