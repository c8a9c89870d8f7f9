"""Peak memory: a fresh process per case on CPU, torch/NVML counters on CUDA.

The CPU tests use a throw-away backbone written to a temporary module, whose forward holds a
buffer of a known size: the measured peak must move by that size, whatever the machine. Being a
module of its own, it also shows that a user's backbone (registered on import) is found in the
fresh process.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import textwrap

import pytest
import torch

import backbones
from bench.core.case import Case
from bench.measure import memory, rss

FAKE_MODULE = textwrap.dedent(
    '''
    import torch
    import torch.nn as nn

    from backbones.registry import VariantSpec, register
    from backbones.tokens import TokenHourglass


    class Hog(nn.Module):
        """A lifter whose forward holds a buffer of ``hold_mib`` MiB while it runs."""

        pipeline = "seq2seq"

        def __init__(self, frames, schedule=(), pruner=None, recoverer=None, embed_kept=False,
                     hold_mib=0, fail=""):
            super().__init__()
            self.frames, self.in_channels, self.hold_mib, self.fail = frames, 2, hold_mib, fail
            self.embed = nn.Linear(2, 8)
            self.blocks = nn.ModuleList(nn.Linear(8, 8) for _ in range(2))
            self.tokens = TokenHourglass(frames=frames, depth=2, dim=8, schedule=schedule,
                                         pruner=pruner, recoverer=recoverer)
            self.head = nn.Linear(8, 3)

        @property
        def token_profile(self):
            return self.tokens.profile

        def forward(self, x):
            if self.fail == "memory":
                raise MemoryError("fake allocation failure")
            held = torch.ones(self.hold_mib * 2**18 + 1)  # float32: 4 bytes each
            x = self.embed(x)
            pos = self.tokens.positions(x)
            for i, blk in enumerate(self.blocks):
                x, pos = self.tokens.prune(i, x, pos)
                x = blk(x)
            return self.head(self.tokens.recover(x, pos)) + held[0] * 0


    @register("{name}", pipeline="seq2seq", in_channels=2, frames=16,
              single=VariantSpec(((1, 0.5),), "tps", "tri"),
              hierarchical=VariantSpec(((0, 0.5), (1, 0.25)), "tps", "tri"),
              sizes={{"tiny": {{}}, "hog": {{"hold_mib": 256}}, "fail": {{"fail": "memory"}}}},
              default_size="tiny")
    def build(frames=16, **kw):
        return Hog(frames, **kw)
    '''
)


@pytest.fixture(scope="module")
def hog(tmp_path_factory):
    """Register the fake backbone from an importable module; unregister it afterwards."""
    name = "memtest_hog"
    folder = tmp_path_factory.mktemp("fakebackbone")
    (folder / "memtest_fake.py").write_text(FAKE_MODULE.format(name=name))
    sys.path.insert(0, str(folder))
    importlib.import_module("memtest_fake")
    yield name
    backbones.unregister(name)
    sys.modules.pop("memtest_fake", None)
    sys.path.remove(str(folder))


def fields(name: str, size: str) -> dict:
    return dataclasses.asdict(Case(name, size=size).resolve())


def test_peak_rss_sees_what_the_step_holds(hog):
    small = memory.peak_rss(fields(hog, "tiny"), threads=1)
    big = memory.peak_rss(fields(hog, "hog"), threads=1)
    for phase in memory.PHASES:
        assert small[phase] >= small["baseline_mib"] > 0
        # the forward holds 256 MiB (training holds it too): the peak moves by about that much
        assert 200 < big[phase] - small[phase] < 400, (phase, small, big)
        # the activation figure is the same 256 MiB, without the ~200 MiB of interpreter and torch
        act_small, act_big = small[f"activations_{phase}"], big[f"activations_{phase}"]
        assert 0 <= act_small < 100 and 200 < act_big - act_small < 400, (phase, small, big)
    assert small["reset"] and big["reset"]


def test_peak_rss_is_measured_in_a_fresh_process(hog):
    ballast = torch.ones(512 * 2**18)  # 512 MiB held by this (the parent) process
    ballast[0] = 2.0
    peaks = memory.peak_rss(fields(hog, "tiny"), ["inference"], threads=1)
    assert peaks["inference"] < rss._vm_hwm_mib() - 400  # none of the parent's memory counts
    assert "train" not in peaks
    del ballast


def test_peak_rss_failure_is_reported_with_its_status(hog):
    with pytest.raises(memory.PeakRssError) as info:
        memory.peak_rss(fields(hog, "fail"), threads=1)
    assert info.value.status == "oom"
    assert "fake allocation failure" in str(info.value)
    assert "baseline_mib" in info.value.partial  # what was measured before the failure is kept


def test_peak_rss_rejects_unknown_phases():
    with pytest.raises(ValueError, match="phase"):
        memory.peak_rss(fields("mixste", "tiny"), ["warmup"])


def test_peak_rss_of_a_real_backbone_grows_with_training():
    case = dataclasses.asdict(Case("mixste", frames=27, size="tiny", batch=4).resolve())
    peaks = memory.peak_rss(case, threads=1)
    # gradients, AdamW's two moments and the saved activations come on top of inference
    assert peaks["train"] > peaks["inference"] >= peaks["baseline_mib"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_memory_counts_a_known_allocation():
    def step() -> None:
        x = torch.ones(256 * 2**18, device="cuda")  # 256 MiB
        torch.cuda.synchronize()
        del x

    rep = memory.cuda_peak_memory(step, "cuda")
    assert 256 <= rep.alloc_mib < 300
    assert rep.baseline_mib is not None and 256 <= rep.alloc_mib - rep.baseline_mib < 300  # activations
    assert rep.reserved_mib >= rep.alloc_mib
    if rep.device_mib is not None:  # NVML sees the whole device: at least what torch reserved
        assert rep.device_mib >= rep.reserved_mib
    else:
        assert "NVML" in rep.note


def test_cpu_training_is_timed_in_the_fresh_process_when_memory_is_measured():
    from bench.scenarios import Settings, measure_case

    settings = Settings(train_warmup=1, train_repeats=2, train_min_time_s=0.0)
    case = Case("mixste", frames=9, size="tiny")
    both = list(measure_case(case, ["memory", "train"], "r", settings=settings))
    assert [(r["metric"], r.get("phase")) for r in both] == [
        ("peak_rss", "inference"), ("peak_mem_activations", "inference"),
        ("peak_rss", "train"), ("peak_mem_activations", "train"), ("train_step", None),
    ]  # fmt: skip
    train = both[-1]
    assert train["status"] == "ok" and train["fresh_process"] is True and len(train["samples"]) == 2
    alone = list(measure_case(case, ["train"], "r", settings=settings))
    assert [r["metric"] for r in alone] == ["train_step"] and alone[0]["fresh_process"] is False


def test_training_timed_in_the_fresh_process_is_not_counted_as_other_processes_load(tmp_path):
    """On the local executor the memory server forks the process that times the steps: it is no
    descendant of the worker, so the load must be read inside it, or the steps' own CPU time reads
    as a busy machine (every paper-preset train_step was flagged "CPU busy" on a quiet machine)."""
    from bench.core.results import read_records
    from bench.run.executors import execute
    from bench.run.jobs import BenchJob
    from bench.scenarios import Settings

    settings = Settings(train_warmup=1, train_repeats=6, train_min_time_s=1.0, train_max_time_s=2.0)
    case = Case("mixste", frames=27, size="tiny")
    execute([case], tmp_path, run_id="r", job=BenchJob(("memory", "train"), settings), executor="local",
            progress=False)  # fmt: skip
    train = [r for r in read_records(tmp_path) if r["metric"] == "train_step"]
    assert train[0]["status"] == "ok" and train[0]["fresh_process"] is True
    # over >= 1 s the steps use about a core themselves; only another process spinning as hard
    # would bring "other_cores" near that
    assert train[0]["phase_s"] >= 0.9
    assert train[0]["other_cores"] < 0.5
