"""vptbench sweep: the grid's schedules, their table and front, the budget pick, the searches, the CLI."""

from __future__ import annotations

import csv
import math
import sys
from itertools import combinations

import numpy as np
import pandas as pd
import pytest

from backbones.tokens import parse_schedule
from bench.analysis.pareto import pareto_mask
from bench.cli import main
from bench.core.case import Case
from bench.core.errors import UsageError
from bench.core.results import read_records
from bench.sweep.front import Budget, best_within, front, mark_front, ready_options, sweep_table
from bench.sweep.grid import (
    Candidate,
    Grid,
    count_line,
    enumerate_schedules,
    model_depth,
    parse_keeps,
    reference_candidates,
    with_references,
)
from bench.sweep.search import ScheduleTree, halving_keep, rung_budgets

TINY = {"frames": 27, "size": "tiny"}


def _grid(**kw) -> Grid:
    kw.setdefault("keeps", parse_keeps("1/3,1/9"))
    return Grid(**kw)


def test_tiny_mixste_grid_has_the_44_schedules_of_the_issue():
    assert model_depth("mixste", 27, "tiny") == 8
    cands = enumerate_schedules("mixste", _grid(stages=(1, 2)), **TINY)
    stages = [c.stages for c in cands]
    assert len(cands) == 44
    assert sum(len(s) == 1 for s in stages) == 16 and sum(len(s) == 2 for s in stages) == 28
    assert count_line(cands) == "44 schedules (16 one-stage, 28 two-stage)"
    assert len({c.case.case_id for c in cands}) == 44
    for c in cands:
        blocks = [b for b, _ in c.stages]
        tokens = [27] + [k for _, k in c.stages]
        assert blocks == sorted(set(blocks)) and all(a > b for a, b in zip(tokens, tokens[1:]))
        assert c.case.variant == ("single" if len(blocks) == 1 else "hierarchical")
        assert (c.case.pruner, c.case.recoverer, c.case.frames, c.case.size) == ("tps", "tri", 27, "tiny")
        assert {tuple(c.keeps)} <= {("1/3",), ("1/9",), ("1/3", "1/9")}
    # Every schedule of the issue's rule is there: 8 blocks x {9, 3} tokens; block pairs with 9 then 3.
    expected = {((b, k),) for b in range(8) for k in (9, 3)} | {((a, 9), (b, 3)) for a, b in combinations(range(8), 2)}
    assert {tuple(s) for s in stages} == expected


def test_three_stages_and_three_keeps_count_every_decreasing_combination():
    cands = enumerate_schedules("mixste", _grid(stages=(1, 2, 3), keeps=parse_keeps("1/2,1/3,1/9")), **TINY)
    per = pd.Series([len(c.stages) for c in cands]).value_counts()
    # 1/2 of 27 rounds to 14: keeps 14 > 9 > 3, each combination taken in that order
    assert (per[1], per[2], per[3]) == (8 * 3, 28 * 3, 56 * 1)


def test_pruners_multiply_and_their_rules_apply():
    both = enumerate_schedules("mixste", _grid(stages=(1,), pruners=("tps", "tpc")), **TINY)
    assert len(both) == 32 and {c.case.pruner for c in both} == {"tps", "tpc"}
    tpa = enumerate_schedules("mixste", _grid(stages=(1,), pruners=("tpa",)), **TINY)
    assert len(tpa) == 14 and min(c.first_block for c in tpa) == 1  # tpa needs a block before its prune point


def test_per_stage_pruners_give_every_assignment_in_one_spelling():
    grid = _grid(stages=(1, 2), pruners=("tps", "tpc"), per_stage_pruners=True)
    cands = enumerate_schedules("mixste", grid, **TINY)
    assert len(cands) == 16 * 2 + 28 * 4 and len({c.case.case_id for c in cands}) == len(cands)
    plans = {c.pruner_plan for c in cands if len(c.stages) == 2}
    assert plans == {("tps", "tps"), ("tps", "tpc"), ("tpc", "tps"), ("tpc", "tpc")}
    mixed = next(c for c in cands if c.pruner_plan == ("tps", "tpc"))
    assert mixed.case.pruner == "tps" and mixed.case.schedule.endswith(":tpc")  # BLOCK:KEEP:PRUNER where it differs
    assert mixed.stages == [(mixed.first_block, 9), (mixed.stages[1][0], 3)]
    # without the flag: one pruner per schedule, the uniform plans only
    assert len(enumerate_schedules("mixste", _grid(stages=(1, 2), pruners=("tps", "tpc")), **TINY)) == 44 * 2


