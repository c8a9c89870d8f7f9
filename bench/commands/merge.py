"""``vptbench merge RUN_DIR ... --out DIR``: combine the run directories of shards into one run."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any, **kw: Any) -> None:
    p = sub.add_parser("merge", **kw, help="combine shard run directories into one run")
    p.add_argument("run_dirs", nargs="+", help="shard run directories")
    p.add_argument("--out", required=True, help="the merged run directory (new)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..run.merge import merge_runs
    from ..run.store import finished_case_ids

    meta = merge_runs(args.run_dirs, args.out)
    for s in meta["merged_from"]:
        if s["open_parts"]:
            print(f"warning: {s['run_dir']} has {s['open_parts']} case(s) whose jobs have not closed (still running, "
                  "or died unwatched: run it again with --resume, then merge)", file=sys.stderr)  # fmt: skip
    n_records = sum(s["records"] for s in meta["merged_from"])
    n_done = len(finished_case_ids(args.out))
    print(f"merged {n_records} records ({n_done} finished cases) of {len(args.run_dirs)} runs into {args.out}")
    return 0
