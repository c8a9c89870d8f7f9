"""``vptbench merge``: combine the run directories of shards (``--shard i/n``) into one run.

    merge_runs(["results/s1", "results/s2"], "results/all")

A measurement present in two sources is refused (see :func:`merge_runs`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.errors import UsageError
from ..core.results import describe_key, measurement_key, now, read_meta, scan_records
from .store import PARTS, RecordWriter, finished_case_ids, writer


def merge_runs(run_dirs: Sequence[str | Path], out: str | Path) -> dict[str, Any]:
    """Combine run directories (shards) into ``out``; returns the merged ``meta.json``.

    Records are concatenated in source order with ``run_id`` set to the merged run's (the
    source's id is kept as ``source_run_id``); ``done.txt`` is the union; ``meta.json`` holds the
    fields all sources agree on plus ``merged_from``, one entry per source with its own meta.
    A measurement (case_id, metric, method, phase, block) found in two sources is refused:
    shards never overlap, so it means the same run was given twice or runs of different
    matrices were mixed, and silently keeping one would hide that. Each source is checked as it
    is read (:func:`bench.core.results.scan_records`): a measurement twice in one source is refused too,
    and a case whose records end in a cut line, or that ``done.txt`` lists without any record, is
    not finished in the merged run (``--resume`` on it measures the case again). ``out`` is held
    as its only writer while the merge writes it.
    """
    out = Path(out)
    with writer(out):
        return _merge(run_dirs, out)


def _merge(run_dirs: Sequence[str | Path], out: Path) -> dict[str, Any]:
    if len({Path(d).resolve() for d in run_dirs}) < len(run_dirs):
        raise UsageError(f"the same run directory is given twice: {' '.join(map(str, run_dirs))}")
    if (out / "records.jsonl").is_file() and (out / "records.jsonl").stat().st_size:
        raise UsageError(f"--out {out}: already holds records; merge into a new directory")
    seen: dict[tuple[Any, ...], Path] = {}
    records: list[dict[str, Any]] = []
    done: set[str] = set()
    sources: list[dict[str, Any]] = []
    for d in map(Path, run_dirs):
        if not (d / "records.jsonl").is_file():
            raise UsageError(f"{d}: not a run directory (no records.jsonl)")
        scan = scan_records(d)
        recs = scan.records
        for r in recs:
            if measurement_key(r) in seen:
                raise UsageError(f"{d}: {describe_key(r)} is also in {seen[measurement_key(r)]}; shards must not overlap")
            seen[measurement_key(r)] = d
        meta = read_meta(d)
        have = {r["case_id"] for r in recs}
        finished = {c for c in finished_case_ids(d) if c in have and c != scan.cut_case}
        done |= finished
        records += [r | {"run_id": out.name, "source_run_id": r.get("run_id")} for r in recs]
        sources.append({
            "run_dir": str(d.resolve()), "records": len(recs), "finished_cases": len(finished),
            "open_parts": len(list((d / PARTS).glob("*/part.json"))), "meta": meta,
        })  # fmt: skip
    metas = [s["meta"] for s in sources]
    common = {k: v for k, v in metas[0].items() if all(m.get(k, object()) == v for m in metas[1:])} if metas else {}
    for k in ("start_time", "end_time", "command"):
        common.pop(k, None)
    starts = [m["start_time"] for m in metas if m.get("start_time")]
    ends = [m["end_time"] for m in metas if m.get("end_time")]
    merged = common | {
        "run_id": out.name, "kind": "merged", "start_time": min(starts, default=None), "end_time": max(ends, default=None),
        "merged_at": now(), "command": " ".join(sys.argv), "merged_from": sources,
    }  # fmt: skip
    with RecordWriter(out) as writer:  # UsageError if ``out`` cannot be written
        writer.write_all(records)
    (out / "done.txt").write_text("".join(f"{c}\n" for c in sorted(done)), encoding="utf-8")
    (out / "meta.json").write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    return merged