def test_blocks_restrict_and_keeps_rounding_alike_give_one_schedule():
    cands = enumerate_schedules("mixste", _grid(stages=(1,), blocks=(2, 5), keeps=parse_keeps("1/3,0.33,9")), **TINY)
    assert [c.case.schedule for c in cands] == ["2:9", "5:9"] and cands[0].keeps == ("1/3",)
    with pytest.raises(UsageError, match="blocks 0..7"):
        enumerate_schedules("mixste", _grid(blocks=(8,)), **TINY)


def test_seq2frame_schedules_have_no_recoverer():
    cands = enumerate_schedules("mhformer", _grid(stages=(1,), recoverers=("tri", "tra")), frames=27, size="tiny")
    assert cands and {c.case.recoverer for c in cands} == {""}
    assert len({c.case.case_id for c in cands}) == len(cands)


@pytest.mark.parametrize(
    ("text", "values"),
    [("1/2,1/3,1/9", [0.5, 1 / 3, 1 / 9]), ("0.25, 81", [0.25, 81])],
)
def test_parse_keeps(text, values):
    keeps = parse_keeps(text)
    assert [k.value for k in keeps] == pytest.approx(values)
    assert isinstance(keeps[-1].value, int) == (text.endswith("81"))


@pytest.mark.parametrize("bad", ["0", "1/0", "3/2", "abc", "1.5", ","])
def test_parse_keeps_refuses(bad):
    with pytest.raises(UsageError, match="--keep"):
        parse_keeps(bad)


def test_references_mark_a_grid_schedule_or_join_it():
    depth = 8
    grid = enumerate_schedules("mixste", _grid(stages=(1, 2)), depth=depth, **TINY)
    refs, notes = reference_candidates("mixste", depth=depth, **TINY)
    assert [r.reference for r in refs] == ["rectangle", "hot", "h2ot"] and not notes
    both = with_references(grid, refs)
    # H2OT-style default (2:1/3,5:1/9, tps+tri) is a grid schedule: marked, not repeated.
    h2ot = [c for c in both if c.reference == "h2ot"]
    assert len(h2ot) == 1 and h2ot[0].keeps == ("1/3", "1/9") and h2ot[0].case.schedule == "2:9,5:3"
    assert len(both) == 44 + 2  # + rectangle + HoT (tpc+tra, not in a tps grid)
    assert count_line(both) == "44 schedules (16 one-stage, 28 two-stage)"


def _records(cands, values):
    """flops (paper) and latency records for candidates: values[i] = (gflops, ms)."""
    from bench.core.results import record

    recs = []
    for c, (g, ms) in zip(cands, values, strict=True):
        recs.append(record("t", c.case, "flops", g, method="paper"))
        recs.append(record("t", c.case, "latency", ms, method="perf_counter"))
    return recs


def test_table_front_and_budget_pick():
    cands = enumerate_schedules("mixste", _grid(stages=(1,), blocks=(1, 3, 5)), **TINY)  # 6 schedules
    values = [(6.0, 3.0), (4.0, 4.0), (5.0, 2.0), (3.0, 3.5), (4.0, 1.0), (2.0, 5.0)]
    table = mark_front(sweep_table(cands, _records(cands, values)), ["gflops_paper", "latency_ms"])
    assert table["gflops_paper"].tolist() == [v[0] for v in values]
    pareto = front(table, ["gflops_paper", "latency_ms"])
    assert set(pareto["case_id"]) == {cands[i].case.case_id for i in (3, 4, 5)}
    assert table["on_front"].tolist() == [False, False, False, True, True, True]
    # no accuracy: the schedule keeping the most computation within the budget (a tie: the faster one)
    row, why = best_within(table, Budget((("gflops_paper", 4.5),)), "gflops_paper")
    assert row["case_id"] == cands[4].case.case_id and "most computation" in why
    assert ready_options(row) == f"--variant single --schedule {cands[4].case.schedule} --pruner tps --recoverer tri"
    assert best_within(table, Budget((("gflops_paper", 1.0),)), "gflops_paper")[0] is None
    # with accuracy: the lowest MPJPE trained for the full budget; partial (halving) values do not count
    acc = {cands[0].case.case_id: {"mpjpe": 50.0, "steps": 8, "final": True},
           cands[2].case.case_id: {"mpjpe": 60.0, "steps": 8, "final": True},
           cands[3].case.case_id: {"mpjpe": 40.0, "steps": 2, "final": False}}  # fmt: skip
    table = sweep_table(cands, _records(cands, values), acc)
    assert table["mpjpe_partial_mm"].notna().sum() == 1
    row, _ = best_within(table, Budget((("gflops_paper", 5.5), ("latency_ms", 3.0))), "gflops_paper")
    assert row["case_id"] == cands[2].case.case_id


