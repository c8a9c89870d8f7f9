"""The allocator settings: applied in a process, recorded, refused where they cannot apply."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.core.errors import UsageError
from bench.measure import allocator

PROBE = ("import json, sys; from bench.measure import allocator; "
         "allocator.apply(sys.argv[1]); print(json.dumps(allocator.describe()))")  # fmt: skip


def probe(name: str, env: dict[str, str] | None = None) -> dict:
    import os

    out = subprocess.run([sys.executable, "-c", PROBE, name], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})})  # fmt: skip
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_tuned_sets_glibc_and_is_recorded():
    tuned = probe("tuned")
    assert tuned["allocator"] == "tuned" and "M_MMAP_MAX=0" in tuned["allocator_settings"]
    assert tuned["cpu_affinity"]
    system = probe("system")
    assert system["allocator"] == "system" and system["allocator_settings"].startswith("glibc ")


@pytest.mark.parametrize("name", ["tcmalloc", "jemalloc"])
def test_a_preloaded_allocator_is_recognised(name):
    try:
        env = allocator.environment(name)
    except UsageError as e:
        assert allocator.PACKAGES[name] in str(e)  # the message names the Debian package to install
        pytest.skip(f"{name} is not installed here: {e}")
    got = probe("tuned", env)  # tuned does nothing under another allocator
    assert got["allocator"] == name and got["allocator_settings"] == env["LD_PRELOAD"]


def test_bad_choices_are_one_line():
    with pytest.raises(UsageError, match="unknown allocator 'fast'; choose from tuned, system, tcmalloc, jemalloc"):
        allocator.check("fast")
    with pytest.raises(UsageError, match="fresh worker processes"):
        allocator.check("jemalloc", fresh_processes=False)
    allocator.check("tuned", fresh_processes=False)


def test_the_cli_refuses_an_allocator_it_cannot_give(tmp_path, capsys):
    from bench.cli import main

    assert main(["profile", "mixste", "--size", "tiny", "--frames", "27", "--metrics", "params",
                 "--allocator", "fast"]) == 2  # fmt: skip
    assert "unknown allocator 'fast'" in capsys.readouterr().err
    assert main(["run", "--preset", "smoke", "--backbones", "mixste", "--variants", "rectangle", "--metrics",
                 "params", "--executor", "inline", "--allocator", "jemalloc", "--out", str(tmp_path / "r")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("fresh worker processes" in err or "not found" in err)
    assert not (tmp_path / "r" / "records.jsonl").exists()


def test_the_local_executor_preloads_the_chosen_allocator(tmp_path):
    from bench.cli import main
    from bench.core.results import read_records

    try:
        allocator.check("jemalloc")
    except UsageError as e:
        pytest.skip(f"jemalloc is not installed here: {e}")
    out = tmp_path / "r"
    assert main(["run", "--preset", "smoke", "--backbones", "mixste", "--variants", "rectangle", "--metrics",
                 "latency", "--allocator", "jemalloc", "--out", str(out), "--no-report"]) == 0  # fmt: skip
    (lat,) = [r for r in read_records(out) if r["metric"] == "latency"]
    assert lat["allocator"] == "jemalloc" and lat["allocator_settings"].endswith("libjemalloc.so.2")


def test_run_says_whether_the_machine_is_fit_before_timing(tmp_path, capsys):
    from bench.cli import main

    assert main(["run", "--preset", "smoke", "--backbones", "mixste", "--variants", "rectangle", "--metrics",
                 "latency", "--executor", "inline", "--out", str(tmp_path / "r"), "--no-report"]) == 0  # fmt: skip
    doctor = [line for line in capsys.readouterr().err.splitlines() if line.startswith("doctor: ")]
    assert len(doctor) == 1 and ("fit for timing" in doctor[0])
