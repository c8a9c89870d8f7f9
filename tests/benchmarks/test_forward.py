"""pytest-benchmark suite: the forward of every backbone x variant at a small size.

Skipped in the normal test run (``--benchmark-skip`` in pyproject); run it with
``pytest tests/benchmarks --benchmark-only``, save with ``--benchmark-autosave`` and compare with
``--benchmark-compare --benchmark-compare-fail=median:25%``. Each benchmark carries its FLOPs
(fvcore, GFLOPs = 2 x multiply-adds) and token profile in ``extra_info``, so saved JSON says
what was timed. Absolute times only compare on one machine; `vptbench gate` gates speed-ups.
"""

import pytest
import torch

import backbones
from bench.measure.flops import count_flops

FRAMES = 27


@pytest.mark.parametrize("variant", backbones.VARIANTS)
@pytest.mark.parametrize("name", backbones.names())
def test_forward(benchmark, name, variant):
    torch.manual_seed(0)
    model = backbones.create(name, variant=variant, frames=FRAMES, size="tiny").eval()
    x = torch.randn(1, FRAMES, 17, backbones.spec(name).in_channels)
    report = count_flops(model, x, "fvcore")
    benchmark.extra_info.update(
        gflops_fvcore=report.total, token_profile=model.token_profile, frames=FRAMES, size="tiny",
        threads=torch.get_num_threads(),
    )

    def forward():
        with torch.inference_mode():
            return model(x)

    y = benchmark(forward)
    assert y.shape[-1] == 3 and report.total > 0