def test_rungs_halve_the_schedules_and_double_the_steps():
    assert rung_budgets(44, 200, 3) == [(44, 50), (22, 100), (11, 200)]
    assert rung_budgets(5, 10, 1) == [(5, 10)]
    with pytest.raises(UsageError):
        rung_budgets(5, 10, 0)


def test_halving_keeps_the_best_ranked_then_the_most_accurate():
    t = pd.DataFrame({"case_id": list("abcde"), "g": [1.0, 2.0, 3.0, 1.5, 2.5],
                      "mpjpe_mm": [9.0, 5.0, 1.0, 9.5, math.nan]})  # fmt: skip
    # front over (g, mpjpe): a, b, c; then d; e failed (NaN) comes last
    assert halving_keep(t, ["g", "mpjpe_mm"], 3) == ["c", "b", "a"]
    assert halving_keep(t, ["g", "mpjpe_mm"], 5)[3:] == ["d", "e"]


class _Trial:
    """A stand-in for an optuna trial that picks by a fixed rule (the tree must ask only real choices)."""

    def __init__(self, pick):
        self.pick, self.asked = pick, {}

    def suggest_categorical(self, name, choices):
        assert name not in self.asked and len(choices) > 1
        self.asked[name] = self.pick(name, list(choices))
        return self.asked[name]


def test_schedule_tree_proposes_only_valid_schedules_and_replays_them():
    pytest.importorskip("optuna", reason="the optuna search needs the search extra (.ci/run installs it)")
    cands = enumerate_schedules("mixste", _grid(stages=(1, 2), pruners=("tps", "tpc")), **TINY)
    tree = ScheduleTree(cands)
    rng = np.random.default_rng(0)
    seen = {tree.suggest(_Trial(lambda n, ch: ch[rng.integers(len(ch))])).case.case_id for _ in range(200)}
    assert seen <= {c.case.case_id for c in cands} and len(seen) > 40
    for c in cands[::7]:
        params, dists = tree.params(c)
        assert tree.suggest(_Trial(lambda n, ch, p=params: p[n])) == c
        assert all(params[k] in d.choices for k, d in dists.items())


# --------------------------------------------------------------------------- the command

SMALL = ["sweep", "mixste", "--size", "tiny", "--frames", "9", "--stages", "1,2", "--blocks", "1,3", "--keep",
         "1/3,1/9", "--executor", "inline"]  # fmt: skip


