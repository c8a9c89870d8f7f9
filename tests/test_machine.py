"""`vptbench doctor`: its checks, and a verdict that changes when a CPU hog runs beside it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bench.cli import main
from bench.measure import load, machine, reference

HOG = "import time\nt = time.time()\nwhile time.time() - t < 60: pass\n"


def start_orphan_hog() -> int:
    """A busy-looping process that is not this one's descendant (its shell exits at once), so that it
    counts as another process, as it would on a user's machine; its pid."""
    out = subprocess.run(["sh", "-c", f'"{sys.executable}" -c "$0" >/dev/null 2>&1 & echo $!', HOG],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return int(out.stdout.strip())


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))


def test_doctor_prints_every_check_and_a_verdict(cache, capsys):
    assert main(["doctor", "--threads", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    names = [line.split()[1] for line in out if line[:2].strip() in ("ok", "!!", "--")]
    assert names == ["load", "reference", "frequency", "smt", "threads", "allocator"]
    assert out[-1].startswith(("fit for timing", "not fit for timing"))
    assert main(["doctor", "--threads", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {c["name"] for c in data["checks"]} == set(names) and isinstance(data["fit"], bool)


def test_doctor_rejects_bad_input(capsys):
    assert main(["doctor", "--threads", "0"]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err
    assert main(["doctor", "--allocator", "nope"]) == 0  # the allocator check fails and says why
    assert "unknown allocator 'nope'" in capsys.readouterr().out


def test_a_cpu_hog_changes_the_verdict_and_is_named(cache):
    quiet = machine.check_load(threads=1, window_s=0.5)
    if not quiet.ok:
        pytest.skip(f"the machine is busy already ({quiet.what}): the quiet verdict cannot be shown")
    hogs = [start_orphan_hog() for _ in range(2)]
    try:
        time.sleep(0.3)
        verdict = machine.diagnose(1, window_s=1.0, reference_calls=5)
    finally:
        for pid in hogs:
            os.kill(pid, signal.SIGKILL)
    assert not verdict.fit
    assert verdict.line().startswith("not fit for timing: other processes")
    busy = next(c for c in verdict.checks if c.name == "load")
    assert busy.fields["other_cores"] > 1.25 and "wait for them or stop them" in busy.advice


def test_reference_check_compares_with_the_history(cache):
    new = machine.check_reference(threads=1, calls=5)
    assert new.ok and "no history yet" in new.what
    key = reference.machine_key(1)
    now = new.fields["reference_ms"]
    for _ in range(5):  # a history ten times faster than the machine is now
        reference.slowdown([now / 10] * 3, key)
    slow = machine.check_reference(threads=1, calls=5)
    assert not slow.ok and slow.decides and "its usual time" in slow.what and "slower than usual" in slow.advice


def test_settings_checks_give_advice_without_deciding():
    threads = machine.check_threads(load.cpu_count() + 1)
    assert not threads.ok and not threads.decides and "--threads" in threads.advice
    assert machine.check_threads(1).ok
    freq = machine.check_frequency()
    assert not freq.decides and freq.what
