"""The docs' "Your own backbone" and "Your own pruner" files (docs/extending.md), run exactly as written.

The README points there; a user copies these files as the page shows them, so the test takes them
from the page itself.
"""

import json
import re
import runpy
import sys
from pathlib import Path

import pytest

import backbones
from bench import cli
from bench.core import plugins
from bench.core.results import read_records

EXTENDING = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def docs_python(heading: str) -> str:
    """The first python block after ``heading`` in docs/extending.md."""
    text = EXTENDING.read_text(encoding="utf-8")
    section = text[text.index(f"\n{heading}\n") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def user_files(tmp_path, monkeypatch):
    """mynet.py and my_pruner.py from the docs in a folder of their own; registrations undone after."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "mynet.py").write_text(docs_python("## Your own backbone"))
    (folder / "my_pruner.py").write_text(docs_python("## Your own pruner"))
    monkeypatch.setattr(plugins, "_LOADED", {})
    path = list(sys.path)
    yield folder
    backbones.unregister("mynet")
    backbones.unregister_pruner("energy")
    backbones.unregister_recoverer("nearest")
    for module in ("mynet", "my_pruner"):
        sys.modules.pop(module, None)
    sys.path[:] = path


def test_docs_files_run_as_scripts(user_files, capsys):
    runpy.run_path(str(user_files / "mynet.py"), run_name="__main__")
    assert capsys.readouterr().out.strip() == "[27, 9, 9, 3] torch.Size([2, 27, 17, 3])"
    runpy.run_path(str(user_files / "my_pruner.py"), run_name="__main__")
    assert capsys.readouterr().out.strip() == "[27, 27, 9, 9, 9, 3, 3, 3] torch.Size([2, 27, 17, 3])"


def test_docs_pruner_as_a_plugin_runs_in_profile_and_in_local_workers(user_files, tmp_path, monkeypatch, capsys):
    elsewhere = tmp_path / "elsewhere"  # neither the repository nor the plugins' folder
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    pruner, net = str(user_files / "my_pruner.py"), str(user_files / "mynet.py")
    assert cli.main([
        "profile", "mixste", "--size", "tiny", "--frames", "27", "--variant", "hierarchical",
        "--schedule", "2:9:tpc,5:3:energy", "--recoverer", "nearest", "--metrics", "flops,memory", "--json",
        "--plugin", pruner,
    ]) == 0  # fmt: skip
    records = json.loads(capsys.readouterr().out)  # peak_rss comes from a fresh process: it imports the plugin too
    assert {r["metric"] for r in records} == {"flops", "flops_block", "peak_rss", "peak_mem_activations"}
    assert {(r["schedule"], r["pruner"], r["recoverer"], r["status"]) for r in records} == {
        ("2:9,5:3:energy", "tpc", "nearest", "ok")
    }
    # A fresh subprocess per case: it must import both plugins itself, from their folder.
    out = tmp_path / "run"
    assert cli.main([
        "run", "--preset", "smoke", "--backbones", "mynet", "--variants", "single", "--pruners", "energy",
        "--recoverers", "nearest", "--metrics", "latency", "--executor", "local", "--out", str(out), "--no-report",
        "--plugin", net, "--plugin", pruner,
    ]) == 0  # fmt: skip
    records = [r for r in read_records(out) if r["metric"] in ("latency", "fps")]
    assert len(records) == 2 and all(r["value"] > 0 for r in records)
    assert {(r["case_id"], r["status"]) for r in records} == {("mynet/single/T27/B1/tiny/2:9/energy+nearest/cpu/float32", "ok")}
    assert {p["module"] for p in json.loads((out / "meta.json").read_text())["plugins"]} == {"my_pruner", "mynet"}


def docs_command(heading: str, command: str) -> str:
    """The first ``command`` line (joined over its backslash continuations) of the bash block after ``heading``."""
    text = EXTENDING.read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text[text.index(f"\n{heading}\n") :], re.S).group(1)
    joined = block.replace("\\\n", " ")
    return next(line.strip() for line in joined.splitlines() if line.strip().startswith(command))


def test_docs_profile_command_prints_a_short_summary_without_profiler_noise(user_files):
    """The docs' own-pruner `profile` (default --metrics: all, breakdown included) fits a terminal: at most about
    30 lines of 120 columns, stdout and stderr together; no C++ profiler noise, no per-part flood."""
    import os
    import shlex
    import subprocess
    import textwrap

    command = docs_command("## Your own pruner", "vptbench profile")
    assert "--plugin my_pruner.py" in command and "--metrics" not in command  # the default: every metric group
    env = dict(os.environ, PYTHONPATH=str(EXTENDING.parents[1]), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "bench", *shlex.split(command)[1:]], cwd=user_files, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr
    for noise in ("profiler_start", "profiler_stop", "CPUAllocator", "Memory block of unknown size", "USDT"):
        assert noise not in done.stderr
    shown = [row for line in (done.stdout + done.stderr).splitlines() for row in textwrap.wrap(line, 120) or [""]]
    assert len(shown) <= 30, "\n".join(shown)
    out = done.stdout
    assert "time by part, forward" in out and "prune + recover" in out  # the breakdown, folded
    assert out.count("time_by_part") == 0 and "time_by_part records" not in done.stderr
    assert "MFLOPs per block (fvcore): blocks 0-1 at 27 tokens" in out  # the hourglass in a line