def test_cli_shards_merge_and_resume_into_one_front_report_and_budget_pick(tmp_path, capsys):
    out, rep = tmp_path / "sweep", tmp_path / "report"
    argv = [*SMALL, "--metrics", "flops,latency", "--budget-gflops", "0.02"]
    for i in (1, 2):  # each shard measures its half of the cases and writes the front of its half
        assert main([*argv, "--shard", f"{i}/2", "--out", str(tmp_path / f"s{i}"), "--no-report"]) == 0
    cap = capsys.readouterr()
    assert "5 schedules (4 one-stage, 1 two-stage) + 3 reference case(s)" in cap.err  # 9 -> 3 -> 1 tokens
    assert "covers the shard only" in cap.err
    assert main(["merge", str(tmp_path / "s1"), str(tmp_path / "s2"), "--out", str(out)]) == 0
    recs = read_records(out)
    assert main([*argv, "--out", str(out), "--report", str(rep), "--resume"]) == 0
    cap = capsys.readouterr()
    assert "0 case(s) measured, 8 already done" in cap.err
    assert len(read_records(out)) == len(recs)  # nothing measured twice
    assert len({r["case_id"] for r in recs}) == 8 and all(r["status"] == "ok" for r in recs)
    pruned = [r for r in recs if r["variant"] != "rectangle"]
    assert pruned and all(parse_schedule(r["schedule"]) for r in pruned)  # the schedule in every record
    table = pd.read_csv(out / "schedules.csv", keep_default_na=False, na_values=[""])
    assert len(table) == 8
    objs = ["gflops_paper", "latency_ms"]
    pareto = pd.read_csv(out / "pareto.csv")
    assert sorted(pareto["case_id"]) == sorted(table["case_id"][pareto_mask(table[objs].to_numpy(float))])
    assert set(table["reference"].dropna()) == {"rectangle", "hot", "h2ot"}
    assert "best within paper GFLOPs <= 0.02" in cap.out and "--schedule" in cap.out
    assert (rep / "index.md").is_file() and (rep / "front.png").is_file() and (rep / "heatmap.png").is_file()
    assert "Pareto front" in (rep / "index.md").read_text()


