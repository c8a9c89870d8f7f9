"""The regression gate: exact counts, memory ceilings, same-run speed-up ratios, missing cases, bad files."""

import copy
import json

import pytest

from bench.analysis.gate import Rules, compare, format_result, load_rules
from bench.cli import main
from bench.core.case import Case
from bench.core.errors import UsageError
from bench.core.results import failure, record


def _run(scale_time: float = 1.0, speedup: float = 2.0) -> list[dict]:
    """A small record set: two backbones x rectangle/single, with params, FLOPs, memory and latency."""
    recs = []
    for backbone in ("mixste", "motionbert"):
        for variant in ("rectangle", "single"):
            c = Case(backbone, variant, frames=27, size="tiny")
            c = c.resolve() if backbone == "mixste" else c
            pruned = variant != "rectangle"
            recs += [
                record("base", c, "params", 1000 + 10 * pruned),
                record("base", c, "flops", 2.0 / (1.6 if pruned else 1.0), method="paper"),
                record("base", c, "flops", 2.2 / (1.6 if pruned else 1.0), method="fvcore"),
                record("base", c, "peak_rss", 500.0, phase="inference"),
                record("base", c, "latency", scale_time * (10.0 / speedup if pruned else 10.0), method="timer"),
            ]
    return recs


def _set(recs, case_sub, metric, factor, method=None):
    out = copy.deepcopy(recs)
    hit = 0
    for r in out:
        if case_sub in r["case_id"] and r["metric"] == metric and (method is None or r["method"] == method):
            r["value"] *= factor
            hit += 1
    assert hit, "the test changed nothing"
    return out


def test_a_run_gated_against_itself_passes():
    recs = _run()
    result = compare(recs, recs)
    assert result.passed and not result.failures
    # params + 2 flops + memory per case (4 cases), plus one speed-up per pruned case (2)
    assert len(result.comparisons) == 4 * 4 + 2


def test_flops_raised_one_percent_fails():
    result = compare(_run(), _set(_run(), "mixste/single", "flops", 1.01, method="paper"))
    assert not result.passed
    [f] = result.failures
    assert f.metric == "flops[paper]" and f.change == pytest.approx(0.01)
    assert "flops[paper]" in format_result(result) and "+1.00%" in format_result(result)


def test_a_changed_parameter_count_prints_as_whole_numbers_with_separators():
    result = compare(_run(), _set(_run(), "mixste/single", "params", 2.0))
    [f] = result.failures
    assert f.metric == "params"
    row = next(line for line in format_result(result).splitlines() if "params" in line)
    assert "1,010" in row and "2,020" in row and "1010" not in row


def test_flops_lowered_also_fails_because_counts_are_exact():
    assert not compare(_run(), _set(_run(), "motionbert/rectangle", "flops", 0.99)).passed


def test_a_speedup_down_30_percent_fails():
    result = compare(_run(speedup=2.0), _run(speedup=1.4))
    assert not result.passed
    assert {f.metric for f in result.failures} == {"speedup[latency]"}
    assert all(f.change == pytest.approx(-0.3) for f in result.failures)


def test_a_uniformly_slower_machine_passes():
    assert compare(_run(), _run(scale_time=3.7)).passed


def test_memory_may_shrink_but_not_grow_past_the_tolerance():
    assert compare(_run(), _set(_run(), "/", "peak_rss", 0.5)).passed
    assert compare(_run(), _set(_run(), "/", "peak_rss", 1.2)).passed
    result = compare(_run(), _set(_run(), "mixste/rectangle", "peak_rss", 1.3))
    assert [f.metric for f in result.failures] == ["peak_rss[inference]"]


def test_missing_and_new_cases_are_reported():
    recs = _run()
    dropped = [r for r in recs if "motionbert/single" not in r["case_id"]]
    result = compare(recs, dropped)
    assert not result.passed and result.missing == [r["case_id"] for r in recs if "motionbert/single" in r["case_id"]][:1]
    assert "case missing from the current run" in format_result(result)
    assert compare(recs, dropped, Rules(missing="warn")).passed
    grown = compare(dropped, recs)
    assert grown.passed and len(grown.new) == 1


