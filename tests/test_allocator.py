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
