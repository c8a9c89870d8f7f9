"""`vptbench list / profile / run`: output, and exit code 2 with one line for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import backbones
from bench import cli
from bench.core import results

ROOT = Path(__file__).resolve().parents[1]


def test_list_json_describes_every_backbone(capsys):
    assert cli.main(["list", "--json"]) == 0
    info = {b["name"]: b for b in json.loads(capsys.readouterr().out)}
    assert sorted(info) == backbones.names()
    for b in info.values():
        assert set(b["variants"]) == set(backbones.VARIANTS)
        assert b["default_size"] in b["sizes"]
        for variant, v in b["variants"].items():
            profile = v["token_profile"]
            assert profile[0] <= b["frames"] and profile == sorted(profile, reverse=True)
            distinct = len(set(profile))
            # the hourglass: rectangle flat, single one drop, hierarchical several
            assert distinct == 1 if variant == "rectangle" else distinct >= 2
            assert (variant == "rectangle") == (v["schedule"] == "")
    mixste = info["mixste"]["variants"]
    assert mixste["single"]["schedule"] == "3:81"  # HoT's configuration, resolved at T = 243
    assert mixste["single"]["params"] > mixste["rectangle"]["params"]  # + TRA and the kept-token embedding
    assert mixste["hierarchical"]["params"] == mixste["rectangle"]["params"]  # tps + tri: parameter-free


def test_list_table(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in backbones.names():
        assert name in out
    assert "243x3 81x5" in out  # MixSTE single's hourglass, compactly
    for name in backbones.pruners() + backbones.recoverers():  # the registries, built-in and registered
        assert f"\n{name} " in out


def test_profile_json_prints_only_the_records(capsys):
    argv = ["profile", "mixste", "--variant", "hierarchical", "--size", "tiny", "--frames", "27",
            "--metrics", "params,flops,latency", "--json"]  # fmt: skip
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    recs = json.loads(captured.out)  # stdout is one JSON list and nothing else
    assert all(set(results.RECORD_FIELDS) <= set(r) for r in recs)
    by = {(r["metric"], r["method"]): r for r in recs if r["metric"] != "flops_block"}
    assert {m for m, _ in by} == {"params", "flops", "latency", "latency_p10", "latency_p90", "fps", "clips_per_s"}
    assert {meth for m, meth in by if m == "flops"} == {"fvcore", "torch", "paper"}
    latency = by[("latency", "timeit")]
    assert latency["threads"] == 1 and len(latency["samples"]) >= 1
    assert by[("fps", "-")]["value"] == pytest.approx(27 * 1e3 / latency["value"])  # seq2seq: T frames out
    blocks = [r for r in recs if r["metric"] == "flops_block"]
    assert [r["tokens"] for r in blocks] == [27, 27, 9, 9, 9, 3, 3, 3]
    # the hourglass in the FLOPs: blocks with fewer tokens cost less
    assert blocks[0]["value"] > blocks[2]["value"] > blocks[5]["value"] > 0


def test_profile_records_timing_statistics_and_warns_about_unstable_ones(capsys):
    argv = ["profile", "mixste", "--size", "tiny", "--frames", "9", "--metrics", "latency", "--min-time", "0.05",
            "--json"]  # fmt: skip
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    (lat,) = [r for r in json.loads(captured.out) if r["metric"] == "latency"]
    assert lat["n"] == len(lat["samples"]) and lat["ci_low"] <= lat["value"] <= lat["ci_high"]
    assert isinstance(lat["stable"], bool) and "other_cores" in lat and "busy" in lat
    assert ("timing unstable" in captured.err) is (not lat["stable"])


def test_min_time_must_be_positive(capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse's own errors exit from inside parse_args
        cli.main(["profile", "mixste", "--min-time", "0"])
    assert exit_info.value.code == 2
    assert "--min-time" in capsys.readouterr().err


def test_profile_table(capsys):
    assert cli.main(["profile", "mixste", "--size", "tiny", "--frames", "9", "--metrics", "params,flops"]) == 0
    out = capsys.readouterr().out
    assert "params" in out and "MFLOPs per block (fvcore)" in out and "mixste/rectangle/T9" in out  # tiny: MFLOPs


def test_the_run_line_counts_skipped_records_apart_from_failed_ones(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--preset", "smoke", "--backbones", "mixste", "--variants", "rectangle", "--frames", "9",
            "--metrics", "params,memory", "--runtime", "compile", "--out", str(out), "--executor", "inline",
            "--no-report"]  # fmt: skip
    assert cli.main(argv) == 0  # memory does not apply to a compile case: skipped, not failed
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line == f"1 case(s) measured, 0 already done, 0 record(s) failed in 0 case(s), 1 skipped (the records say why): {out}"


def test_run_writes_records_meta_and_report(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the report goes to ./reports/<run_id>
    out = tmp_path / "run"
    argv = ["run", "--preset", "smoke", "--backbones", "mixste", "--variants", "rectangle,single",
            "--metrics", "params,flops", "--out", str(out), "--executor", "inline"]  # fmt: skip
    assert cli.main(argv) == 0
    stdout = capsys.readouterr().out
    recs = results.read_records(out)
    assert {r["variant"] for r in recs} == {"rectangle", "single"}
    assert all(r["status"] == "ok" for r in recs)
    meta = results.read_meta(out)
    assert meta["preset"] == "smoke" and meta["end_time"] and meta["settings"]["repeats"] >= 1
    assert "2 case(s) measured, 0 already done, 0 record(s) failed in 0 case(s): " in stdout
    try:
        import bench.analysis.report  # noqa: F401
    except ImportError:
        return
    last = stdout.strip().splitlines()[-1]  # the last line names the page to open
    assert last == f"report: {out / 'report' / 'index.html'}" and (out / "report" / "index.html").is_file()
    assert not (tmp_path / "reports").exists()  # with --out, the report lies next to its results


def test_profile_prints_counts_with_separators(capsys):
    assert cli.main(["profile", "mixste", "--metrics", "params"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("params"))
    assert row.split()[1] == "33,783,811"


def test_version_names_the_package_torch_and_fvcore(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["vptbench", "torch", "fvcore"]
    assert lines[1] == f"torch {torch.__version__}"


def test_every_option_has_help_and_its_default():
    import argparse

    parser = cli.build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subs.choices.items():
        for action in sub._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS or action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings[0]} has no help"
            if action.default not in (None, False, [], ()):
                text = sub.formatter_class(name)._get_help_string(action)
                assert "default" in text, f"{name} {action.option_strings[0]} does not show its default"


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "not-a-dir"
    path.write_text("x")
    return path


@pytest.fixture
def used_run(tmp_path):
    run = tmp_path / "used"
    run.mkdir()
    (run / "records.jsonl").write_text('{"case_id": "x"}\n')
    return run


BAD_INPUTS = [
    (["profile", "nosuch"], "unknown backbone 'nosuch'"),
    (["profile", "mixste", "--variant", "square"], "unknown variant 'square'"),
    (["profile", "mixste", "--variant", "single", "--pruner", "tpx"], "unknown pruner 'tpx'"),
    (["profile", "mixste", "--variant", "single", "--recoverer", "trx"], "unknown recoverer 'trx'"),
    (["profile", "mixste", "--variant", "single", "--schedule", "3-81"], "bad schedule '3-81'"),
    (["profile", "mixste", "--variant", "single", "--schedule", "3:300"], "bad schedule '3:300'"),
    (["profile", "mixste", "--variant", "single", "--schedule", "12:81", "--size", "tiny"], "outside the depth"),
    (["profile", "mixste", "--variant", "hierarchical", "--schedule", "3:81"], "two or more stages"),
    (["profile", "mixste", "--variant", "hierarchical", "--schedule", "12:3", "--size", "tiny"],
     "schedule block 12 is outside the depth 8 (blocks 0..7)"),  # the range first, then the stage count
    (["profile", "mixste", "--frames", "1"], "mixste cannot take 1 frames"),
    (["profile", "mixste", "--size", "huge"], "unknown size 'huge'"),
    (["profile", "mixste", "--device", "tpu"], "unknown device 'tpu'"),
    (["run", "--backbones", "nosuch"], "unknown backbone 'nosuch'"),
    (["run", "--variants", "square"], "unknown variant 'square'"),
    (["run", "--preset", "fast"], "unknown preset 'fast'"),
    (["run", "--backbones", "mixste", "--frames", "1"], "no selected backbone can take 1 frames"),
    (["run", "--shard", "3/2"], "--shard '3/2'"),
    (["run", "--shard", "0/2"], "--shard '0/2'"),
    (["run", "--shard", "half"], "--shard 'half'"),
    (["run", "--resume"], "--resume needs --out"),
    (["run", "--metrics", "speed"], "unknown metric 'speed'"),
    (["profile", "mixste", "--variant", "hierarchical", "--schedule", "2:81:tpc,5:27:tpx"], "unknown pruner 'tpx'"),
    (["profile", "mixste", "--variant", "hierarchical", "--schedule", "2:81:tpc:x"], "BLOCK:KEEP[:PRUNER]"),
    (["run", "--pruners", "tpc,tpx"], "unknown pruner 'tpx'; choose from tps, tpc, tpa, tpmo, tome"),
    (["accuracy", "--recoverers", "trx"], "unknown recoverer 'trx'"),
    (["list", "--plugin", "no_such_plugin_module"], "plugin 'no_such_plugin_module'"),
    (["profile", "mixste", "--frames", "0"], "frames must be >= 1, got 0"),
    (["accuracy", "--frames", "0"], "--frames must be >= 1, got 0"),
    (["run", "--workers", "0"], "--workers must be >= 1, got 0"),
    (["accuracy", "--workers", "0"], "--workers must be >= 1, got 0"),
    (["profile", "mhformer", "--variant", "single", "--recoverer", "tri"], "seq2frame"),
    (["profile", "mixste", "--variant", "single", "--schedule", "3:1.0"], "has a decimal point, so it is a ratio"),
    (["profile", "mixste", "--variant", "single", "--schedule", "3:1.5"], "has a decimal point, so it is a ratio"),
    (["profile", "mixste", "--variant", "single", "--schedule=-1:9"], "BLOCK must be >= 0"),
    (["run", "--extend"], "--extend adds cases to a run: it needs --resume"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse's own errors exit from inside parse_args
        raise SystemExit(cli.main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert message in err
    assert "Traceback" not in err


def test_unwritable_or_used_out_exits_2(a_file, used_run, capsys):
    for out, message in ((a_file / "sub", "cannot write"), (a_file, "is a file"), (used_run, "pass --resume")):
        assert cli.main(["run", "--backbones", "mixste", "--out", str(out), "--no-report"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
@pytest.mark.parametrize("command", [["profile", "mixste"], ["run"]])
def test_cuda_without_cuda_exits_2(command, capsys):
    assert cli.main([*command, "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["profile", "nosuch", "--json"], "unknown backbone"), (["run", "--shard", "9/4"], "--shard '9/4'")],
)
def test_bad_input_in_a_real_process(argv, message):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "bench", *argv], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert done.stdout == ""
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


# The fewest arguments each command's parser accepts (required options and positionals).
MINIMAL_ARGS = {
    "list": [], "profile": ["mixste"], "stream": ["mixste"], "run": [], "accuracy": [], "convert": ["ckpt.pth", "--out", "x.pth"],
    "sweep": ["mixste"], "report": ["results/x"], "gate": ["--baseline", "b", "--current", "c"],
    "merge": ["a", "--out", "m"], "compare": ["a", "b"], "doctor": [], "history": ["a"],
    "export": ["a", "--format", "bencher", "--out", "f.json"],
}  # fmt: skip


@pytest.mark.parametrize("command", cli.COMMANDS)
def test_unrecognized_arguments_are_reported_by_the_command(command, capsys):
    """'vptbench compare: error: unrecognized arguments: --metric latncy', naming the command whose options to check."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, *MINIMAL_ARGS[command], "--metric-typo=latncy"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == f"vptbench {command}: error: unrecognized arguments: --metric-typo=latncy", err
    with pytest.raises(SystemExit):
        cli.main(["--no-such-flag", "list"])  # before the command: the top-level parser's
    assert capsys.readouterr().err.startswith("vptbench: error: unrecognized arguments: --no-such-flag")


