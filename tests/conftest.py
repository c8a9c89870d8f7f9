"""Suite-wide settings: one torch thread per test, so tiny models don't pay for OpenMP threads
spinning against each other on small shared CI machines (two threads can be 30x slower there);
restored after every test, since some code under test sets its own count. The reference
workload's history (bench.measure.reference) goes to a folder of the session's, never ~/.cache.

Tests marked ``slurm`` run against a single-node Slurm on localhost (:mod:`slurm_cluster`),
started once per session where its daemons are installed and skipped with the reason otherwise.
"""

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _own_cache(tmp_path_factory):
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))  # worker subprocesses inherit it
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A throwaway single-node Slurm (2 CPUs, no accounting) that client commands and submitit talk to.

    ``SLURM_CONF`` points at it for the session, and ``PYTHONPATH`` starts with this checkout so
    that its jobs (this interpreter, through submitit) import the code under test.
    """
    from slurm_cluster import Cluster, missing

    lacking = missing()
    if lacking:
        pytest.skip(f"needs Slurm: {', '.join(lacking)} not installed (Debian: apt-get install slurm-wlm munge)")
    cluster = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except RuntimeError as e:
        pytest.skip(str(e))
    before = {k: os.environ.get(k) for k in ("SLURM_CONF", "PYTHONPATH")}
    os.environ["SLURM_CONF"] = str(cluster.conf)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), before["PYTHONPATH"]) if p)
    try:
        yield cluster
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        cluster.stop()


@pytest.fixture(autouse=True)
def _slurm_marker(request):
    """A test marked ``slurm`` gets the session's cluster (or is skipped with the reason)."""
    if request.node.get_closest_marker("slurm"):
        request.getfixturevalue("slurm_cluster")
