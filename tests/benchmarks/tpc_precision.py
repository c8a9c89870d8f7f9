"""Benchmark: does TPC's distance matrix need float64? Selections and time of float32 alternatives.

    python tests/benchmarks/tpc_precision.py [--seeds 100] [--rounds 30] [--threads 1] [--skip-tests]

TPC (backbones.strategies.dpc_knn_scores) computes its T x T distance matrix in float64 so that
the densities of close tokens, exp(-d^2) near 1, stay apart and the position tie-break (+ t x 1e-12)
decides between exactly equal ones. Three float32 candidates are compared with it:

- ``f32``: the same code in float32 (the 1e-12 tie-break is below float32's resolution near 1);
- ``f32_log``: float32, densities compared as mean squared kNN distances (exp is monotone, and the
  small values keep their precision), an exact position tie-break (equal density: the later token
  is the denser, as the float64 epsilon makes it), scores ranked as log(delta) - mean d^2;
- ``f32_log_direct``: ``f32_log`` with torch.cdist's direct differences instead of the matrix
  product (no cancellation between |x|^2 + |y|^2 and 2 x.y for close tokens).

Selections: a candidate agrees when the top-K sets of its scores equal float64's for *every* K
(so for any keep a schedule asks); reported per input family: the test suite's own TPC inputs
(the tests that run TPC, run here with the scores of every call compared), Gaussian and random-walk
features (close neighbours, as smooth motion gives) at the canonical sizes over ``--seeds`` seeds,
and the features each canonical single (TPC) model prunes, over a few seeds of input.
Time: the whole prune step (pool, scores, top-k, gather) at MHFormer's canonical size (T = 351,
3 x 512 channels), float64 and the candidates alternated in one process, ``--rounds`` rounds;
median and its 95 % CI (bench.measure.timing). Not a test: the docs quote its output.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import backbones  # noqa: E402
from backbones import strategies  # noqa: E402
from bench.measure.timing import stats_fields  # noqa: E402

F64 = strategies.dpc_knn_scores
# Canonical (T, channels of the pruned feature, keep) of each backbone's single (TPC) variant.
CANONICAL = {"mixste": (243, 512, 81), "motionbert": (243, 256, 81), "motionagformer": (243, 128, 81),
             "mhformer": (351, 3 * 512, 117)}  # fmt: skip
TESTS = ["tests/test_tokens.py", "tests/test_strategies.py", "tests/test_backbones.py", "tests/test_backbone_mhformer.py",
         "tests/test_backbone_motionbert.py", "tests/test_backbone_motionagformer.py", "tests/test_official.py"]  # fmt: skip


def _same_code_f32(feat: torch.Tensor, k: int) -> torch.Tensor:
    c = feat.shape[-1]
    dist = torch.cdist(feat, feat) / math.sqrt(c)
    knn = dist.topk(min(k, dist.shape[-1]), dim=-1, largest=False).values
    density = torch.exp(-(knn**2).mean(dim=-1))
    t = density.shape[-1]
    density = density + torch.arange(t, dtype=density.dtype) * 1e-12
    denser = density[:, None, :] > density[:, :, None]
    dmax = dist.flatten(1).max(dim=-1).values[:, None, None]
    return torch.where(denser, dist, dmax).min(dim=-1).values * density


def _log_scores(direct: bool) -> Callable[[torch.Tensor, int], torch.Tensor]:
    def scores(feat: torch.Tensor, k: int = 2) -> torch.Tensor:
        feat = feat.float()
        c = feat.shape[-1]
        mode = "donot_use_mm_for_euclid_dist" if direct else "use_mm_for_euclid_dist_if_necessary"
        dist = torch.cdist(feat, feat, compute_mode=mode) / math.sqrt(c)
        knn = dist.topk(min(k, dist.shape[-1]), dim=-1, largest=False).values
        sparse = (knn**2).mean(dim=-1)  # -log density: smaller is denser
        t = sparse.shape[-1]
        idx = torch.arange(t)
        si, sj = sparse[:, :, None], sparse[:, None, :]
        denser = (sj < si) | ((sj == si) & (idx[None, None, :] > idx[None, :, None]))  # [b, i, j]
        dmax = dist.flatten(1).max(dim=-1).values[:, None, None]
        delta = torch.where(denser, dist, dmax).min(dim=-1).values
        return torch.log(delta) - sparse

    return scores


CANDIDATES: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "f32": _same_code_f32, "f32_log": _log_scores(False), "f32_log_direct": _log_scores(True),
}  # fmt: skip


def _sets(scores: torch.Tensor) -> list[list[frozenset[int]]]:
    """Per batch row, the top-K index set for every K = 1 .. T - 1 (topk's order, as top_sorted takes it)."""
    t = scores.shape[-1]
    order = scores.topk(t, dim=-1).indices.tolist()
    return [[frozenset(row[:k]) for k in range(1, t)] for row in order]


def first_difference(feat: torch.Tensor, name: str) -> int | None:
    """The smallest K whose top-K selection differs from float64's (None: every K agrees)."""
    ref, got = _sets(F64(feat.double(), 2)), _sets(CANDIDATES[name](feat, 2))
    worst = None
    for a, b in zip(ref, got, strict=True):
        for k, (x, y) in enumerate(zip(a, b, strict=True), start=1):
            if x != y:
                worst = k if worst is None else min(worst, k)
                break
    return worst


class Tally:
    def __init__(self) -> None:
        self.calls: dict[str, int] = defaultdict(int)
        self.differ: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))

    def check(self, family: str, feat: torch.Tensor) -> None:
        self.calls[family] += 1
        for name in CANDIDATES:
            k = first_difference(feat, name)
            if k is not None:
                self.differ[family][name].append(k)

    def report(self) -> None:
        for family, n in self.calls.items():
            parts = []
            for name in CANDIDATES:
                ks = self.differ[family][name]
                parts.append(f"{name}: {len(ks)} differ" + (f" (smallest K {min(ks)})" if ks else ""))
            print(f"  {family}: {n} calls; " + "; ".join(parts))


