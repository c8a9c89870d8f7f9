"""The local executor's zygote: forked case processes, their exit codes, and the memory server they share."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from pathlib import Path

import cloudpickle
import pytest

from bench.core.case import Case
from bench.run import worker

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the zygote needs os.fork")


def _part(tmp_path: Path, name: str, task) -> Path:
    part = tmp_path / name
    part.mkdir()
    (part / "task.pkl").write_bytes(cloudpickle.dumps(task))
    return part


def exits_3() -> None:
    raise SystemExit(3)


def kills_itself() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def measures_memory(out: str) -> None:
    """Asks the memory server (inherited from the zygote) for a fresh process's peak RSS."""
    from bench.measure import memory, rss

    assert rss._server_path is not None  # no interpreter started: the zygote's server answers
    case = Case("mixste", "rectangle", frames=9, size="tiny").resolve()
    peaks = memory.peak_rss(dataclasses.asdict(case), ("inference",), threads=1)
    Path(out).write_text(json.dumps({"peaks": peaks, "env": os.environ.get("VPT_TEST_ENV"), "pid": os.getpid()}))


def test_forked_cases_report_exit_codes_and_share_the_memory_server(tmp_path):
    server = worker.fork_server({"OMP_NUM_THREADS": "1"})
    assert server is not None
    try:
        out = tmp_path / "out.json"
        procs = [
            server.start(_part(tmp_path, "a", exits_3), tmp_path / "a.log", {}),
            server.start(_part(tmp_path, "b", kills_itself), tmp_path / "b.log", {}),
            server.start(_part(tmp_path, "c", lambda: measures_memory(str(out))), tmp_path / "c.log",
                         {"VPT_TEST_ENV": "set"}),
        ]  # fmt: skip
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        server.close()
    assert codes == [3, -signal.SIGKILL, 0], (tmp_path / "c.log").read_text()
    got = json.loads(out.read_text())
    assert got["env"] == "set" and got["pid"] == procs[2].pid  # the case's environment, its own process
    assert 50 < got["peaks"]["baseline_mib"] <= got["peaks"]["inference"] < 2000
    assert server.proc.returncode == 0  # the zygote ended with its stdin, and reaped everything
