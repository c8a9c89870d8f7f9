"""What a report reads: a run's records as one frame, and accuracy from its sources.

Accuracy comes from run directories or ``records.jsonl`` files (methods synthetic, h36m) or from a
reported-values table: the papers' table shipped as ``bench/analysis/reported.csv`` (method
``reported``) or a user's own ``.csv`` of the same columns, validated row by row. All of it becomes
long rows keyed by :data:`JOIN_KEYS`, which :mod:`bench.analysis.summary` joins to the cases.
"""

from __future__ import annotations

import csv
import math
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.errors import UsageError
from ..core.results import MEASUREMENT_KEY, read_records

ACCURACY_METRICS = ("mpjpe", "p_mpjpe", "mpjve")
REPORTED_COLUMNS = ("backbone", "variant", "frames", "size", "metric", "value", "unit", "gflops_paper", "source")
JOIN_KEYS = ["backbone", "variant", "frames", "size"]


def reported_table_path() -> Path:
    """The papers' reported-values table shipped with the package (``bench/analysis/reported.csv``)."""
    return Path(str(resources.files("bench.analysis") / "reported.csv"))


def read_reported(path: str | Path) -> pd.DataFrame:
    """A reported-values table (columns :data:`REPORTED_COLUMNS`), validated row by row.

    Returns long accuracy rows (method ``reported``) plus ``gflops_paper`` and ``source``; a bad
    row raises UsageError naming the file and line, so a typo in the table cannot slip into a plot.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such reported-values table")
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REPORTED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UsageError(f"{path}:1: header lacks {', '.join(missing)}; expected {','.join(REPORTED_COLUMNS)}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row or any(row[c] is None for c in REPORTED_COLUMNS):
                raise UsageError(f"{where}: expected {len(REPORTED_COLUMNS)} comma-separated fields")
            if not any(v.strip() for v in row.values() if isinstance(v, str)):
                continue
            for col in ("backbone", "variant", "metric", "source"):
                if not row[col].strip():
                    raise UsageError(f"{where}: {col} is empty")
            try:
                frames = int(row["frames"])
            except ValueError:
                raise UsageError(f"{where}: frames must be an integer, got {row['frames']!r}") from None
            value = _finite(row["value"], where, "value", required=True)
            gflops = _finite(row["gflops_paper"], where, "gflops_paper", required=False)
            rows.append({
                "backbone": row["backbone"].strip(), "variant": row["variant"].strip(), "frames": frames,
                "size": row["size"].strip(), "metric": row["metric"].strip(), "value": value,
                "unit": row["unit"].strip(), "method": "reported", "status": "ok", "error": "",
                "gflops_paper": gflops, "source": row["source"].strip(),
            })  # fmt: skip
    return pd.DataFrame(
        rows, columns=[*JOIN_KEYS, "metric", "value", "unit", "method", "status", "error", "gflops_paper", "source"]
    )


def _finite(text: str, where: str, name: str, required: bool) -> float | None:
    if not text.strip():
        if required:
            raise UsageError(f"{where}: {name} is empty")
        return None
    try:
        x = float(text)
    except ValueError:
        raise UsageError(f"{where}: {name} must be a number, got {text!r}") from None
    if not math.isfinite(x):
        raise UsageError(f"{where}: {name} must be finite, got {text!r}")
    return x


def load_accuracy(source: str) -> pd.DataFrame:
    """Long accuracy rows of one source: ``reported``, a ``.csv`` table, a run dir or records file."""
    if source == "reported":
        path = reported_table_path()
        if not path.is_file():
            raise UsageError(f"reported: the reported-values table {path} is missing from this installation")
        return read_reported(path)
    path = Path(source)
    if path.suffix == ".csv":
        return read_reported(path)
    if not path.exists():
        raise UsageError(
            f"{source}: no such accuracy source; give a run directory, a records.jsonl, a reported-values .csv "
            "or 'reported'"
        )
    recs = [r for r in read_records(path) if r["metric"] in ACCURACY_METRICS]
    if not recs:
        raise UsageError(f"{source}: holds no accuracy records ({', '.join(ACCURACY_METRICS)})")
    df = pd.DataFrame(recs)
    return accuracy_frame(df)


def accuracy_frame(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for col in ("method", "error", "size"):
        if col not in df:
            df[col] = ""
    # failure() records carry no method ("-"): they belong to the data set of their source's other
    # records (one source is one data set), else to the default, synthetic.
    method = df["method"].fillna("-").astype(str)
    known = method[~method.isin(["-", ""])]
    df["method"] = method.where(~method.isin(["-", ""]), known.mode().iloc[0] if len(known) else "synthetic")
    df["gflops_paper"] = None
    df["source"] = ""
    return df[[*JOIN_KEYS, "metric", "value", "unit", "method", "status", "error", "gflops_paper", "source"]]


def records_frame(run_dir: Path) -> pd.DataFrame:
    recs = read_records(run_dir)
    if not recs:
        raise UsageError(f"{run_dir}: the run holds no records to report")
    df = pd.DataFrame(recs)
    defaults: dict[str, Any] = {
        "run_id": run_dir.name, "pipeline": "", "frames": 0, "batch": 1, "device": "", "dtype": "",
        "size": "", "schedule": "", "pruner": "", "recoverer": "", "runtime": "eager", "method": "", "error": "",
        "phase": "inference", "block": None, "tokens": None, "unsupported": None, "part": "", "step": "",
        "fps_in": None,
    }  # fmt: skip
    for col, default in defaults.items():
        if col not in df:
            df[col] = default
        elif isinstance(default, str):
            df[col] = df[col].fillna(default)
    df["frames"] = df["frames"].fillna(0).astype(int)
    df["batch"] = df["batch"].fillna(1).astype(int)
    # Records from before precisions existed: the precision of their dtype
    implied = df["dtype"].map({"float16": "fp16", "bfloat16": "bf16"}).fillna("fp32")
    df["precision"] = df["precision"].where(df["precision"] != "", implied) if "precision" in df else implied
    # --resume may have re-measured part of a case: the last record of a measurement wins, and a
    # failure that a later record of the same metric made good no longer counts.
    df["_block"] = df["block"].fillna(-1)
    key = [k if k != "block" else "_block" for k in MEASUREMENT_KEY]
    df = df.drop_duplicates(key, keep="last").drop(columns="_block")
    df["_n"] = range(len(df))
    last_ok = df[df["status"] == "ok"].groupby(["case_id", "metric"])["_n"].max()
    later_ok = [last_ok.get((c, m), -1) > n for c, m, n in zip(df["case_id"], df["metric"], df["_n"], strict=True)]
    df = df[~((df["status"] != "ok") & pd.Series(later_ok, index=df.index))]
    return df.drop(columns="_n").reset_index(drop=True)


__all__ = ["ACCURACY_METRICS", "load_accuracy", "read_reported", "reported_table_path"]