@pytest.mark.parametrize("command", [["run"], ["accuracy"], ["sweep", "mixste"]])
def test_resume_of_a_missing_run_exits_2_at_once(command, tmp_path):
    """Resuming nothing is a mistake: one line, exit 2, in a real process within 2 s (not a fresh 5-minute run)."""
    missing = tmp_path / "no-such-run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bench", *command, "--resume", "--out", str(missing)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)  # fmt: skip
    elapsed = time.perf_counter() - start
    assert done.returncode == 2
    assert f"{missing}: no {'sweep' if 'sweep' in command else 'run'} to resume" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stdout == ""
    assert not missing.exists()
    assert elapsed < 2.0, f"{elapsed:.1f} s"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main([*command, "--resume", "--out", str(empty)]) == 2  # a directory no run has written to


def test_profile_shows_a_single_sample_without_an_interval():
    from bench.commands.profile import format_records
    from bench.core.case import Case

    c = Case("mixste", "rectangle", frames=27, size="tiny").resolve()
    old = results.record("p", c, "train_step", 8.07, method="timeit", n=1, ci_low=8.07, ci_high=8.07, stable=False,
                         unstable_reason="one sample: no interval")  # fmt: skip
    new = results.record("p", c, "latency", 5.0, method="timeit", n=1, ci_low=None, ci_high=None, stable=False,
                         unstable_reason="one sample: no interval")  # fmt: skip
    text = format_records(c, [old, new])
    assert "8.07 (1 sample)" in text and "5.00 (1 sample)" in text and "[" not in text.split("\n", 3)[-1]
