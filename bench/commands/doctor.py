"""``vptbench doctor``: is this machine fit for timing right now, and why not (load, clock, SMT, allocator...)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..core.errors import UsageError


def add_parser(sub: Any, **kw: Any) -> None:
    p = sub.add_parser("doctor", **kw, help="is this machine fit for timing now? load, clock, SMT, allocator, with advice")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads the timing would use (default: the paper preset's, else every core)")
    p.add_argument("--allocator", default="tuned", help="the allocator the run would use: tuned, system, tcmalloc, jemalloc")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Always exits 0 (it informs; a run decides what to do), 2 on bad input."""
    from ..measure import machine
    from ..measure.load import cpu_count

    threads = args.threads if args.threads is not None else cpu_count()
    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    verdict = machine.diagnose(threads, allocator_name=args.allocator)
    if args.json:
        print(json.dumps(verdict.to_dict(), indent=2))
        return 0
    for c in verdict.checks:
        mark = "ok" if c.ok else ("!!" if c.decides else "--")
        print(f"{mark:>2}  {c.name:<10} {c.what}")
        if c.advice:
            print(f"    {'':<10} advice: {c.advice}")
    print(f"\n{verdict.line()}")
    return 0
