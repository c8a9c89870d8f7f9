"""`vptbench compare`: runs side by side, ratios with CIs from the timing records, changes beyond noise marked."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from bench.analysis.compare import compare_runs
from bench.cli import main
from bench.core.case import Case
from bench.core.results import record


def _run(latency: float, ci: float | None, params: int = 1000, rss: float = 500.0, extra_case: bool = False) -> list[dict]:
    recs = []
    variants = ("rectangle", "single", "hierarchical") if extra_case else ("rectangle", "single")
    for variant in variants:
        c = Case("mixste", variant, frames=27, size="tiny")
        timing = {} if ci is None else {"n": 20, "ci_low": latency * (1 - ci), "ci_high": latency * (1 + ci), "stable": True}
        recs += [
            record("r", c, "params", params + (variant != "rectangle")),
            record("r", c, "flops", 2.0, method="paper"),
            record("r", c, "latency", latency, method="timeit", **timing),
            record("r", c, "peak_rss", rss, method="process", phase="inference"),
        ]
    return recs


def _write(run: Path, recs: list[dict]) -> Path:
    run.mkdir(parents=True)
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return run


def test_ratios_carry_the_ci_and_only_changes_beyond_noise_are_marked():
    rows, only = compare_runs([_run(10.0, 0.02), _run(10.1, 0.02), _run(14.0, 0.02, params=1001)])
    by = {(r.case_id.split("/")[1], r.metric): r for r in rows}
    lat = by[("rectangle", "latency")]
    ratio, low, high = lat.ratios[0]
    assert ratio == 1.01 and low == 10.1 * 0.98 / 10.2 and high == 10.1 * 1.02 / 9.8
    assert lat.beyond_noise == [False, True] and lat.marks == ["", "*"]  # +1 % inside the CIs; +40 % outside
    assert by[("rectangle", "params")].beyond_noise == [False, True]  # counts: any change
    assert by[("rectangle", "peak_rss[process,inference]")].beyond_noise == [False, False]
    assert only == [set(), set(), set()]


def test_run_to_run_noise_is_not_a_change():
    """The issue's two smoke runs of one code: a latency 0.834x [0.791, 0.895] apart and a memory figure at 0.949x
    differ by more than their within-run CIs, but not beyond the minimum relevant change: no star."""
    a, b = _run(12.6, None, rss=9.0), _run(10.5, None, rss=9.0 * 0.949)
    for recs, (low, high) in ((a, (11.9, 13.1)), (b, (10.3, 10.7))):
        for r in recs:
            if r["metric"] == "latency":
                r.update(n=40, ci_low=low, ci_high=high, stable=True)
    rows, _ = compare_runs([a, b])
    lat = next(r for r in rows if r.metric == "latency")
    ratio, low, high = lat.ratios[0]
    assert high < 1 and lat.marks == [""]  # the CIs leave out 1, yet it is no change
    assert next(r for r in rows if r.metric.startswith("peak_rss")).marks == [""]


def test_a_change_measured_unstable_is_marked_to_confirm_not_starred():
    a, b = _run(10.0, 0.02), _run(20.0, 0.02)  # 2x, far outside the band
    for r in b:
        if r["metric"] == "latency":
            r.update(stable=False, unstable_reason="CPU busy with other processes (1.30 cores)")
    lat = next(r for r in compare_runs([a, b])[0] if r.metric == "latency")
    assert lat.marks == ["?"] and lat.beyond_noise == [False]


def test_timings_without_cis_are_never_called_a_change():
    rows, _ = compare_runs([_run(10.0, None), _run(20.0, None)])
    lat = next(r for r in rows if r.metric == "latency")
    assert lat.ratios[0] == (2.0, None, None) and lat.beyond_noise == [False]


def test_cli_prints_text_markdown_and_csv_and_exits_0(tmp_path, capsys):
    a = _write(tmp_path / "a", _run(10.0, 0.02, extra_case=True))
    b = _write(tmp_path / "b", _run(14.0, 0.02, rss=650.0))
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "1.400× [" in out and "] *" in out and "only in a: 1 case(s)" in out
    assert "* changed: the ratio's interval from both runs' 95 % CIs lies wholly outside [0.80, 1.25]" in out
    assert "? outside it, but a timing was unstable in a run: rerun both to confirm" in out  # what the marks mean
    assert main(["compare", str(a), str(b), "--markdown"]) == 0
    md = capsys.readouterr().out
    assert "| case" in md and "**1.400× [" in md and "**1.300×** *" in md  # memory +30 %: beyond the band
    assert main(["compare", str(a), str(b / "records.jsonl"), "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    params = next(r for r in rows if r["metric"] == "params" and "/single/" in r["case_id"])
    assert params["value_a"] == "1001" and params["ratio_b"] == "1.0" and params["beyond_noise_b"] == "False"
    lat = next(r for r in rows if r["metric"] == "latency" and "/single/" in r["case_id"])
    assert lat["beyond_noise_b"] == "True" and lat["mark_b"] == "*"


def test_cli_bad_input_exits_2(tmp_path, capsys):
    a = _write(tmp_path / "a", _run(10.0, 0.02))
    assert main(["compare", str(a)]) == 2
    assert "at least two runs" in capsys.readouterr().err
    assert main(["compare", str(a), str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


def test_a_single_sample_has_no_interval_and_is_never_called_a_change(tmp_path, capsys):
    """n = 1: no interval in the value ('12.0 ms (1 sample)') nor in the ratio, old records (ci_low == ci_high) too."""
    a, b = _run(10.0, None), _run(12.0, None)
    for recs in (a, b):
        for r in recs:
            if r["metric"] == "latency":
                r.update(n=1, ci_low=r["value"], ci_high=r["value"], stable=False)
    rows, _ = compare_runs([a, b])
    lat = next(r for r in rows if r.metric == "latency")
    assert lat.ratios[0] == (1.2, None, None) and lat.beyond_noise == [False]
    assert main(["compare", str(_write(tmp_path / "a", a)), str(_write(tmp_path / "b", b))]) == 0
    out = capsys.readouterr().out
    assert "12.0 ms (1 sample)" in out and "[12.0, 12.0]" not in out
