"""Benchmark: how the allocator and thread pinning change the speed and the spread of a canonical forward.

    python tests/benchmarks/allocator.py [--backbone mixste] [--variant rectangle] [--threads 2]
                                         [--forwards 12] [--rounds 2] [--settings system,tuned,tcmalloc,jemalloc]

Every setting times the same model (canonical size, batch 1, the same weights and input) in a fresh
process: ``--forwards`` forwards after two warm-up ones, with the minor page faults of each forward
(getrusage). The settings take turns, round after round (system, tuned, tcmalloc, jemalloc, system,
tuned, ...), so a slow episode of the machine falls on all of them alike. Printed per setting and
round: the median forward (ms), the 95 % CI half-width of the median (% of it), the faults per forward
(median and max), and the median relative to ``system`` of the same round. ``pinned`` settings add
``OMP_PROC_BIND=close OMP_PLACES=cores`` (one OpenMP thread per core, not moved by the scheduler).
Not a test: it takes minutes, and its figures depend on the machine; the docs quote its output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, resource, sys, time
import torch
import backbones
from bench.measure import allocator
cfg = json.loads(sys.argv[1])
allocator.apply(cfg["allocator"])
torch.set_num_threads(cfg["threads"])
torch.manual_seed(0)
model = backbones.create(cfg["backbone"], variant=cfg["variant"]).eval()
x = torch.randn(1, model.frames, 17, model.in_channels, generator=torch.Generator().manual_seed(0))
out = []
with torch.inference_mode():
    for i in range(2 + cfg["forwards"]):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = time.perf_counter()
        model(x)
        ms = (time.perf_counter() - t) * 1e3
        if i >= 2:
            out.append([ms, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0])
print(json.dumps({"samples": out, "allocator": allocator.describe()}))
"""


def run_setting(name: str, args: argparse.Namespace) -> dict:
    from bench.measure import allocator

    base = name.removesuffix("+pinned")
    env = dict(os.environ, PYTHONPATH=str(ROOT), **allocator.environment(base))
    if name.endswith("+pinned"):
        env |= {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}
    cfg = {"allocator": base, "threads": args.threads, "backbone": args.backbone, "variant": args.variant,
           "forwards": args.forwards}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], env=env, capture_output=True, text=True,
                         check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(samples: list[list[float]]) -> dict:
    from bench.measure import timing

    ms = [s[0] for s in samples]
    faults = sorted(s[1] for s in samples)
    f = timing.stats_fields(ms)
    med = timing.summarise(ms).median
    half = max(med - f["ci_low"], f["ci_high"] - med) / med
    return {"median_ms": med, "ci_half_pct": 100 * half, "faults_median": faults[len(faults) // 2],
            "faults_max": faults[-1], "n": len(ms)}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="mixste")
    p.add_argument("--variant", default="rectangle")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--forwards", type=int, default=12)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--settings", default="system,tuned,tcmalloc,jemalloc")
    p.add_argument("--json", default=None, metavar="FILE", help="also write every sample here")
    args = p.parse_args()
    settings = args.settings.split(",")
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} load {os.getloadavg()[0]:.2f}, {args.backbone} {args.variant}, "
          f"{args.threads} threads, {args.forwards} forwards per setting and round", flush=True)  # fmt: skip
    rows, raw = [], {}
    for r in range(args.rounds):
        base = None
        for name in settings:
            got = run_setting(name, args)
            s = summary(got["samples"])
            raw.setdefault(name, []).append(got)
            base = s["median_ms"] if name == settings[0] else base
            rows.append((r + 1, name, s, s["median_ms"] / base))
            print(f"round {r + 1}  {name:<16} median {s['median_ms']:8.1f} ms  CI +-{s['ci_half_pct']:4.1f} %  "
                  f"faults/forward median {s['faults_median']:>7} max {s['faults_max']:>7}  "
                  f"x{s['median_ms'] / base:.3f} of {settings[0]}", flush=True)  # fmt: skip
    print(f"{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(raw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
