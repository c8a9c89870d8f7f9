"""Benchmark: do paired speed-ups survive a CPU hog that starts part-way through a run?

    python tests/benchmarks/hog.py [--preset smoke] [--threads 2] [--hogs 1] [--delay 5] [--out DIR]

Runs ``vptbench run --metrics latency,speedup`` twice: once as it is (the reference), once with
``--hogs`` busy-looping processes started ``--delay`` seconds into the run (siblings of the run,
so the run counts them as other processes). For every pruned case it prints the reference and
hogged speed-up, their CIs, the change, ``stable`` and the load the run measured, next to the
unpaired ratio of latency medians (what the speed-up was before pairing). The promise checked:
every hogged speed-up is within 15 % of the reference one or is flagged ``stable: false``; the
script exits 1 if one is not. Not a test: it takes minutes and its figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOLERANCE = 0.15
HOG = "import time\nt = time.time()\nwhile time.time() - t < {s}: pass\n"


def vptbench_run(out: Path, args: argparse.Namespace, hog_after: float | None) -> float:
    """Run the matrix into ``out``; with ``hog_after``, start the hogs that many seconds in. Wall s."""
    cmd = [sys.executable, "-m", "bench", "run", "--preset", args.preset, "--metrics", "latency,speedup",
           "--threads", str(args.threads), "--out", str(out), "--no-report"]  # fmt: skip
    if args.backbones:
        cmd += ["--backbones", args.backbones]
    start = time.monotonic()
    run = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    hogs: list[subprocess.Popen[bytes]] = []
    try:
        if hog_after is not None:
            try:
                run.wait(timeout=hog_after)
            except subprocess.TimeoutExpired:
                code = HOG.format(s=3600)
                hogs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(args.hogs)]
        run.wait()
    finally:
        for h in hogs:
            h.send_signal(signal.SIGTERM)
            h.wait()
    if run.returncode not in (0, 1):
        raise SystemExit(f"vptbench run failed with exit code {run.returncode}")
    return time.monotonic() - start


def load_records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines() if line.strip()]


def by_case(records: list[dict], metric: str) -> dict[str, dict]:
    return {r["case_id"]: r for r in records if r["metric"] == metric and r["status"] == "ok"}


def unpaired(records: list[dict]) -> dict[str, float]:
    """case -> rectangle latency median / case latency median (the ratio before pairing)."""
    lat = by_case(records, "latency")
    key = ("backbone", "frames", "batch", "device", "dtype", "size")
    rect = {tuple(r[k] for k in key): r["value"] for r in lat.values() if r["variant"] == "rectangle"}
    return {c: rect[tuple(r[k] for k in key)] / r["value"] for c, r in lat.items()
            if r["variant"] != "rectangle" and tuple(r[k] for k in key) in rect}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="smoke", help="the vptbench preset (default smoke: tiny sizes, T=27)")
    p.add_argument("--backbones", default=None, help="comma list (default: all)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the run (default 2: every core)")
    p.add_argument("--hogs", type=int, default=1, help="busy-looping processes started part-way (default 1)")
    p.add_argument("--delay", type=float, default=5.0,
                   help="seconds into the second run the hogs start (a smoke run takes about 20 s)")
    p.add_argument("--out", default=None, help="where the two runs go (default: a temporary directory)")
    args = p.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="vptbench-hog-"))
    print(f"uptime before: {os.popen('uptime').read().strip()}")
    t_ref = vptbench_run(root / "reference", args, hog_after=None)
    print(f"uptime after the reference run: {os.popen('uptime').read().strip()}")
    t_hog = vptbench_run(root / "hogged", args, hog_after=args.delay)
    print(f"uptime after the hogged run: {os.popen('uptime').read().strip()}")
    ref, hog = load_records(root / "reference"), load_records(root / "hogged")
    ref_sp, hog_sp = by_case(ref, "speedup"), by_case(hog, "speedup")
    ref_un, hog_un = unpaired(ref), unpaired(hog)

    print(f"\nreference run {t_ref:.0f} s, hogged run {t_hog:.0f} s ({args.hogs} hog(s) from {args.delay:.0f} s on), "
          f"threads {args.threads}, runs in {root}\n")  # fmt: skip
    print("| case | reference speed-up [95 % CI] | hogged [95 % CI] | change | stable | other cores (max) | "
          "load 1m | unpaired ratio ref / hogged |")
    print("|---|---|---|---|---|---|---|---|")
    broken = 0
    for cid, h in sorted(hog_sp.items()):
        r = ref_sp.get(cid)
        if r is None:
            continue
        change = h["value"] / r["value"] - 1
        ok = abs(change) <= TOLERANCE or h["stable"] is False
        broken += not ok
        name = f"{h['backbone']}/{h['variant']}"
        print(f"| {name} | {r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]{'' if r['stable'] else ' (unstable)'} "
              f"| {h['value']:.3f} [{h['ci_low']:.3f}, {h['ci_high']:.3f}] | {change:+.1%} | {h['stable']} "
              f"| {h['other_cores']:.2f} ({h['other_cores_max']:.2f}) | {h['load_1m']} "
              f"| {ref_un.get(cid, float('nan')):.3f} / {hog_un.get(cid, float('nan')):.3f} |")  # fmt: skip
    n = len(hog_sp)
    flagged = sum(1 for h in hog_sp.values() if h["stable"] is False)
    within = sum(1 for c, h in hog_sp.items() if c in ref_sp and abs(h["value"] / ref_sp[c]["value"] - 1) <= TOLERANCE)
    print(f"\n{n} paired speed-ups under the hog: {within} within {TOLERANCE:.0%} of the reference, {flagged} flagged "
          f"unstable, {broken} neither (must be 0)")  # fmt: skip
    un_within = sum(1 for c in hog_un if c in ref_un and abs(hog_un[c] / ref_un[c] - 1) <= TOLERANCE)
    print(f"unpaired ratios of latency medians: {un_within} of {len(hog_un)} within {TOLERANCE:.0%}")
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