def test_inputs(tally: Tally) -> None:
    """The tests that run TPC, with every dpc_knn_scores call's float64 scores compared with the candidates'."""
    import pytest

    def checked(feat: torch.Tensor, k: int = 2) -> torch.Tensor:
        if k == 2:
            tally.check("test suite", feat.detach())
        return F64(feat, k)

    class Patch:
        def pytest_configure(self, config: object) -> None:
            strategies.dpc_knn_scores = checked

    code = pytest.main(["-q", "-x", "-p", "no:cacheprovider", *[str(ROOT / t) for t in TESTS]], plugins=[Patch()])
    strategies.dpc_knn_scores = F64
    print(f"  (the tests: exit {int(code)})")


def random_inputs(tally: Tally, seeds: int) -> None:
    for backbone, (t, c, _) in CANONICAL.items():
        for seed in range(seeds):
            g = torch.Generator().manual_seed(seed)
            tally.check(f"gaussian {backbone} T={t} C={c}", torch.randn(1, t, c, generator=g))
            walk = torch.randn(1, t, c, generator=g).cumsum(dim=1) * 0.05 + torch.randn(1, 1, c, generator=g)
            tally.check(f"random walk {backbone} T={t} C={c}", walk)


def model_inputs(tally: Tally, seeds: int) -> None:
    """The features each canonical single-variant (TPC) model hands its pruner."""
    def checked(feat: torch.Tensor, k: int = 2) -> torch.Tensor:
        tally.check(f"canonical model features ({current})", feat.detach())
        return F64(feat, k)

    strategies.dpc_knn_scores = checked
    try:
        for current in CANONICAL:  # noqa: B007 (read by checked)
            torch.manual_seed(0)
            model = backbones.create(current, "single").eval()
            for seed in range(seeds):
                g = torch.Generator().manual_seed(seed)
                x = torch.randn(1, model.frames, 17, model.in_channels, generator=g)
                with torch.inference_mode():
                    model(x)
    finally:
        strategies.dpc_knn_scores = F64


def timed(rounds: int) -> None:
    """The prune step at MHFormer's canonical size: float64 and the candidates alternated, per call ms."""
    t, c, keep = CANONICAL["mhformer"]
    x = torch.randn(1, t, c, generator=torch.Generator().manual_seed(0))

    def step(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> Callable[[], None]:
        def call() -> None:
            with torch.inference_mode():
                idx = strategies.top_sorted(fn(strategies.pool_joints(x), 2), keep)
                strategies.gather_tokens(x, idx)

        return call

    # The direct-difference candidate is an order of magnitude slower: timed apart, after the others, so
    # that its long calls do not sit between theirs.
    fns = {"f64": step(F64), **{n: step(f) for n, f in CANDIDATES.items() if n != "f32_log_direct"}}
    samples: dict[str, list[float]] = {n: [] for n in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) * 1e3)
    direct, ref_again = step(CANDIDATES["f32_log_direct"]), step(F64)
    samples["f32_log_direct"], samples["f64 (beside direct)"] = [], []
    for _ in range(max(3, rounds // 5)):
        for name, fn in (("f64 (beside direct)", ref_again), ("f32_log_direct", direct)):
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) * 1e3)
    ref = stats_fields(samples["f64"])
    for name, s in samples.items():
        f = stats_fields(s)
        med = sorted(s)[len(s) // 2]
        base = samples["f64 (beside direct)" if name == "f32_log_direct" else "f64"]
        ratios = sorted(a / b for a, b in zip(base, s, strict=True)) if len(base) == len(s) else [float("nan")]
        print(f"  {name}: {med:.2f} ms [{f['ci_low']:.2f}, {f['ci_high']:.2f}] (n = {f['n']}, MAD {f['mad_pct']:.0f} %); "
              f"f64 / {name} per round: median {ratios[len(ratios) // 2]:.2f}x")  # fmt: skip
    print(f"  (f64 stable: {ref['stable']} {ref['unstable_reason']})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=100)
    p.add_argument("--model-seeds", type=int, default=3)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-tests", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}; load {os.getloadavg()}; torch {torch.__version__}, "
          f"{args.threads} thread(s)")  # fmt: skip
    tally = Tally()
    if not args.skip_tests:
        test_inputs(tally)
    random_inputs(tally, args.seeds)
    model_inputs(tally, args.model_seeds)
    print("selections (a candidate differs when any top-K set differs from float64's):")
    tally.report()
    print(f"prune step at MHFormer's canonical size (T = 351, C = 1536, keep 117), {args.rounds} rounds:")
    timed(args.rounds)
    print(f"load at the end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