def test_cli_halving_trains_rungs_and_reports_mpjpe(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = [*SMALL, "--metrics", "flops", "--accuracy", "smoke", "--search", "halving", "--steps", "4",
            "--rungs", "2", "--out", str(out), "--no-report", "--budget-gflops", "1"]  # fmt: skip
    assert main(argv) == 0
    cap = capsys.readouterr()
    assert "successive halving, 2 rung(s): 5 x 2 + 3 x 4 + 3 reference(s) x 4 = 34 training steps (grid: 32)" in cap.err
    first, last = read_records(out / "accuracy" / "rung-1"), read_records(out / "accuracy" / "rung-2")
    assert len({r["case_id"] for r in first}) == 5 and all(r["steps"] == 2 for r in first)
    assert len({r["case_id"] for r in last}) == 3 + 3 and all(r["steps"] == 4 for r in last)  # 3 + references
    table = pd.read_csv(out / "schedules.csv")
    assert table["mpjpe_mm"].notna().sum() == 6 and table["mpjpe_partial_mm"].notna().sum() == 2
    with open(out / "pareto.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(r["mpjpe_mm"] for r in rows)
    assert "the lowest MPJPE within the budget" in cap.out
    # resuming with another budget would mix training lengths: refused before anything runs
    assert main([*argv, "--resume", "--steps", "8"]) == 2
    assert "trained for 2 steps where this sweep asks 4" in capsys.readouterr().err


def test_cli_optuna_trials(tmp_path, capsys):
    pytest.importorskip("optuna", reason="the optuna search needs the search extra (.ci/run installs it)")
    out = tmp_path / "sweep"
    argv = [*SMALL, "--metrics", "flops", "--accuracy", "smoke", "--search", "optuna", "--trials", "3", "--steps",
            "2", "--out", str(out), "--no-report", "--no-references"]  # fmt: skip
    assert main(argv) == 0
    recs = read_records(out / "accuracy" / "optuna")
    assert 1 <= len({r["case_id"] for r in recs}) <= 3
    assert main([*argv, "--trials", "4", "--resume"]) == 0  # the trained schedules are replayed, one more trial
    assert len({r["case_id"] for r in read_records(out / "accuracy" / "optuna")}) <= 4


def test_optuna_missing_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    argv = [*SMALL, "--accuracy", "smoke", "--search", "optuna", "--trials", "2", "--out", str(tmp_path / "s")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vptbench[search]" in err[0]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--search", "halving"], "--accuracy"),
        (["--search", "nope"], "nope"),
        (["--keep", "2/1"], "--keep"),
        (["--objectives", "mpjpe,flops"], "--accuracy"),
        (["--objectives", "flops,memory"], "memory"),
        (["--accuracy", "smoke", "--objectives", "mpjpe"], "two or more"),
        (["--blocks", "9"], "--blocks 9"),
        (["--pruners", "tpx"], "tpx"),
        (["--accuracy", "huge"], "huge"),
        (["--budget-ms", "-1"], "budget"),
        (["--flops-counter", "thop"], "thop"),
        (["--resume"], "--out"),
    ],
)
def test_bad_input_exits_2_with_one_line(extra, needle, capsys):
    assert main([*SMALL, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "Traceback" not in err[0]


def test_candidate_properties():
    c = Candidate(Case("mixste", "hierarchical", frames=27, size="tiny", schedule="2:9,5:3", pruner="tps",
                       recoverer="tri").resolve(), ("1/3", "1/9"))  # fmt: skip
    assert c.stages == [(2, 9), (5, 3)] and c.first_block == 2
    assert Candidate(Case("mixste", frames=27, size="tiny").resolve(), reference="rectangle").first_block is None


def test_runtime_with_accuracy_is_one_line_exit_2(capsys):
    from bench import cli

    code = cli.main(["sweep", "mixste", "--size", "tiny", "--frames", "27", "--stages", "1", "--keep", "1/3",
                     "--runtime", "onnxruntime", "--accuracy", "smoke", "--no-report"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert "--runtime onnxruntime with --accuracy" in err[-1]


def test_front_figure_draws_the_front_rings_in_the_members_marker_and_latency_cis():
    """One point on the front: its staircase is still drawn (to the data's edges), its ring is its own square (not
    the grey circle the legend calls 'rectangle'), and latencies carry their 95 % CI."""
    from matplotlib.markers import MarkerStyle

    from bench.sweep.plots import front_figure

    table = pd.DataFrame({
        "stages": [0, 1, 1, 2], "variant": ["rectangle", "single", "single", "hierarchical"],
        "reference": ["rectangle", "", "", ""], "keep": ["", "1/9", "1/3", "1/3,1/9"],
        "gflops_paper": [0.126, 0.014, 0.042, 0.05], "latency_ms": [35.0, 10.0, 12.0, 11.0],
        "latency_ci_low_ms": [34.0, 9.0, 11.5, float("nan")], "latency_ci_high_ms": [36.0, 11.0, 13.0, float("nan")],
        "mpjpe_mm": [float("nan")] * 4,
    })  # fmt: skip
    table["on_front"] = [False, True, False, False]
    fig = front_figure(table, ["gflops_paper", "latency_ms"], "t")
    ax = fig.axes[0]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "Pareto front"]
    assert len(line.get_xdata()) >= 3 and max(line.get_xdata()) == pytest.approx(0.126)  # to the data's right edge
    rings = [c for c in ax.collections if len(c.get_offsets()) == 1 and (c.get_offsets()[0] == [0.014, 10.0]).all()
             and not len(c.get_facecolors())]  # fmt: skip
    square = MarkerStyle("s").get_path().transformed(MarkerStyle("s").get_transform())
    assert rings and len(rings[-1].get_paths()[0].vertices) == len(square.vertices)
    whiskers = [c for c in ax.collections if type(c).__name__ == "LineCollection" and len(c.get_segments())]
    spans = sorted(round(abs(s[1][1] - s[0][1]), 6) for c in whiskers for s in c.get_segments())
    assert 2.0 in spans and 1.5 in spans  # the rectangle's and 0:3's CIs (the others have none, or hierarchical NaN)


def test_sweep_out_writes_its_html_report_next_to_it_and_warns_about_unstable_latencies(tmp_path, capsys,
                                                                                          monkeypatch):  # fmt: skip
    """SPEC section 10's rule: a sweep in D (not under results/) reports to D/report/, with an index.html page."""
    warned: list[int] = []
    monkeypatch.setattr("bench.commands.sweep.warn_unstable", lambda recs: warned.append(len(recs)))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "sweep"
    argv = ["sweep", "mixste", "--size", "tiny", "--frames", "9", "--stages", "1", "--blocks", "1", "--keep", "1/3",
            "--executor", "inline", "--no-references", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    page = out / "report" / "index.html"
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"report: {page}"
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "Pareto front" in html and "data:image/png;base64," in html
    assert "<table>" in html and "1:3" in html  # the front table, its schedule
    assert (out / "report" / "index.md").is_file() and not (tmp_path / "reports").exists()
    assert warned == [len(read_records(out))]  # the end-of-run line on unstable timings, as run prints it
