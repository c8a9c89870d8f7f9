"""Benchmark: do the stated 95 % intervals cover the median of many more samples about 95 % of the time?

    python tests/benchmarks/coverage.py [--backbone mixste] [--size tiny] [--frames 243] [--pairs 120]
                                        [--threads 2] [--allocator tuned] [--load FILE]

Takes one long phase of paired calls (rectangle, pruned, rectangle, pruned ...: the speed-up's own
protocol, bench.measure.timing.measure_paired) of one pruned case and its rectangle: ``--pairs``
pairs. Their ratios' median stands for the "true" speed-up of that phase. Every run of ``n``
consecutive pairs inside it (n = 2 ... 12: a phase as a run would have taken it) gets the interval
vptbench states for ``n`` samples (Student t on the logs below 6, order statistics from 6), and the
script counts how often it covers the long phase's median, and how often that interval is also
tight enough to be called stable (half-width <= 5 %). The same for the latencies of the pruned half.
Consecutive windows keep what independent draws would hide: slow episodes, drift, warm-up.

``--load FILE`` re-reads the samples a previous run saved (``--save FILE``), to try rules without
timing again. Not a test: minutes, machine-dependent; the docs quote its output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def paired_samples(args: argparse.Namespace) -> dict[str, list[float]]:
    import torch

    import backbones
    from bench.measure import allocator, timing

    allocator.apply(args.allocator)
    torch.set_num_threads(args.threads)
    x = None
    models = []
    for variant in ("rectangle", args.variant):
        torch.manual_seed(0)
        m = backbones.create(args.backbone, variant=variant, frames=args.frames, size=args.size).eval()
        models.append(m)
        if x is None:
            x = torch.randn(1, m.frames, 17, m.in_channels, generator=torch.Generator().manual_seed(0))

    def call(m):
        def f():
            with torch.inference_mode():
                m(x)

        return f

    ref, new = timing.measure_paired(call(models[0]), call(models[1]), warmup=1, repeats=args.pairs)
    return {"rectangle_ms": ref, "pruned_ms": new, "ratios": [r / n for r, n in zip(ref, new, strict=True)]}


def coverage(values: list[float], ns: list[int]) -> list[tuple[int, int, float, float, float]]:
    """(n, windows, covered share, stable share, stable-and-covered share of the stable) per n."""
    from bench.measure import timing

    truth = float(np.median(values))
    out = []
    for n in ns:
        windows = [values[i:i + n] for i in range(0, len(values) - n + 1)]
        covered = stable = stable_covered = 0
        for w in windows:
            low, high, _, _ = timing.ci(w)
            med = float(np.median(w))
            ok = low is not None and high is not None and low <= truth <= high
            tight = low is not None and high is not None and max(med - low, high - med) <= timing.STABLE_CI_REL * med
            covered += ok
            stable += tight
            stable_covered += ok and tight
        out.append((n, len(windows), covered / len(windows), stable / len(windows),
                    stable_covered / stable if stable else float("nan")))  # fmt: skip
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="mixste")
    p.add_argument("--variant", default="hierarchical")
    p.add_argument("--size", default=None, help="default: the backbone's canonical size")
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--pairs", type=int, default=120)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--allocator", default="tuned")
    p.add_argument("--save", default=None)
    p.add_argument("--load", default=None)
    args = p.parse_args()
    if args.load:
        data = json.loads(Path(args.load).read_text())
    else:
        start = time.strftime("%Y-%m-%d %H:%M:%S")
        load0 = os.getloadavg()[0]
        data = paired_samples(args)
        data["meta"] = {"start": start, "load_start": load0, "load_end": os.getloadavg()[0], **vars(args)}
        if args.save:
            Path(args.save).write_text(json.dumps(data))
    print(json.dumps(data.get("meta", {})))
    ns = list(range(2, 13))
    for key in ("ratios", "pruned_ms"):
        vals = data[key]
        print(f"\n{key}: {len(vals)} samples, median {np.median(vals):.4g}, "
              f"spread (p90/p10) {np.percentile(vals, 90) / np.percentile(vals, 10):.3f}")  # fmt: skip
        print(f"{'n':>3} {'windows':>8} {'covers':>7} {'stable':>7} {'covers|stable':>14}")
        for n, w, cov, st, sc in coverage(vals, ns):
            print(f"{n:>3} {w:>8} {cov:>7.1%} {st:>7.1%} {sc:>14.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