def test_a_case_that_now_fails_is_a_regression():
    recs = _run()
    cur = [
        failure("cur", Case("mixste", "single", frames=27, size="tiny").resolve(), "flops", "RuntimeError: boom")
        if r["metric"] == "flops" and "mixste/single" in r["case_id"] else r
        for r in recs
    ]
    assert any(f.note.startswith("now error") for f in compare(recs, cur).failures)


def test_rules_file_overrides_tolerances_per_metric_and_backbone(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('missing = "warn"\n[tolerances]\npeak_rss = 0.5\n[backbones.motionbert]\nspeedup = 0.4\n')
    r = load_rules(rules)
    assert r.tolerance("peak_rss", "mixste") == 0.5
    assert r.tolerance("speedup", "motionbert") == 0.4 and r.tolerance("speedup", "mixste") == 0.25
    assert compare(_run(), _set(_run(), "/", "peak_rss", 1.4), r).passed
    result = compare(_run(speedup=2.0), _run(speedup=1.4), r)
    assert {f.case_id.split("/")[0] for f in result.failures} == {"mixste"}


@pytest.mark.parametrize(
    "text, message",
    [
        ("[tolerances]\nspeed = 1\n", "unknown metric 'speed'"),
        ("[tolerances]\nflops = -1\n", "non-negative"),
        ("missing = 'maybe'\n", "choose from fail, warn"),
        ("[tolerances\n", "malformed TOML"),
        ("[limits]\n", "unknown section 'limits'"),
        ("unstable = 'ignore'\n", "choose from warn, fail"),
        ("[tolerances]\nspeedup = nan\n", "finite non-negative number, got nan"),
        ("[tolerances]\nspeedup = inf\n", "finite non-negative number, got inf"),
    ],
)
def test_bad_rules_files_are_usage_errors(tmp_path, text, message):
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        load_rules(path)


def _paired(value: float, low: float, high: float, stable: bool = True, backbone: str = "mixste") -> list[dict]:
    """A run with one paired speedup record (and the case's params, so the case is present)."""
    c = Case(backbone, "single", frames=27, size="tiny")
    reason = "" if stable else "CPU busy with other processes (1.40 cores)"
    return [
        record("base", c, "params", 1010),
        record("base", c, "speedup", value, method="paired", ci_low=low, ci_high=high, n=12, stable=stable,
               unstable_reason=reason),
    ]  # fmt: skip


def test_a_paired_speedup_regresses_only_when_its_whole_ci_is_below_the_band():
    base = _paired(2.0, 1.95, 2.05)
    # 25 % band: the floor is 1.5. A median of 1.4 whose CI reaches 1.55 is noise, not a regression.
    noisy = compare(base, _paired(1.4, 1.2, 1.55))
    assert noisy.passed and [c.metric for c in noisy.comparisons if c.metric.startswith("speedup")] == [
        "speedup[paired]"
    ]
    low = compare(base, _paired(1.4, 1.35, 1.45))
    assert not low.passed and low.failures[0].metric == "speedup[paired]" and "below 1.5" in low.failures[0].note
    assert compare(base, _paired(2.6, 2.5, 2.7)).passed  # faster is fine


def test_paired_records_replace_the_latency_ratio():
    recs = _run()
    for r in _paired(2.0, 1.9, 2.1):
        if r["metric"] == "speedup":
            r["case_id"] = next(x["case_id"] for x in recs if x["variant"] == "single" and x["backbone"] == "mixste")
            recs.append(r)
    metrics = sorted(c.metric for c in compare(recs, recs).comparisons if c.metric.startswith("speedup"))
    assert metrics == ["speedup[latency]", "speedup[paired]"]  # mixste paired; motionbert by latency


def test_an_unstable_speedup_is_a_warning_and_the_rules_can_make_it_fail(tmp_path):
    base, cur = _paired(2.0, 1.95, 2.05), _paired(2.0, 1.0, 3.0, stable=False)
    result = compare(base, cur)
    assert result.passed and len(result.unstable) == 1 and "busy" in result.unstable[0]
    text = format_result(result)
    assert "warning: unstable figure" in text and "1 unstable" in text
    rules = tmp_path / "rules.toml"
    rules.write_text('unstable = "fail"\n')
    strict = compare(base, cur, load_rules(rules))
    assert not strict.passed and "unstable" in strict.failures[0].note


def _write(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_cli_exit_codes(tmp_path, capsys):
    base = _write(tmp_path / "base.jsonl", _run())
    (tmp_path / "cur").mkdir()
    _write(tmp_path / "cur" / "records.jsonl", _run(scale_time=2.0))
    assert main(["gate", "--baseline", str(base), "--current", str(tmp_path / "cur")]) == 0
    assert "gate PASS" in capsys.readouterr().out
    _write(tmp_path / "cur" / "records.jsonl", _set(_run(), "mixste/single", "params", 1.5))
    assert main(["gate", "--baseline", str(base), "--current", str(tmp_path / "cur")]) == 1
    assert "gate FAIL" in capsys.readouterr().out


def test_a_malformed_baseline_exits_2_naming_the_line(tmp_path, capsys):
    lines = [json.dumps(r) for r in _run()]
    lines[2] = '{"case_id": "x", "truncated'
    base = tmp_path / "base.jsonl"
    base.write_text("\n".join(lines) + "\n")
    assert main(["gate", "--baseline", str(base), "--current", str(base)]) == 2
    err = capsys.readouterr().err
    assert "base.jsonl:3:" in err and err.count("\n") == 1


def test_runs_of_different_presets_are_a_usage_error_with_a_hint(tmp_path, capsys):
    base = _write(tmp_path / "base.jsonl", _run())
    other = [dict(r, case_id=r["case_id"].replace("T27", "T243"), frames=243) for r in _run()]
    (tmp_path / "cur").mkdir()
    _write(tmp_path / "cur" / "records.jsonl", other)
    (tmp_path / "cur" / "meta.json").write_text(json.dumps({"preset": "paper"}))
    assert main(["gate", "--baseline", str(base), "--current", str(tmp_path / "cur")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "share no case" in err and "preset paper" in err and "T=27" in err
    assert "vptbench run --preset" in err


def test_a_measurement_missing_from_a_case_the_run_has_fails(tmp_path, capsys):
    recs = _run()
    gone = next(r for r in recs if r["metric"] == "flops" and r["method"] == "paper" and "mixste/single" in r["case_id"])
    cur = [r for r in recs if r is not gone]
    result = compare(recs, cur)
    assert not result.passed and result.missing_metrics == [f"{gone['case_id']} flops[paper]"]
    assert "1 missing" in format_result(result) and "measurement missing from the current run" in format_result(result)
    assert compare(recs, cur, Rules(missing="warn")).passed


def test_rules_naming_an_unknown_backbone_and_unreadable_rules_are_refused(tmp_path, capsys):
    base = _write(tmp_path / "base.jsonl", _run())
    rules = tmp_path / "rules.toml"
    rules.write_text("[backbones.mixtse]\nspeedup = 0.4\n")
    argv = ["gate", "--baseline", str(base), "--current", str(base), "--rules"]
    for path, message in ((rules, "unknown backbone 'mixtse'"), (tmp_path, "is a directory")):
        assert main([*argv, str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    rules.write_bytes(b"[tolerances]\nspeedup = 0.3 # \xff\xfe\n")
    assert main([*argv, str(rules)]) == 2
    assert "not UTF-8" in capsys.readouterr().err
