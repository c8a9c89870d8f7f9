"""Reports from synthetic record sets: the join, the tables' numbers, the plots, the HTML, failures, bad input."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib.image as mpimg
import pandas as pd
import pytest

from bench import cli
from bench.analysis.report import write_report
from bench.analysis.sources import read_reported
from bench.analysis.tables import build_tables, table_latex
from bench.core.errors import UsageError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Per backbone: pipeline, size, params per variant, depth, single and hierarchical token profile as
# fractions of T, paper GFLOPs at T=243 per variant. Shaped like the real models, not their numbers.
BACKBONES = {
    "mixste": (
        "seq2seq",
        "base",
        {"rectangle": 33_783_811, "single": 35_000_323, "hierarchical": 33_783_811},
        [1] * 8,
        [1] * 3 + [1 / 3] * 5,
        [1, 1] + [1 / 3] * 3 + [1 / 9] * 3,
        {"rectangle": 277.4, "single": 167.5, "hierarchical": 116.6},
    ),
    "motionbert": (
        "seq2seq",
        "lite",
        {"rectangle": 16_001_549, "single": 16_347_661, "hierarchical": 16_001_549},
        [1] * 5,
        [1] + [1 / 3] * 4,
        [1, 1 / 3, 1 / 3, 1 / 9, 1 / 9],
        {"rectangle": 131.4, "single": 63.2, "hierarchical": 52.0},
    ),
    "mhformer": (
        "seq2frame",
        "base",
        {"rectangle": 31_516_125, "single": 31_516_125, "hierarchical": 31_516_125},
        [1] * 6,
        [1] + [1 / 3] * 5,
        [1, 1 / 3, 1 / 3, 1 / 9, 1 / 9, 1 / 9],
        {"rectangle": 9.7, "single": 5.6, "hierarchical": 4.4},
    ),
    "motionagformer": (
        "seq2seq",
        "base",
        {"rectangle": 11_730_000, "single": 11_900_000, "hierarchical": 11_730_000},
        [1] * 16,
        [1] * 7 + [1 / 3] * 9,
        [1] * 4 + [1 / 3] * 6 + [1 / 9] * 6,
        {"rectangle": 97.0, "single": 57.3, "hierarchical": 41.5},
    ),
}
SCHEDULES = {
    "mixste": ("3:81", "2:81,5:27"),
    "motionbert": ("1:81", "1:81,3:27"),
    "mhformer": ("1:81", "1:81,3:27"),
    "motionagformer": ("7:81", "4:81,10:27"),
}
VARIANTS = ("rectangle", "single", "hierarchical")


def case(backbone: str, variant: str, frames: int, batch: int = 1, device: str = "cpu") -> dict:
    pipeline, size = BACKBONES[backbone][:2]
    schedule = "" if variant == "rectangle" else SCHEDULES[backbone][variant == "hierarchical"]
    pruner = {"rectangle": "", "single": "tpc", "hierarchical": "tps"}[variant]
    recoverer = (
        "" if variant == "rectangle" or pipeline == "seq2frame" else {"single": "tra", "hierarchical": "tri"}[variant]
    )
    cid = f"{backbone}/{variant}/T{frames}/B{batch}/{size}/{schedule}/{device}/float32"
    return {
        "run_id": "synthetic-run",
        "case_id": cid,
        "backbone": backbone,
        "variant": variant,
        "pipeline": pipeline,
        "frames": frames,
        "batch": batch,
        "device": device,
        "dtype": "float32",
        "size": size,
        "schedule": schedule,
        "pruner": pruner,
        "recoverer": recoverer,
    }


def rec(
    c: dict, metric: str, value: float | None, method: str = "-", status: str = "ok", error: str = "", **extra
) -> dict:
    units = {
        "params": "count",
        "flops": "GFLOPs",
        "flops_block": "GFLOPs",
        "latency": "ms",
        "fps": "frames/s",
        "clips_per_s": "clips/s",
        "train_step": "ms",
        "peak_rss": "MiB",
        "peak_mem_alloc": "MiB",
        "speedup": "x",
        "mpjpe": "mm",
        "p_mpjpe": "mm",
        "mpjve": "mm",
        "achieved_gflops": "GFLOP/s",
        "machine_peak_gflops": "GFLOP/s",
        "mem_by_part": "MiB",
    }
    return {
        **c,
        "metric": metric,
        "value": value,
        "unit": units[metric],
        "method": method,
        "status": status,
        "error": error,
        **extra,
    }


def efficiency_records(c: dict) -> list[dict]:
    """Every efficiency record of a case, with numbers that scale with T like a transformer's."""
    b, v, t = c["backbone"], c["variant"], c["frames"]
    _, _, params, rect_profile, single_profile, hier_profile, gflops243 = BACKBONES[b]
    scale = t / 243
    paper = gflops243[v] * scale
    profile = {"rectangle": rect_profile, "single": single_profile, "hierarchical": hier_profile}[v]
    # fvcore: blocks cost in proportion to their tokens (+ attention growing with T), plus ~8 % outside.
    per_block = gflops243["rectangle"] * scale * 1.15 * (1 + 0.1 * scale) / len(rect_profile)
    fvcore = per_block * sum(profile) / 0.92
    out_frames = t if BACKBONES[b][0] == "seq2seq" else 1
    latency = 8.0 * fvcore / (1 + 0.1 * (v != "rectangle"))
    recs = [
        rec(c, "params", params[v]),
        rec(c, "flops", paper, "paper"),
        rec(c, "flops", fvcore, "fvcore", unsupported={"aten::gelu": len(profile)}),
        rec(c, "flops", fvcore * 1.01, "torch"),
        rec(c, "latency", latency, "torch.utils.benchmark", threads=2),
        rec(c, "fps", 1000.0 / latency * out_frames * c["batch"]),
        rec(c, "clips_per_s", 1000.0 / latency * c["batch"]),
        rec(c, "train_step", latency * 3.1),
        rec(c, "peak_rss", 300 + 2.0 * fvcore, "process", phase="inference"),
        rec(c, "peak_rss", 400 + 6.0 * fvcore, "process", phase="train"),
    ]
    for i, frac in enumerate(profile):
        recs.append(rec(c, "flops_block", per_block * frac, "fvcore", block=i, tokens=max(1, round(t * frac))))
    return recs


def write_run(run_dir: Path, records: list[dict], meta: dict | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "records.jsonl", "w") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    (run_dir / "meta.json").write_text(
        json.dumps(
            meta
            if meta is not None
            else {
                "schema_version": 1,
                "torch": "2.13.0",
                "cpu_model": "Test CPU 9000",
                "threads": 2,
                "hostname": "ci-box",
                "git_commit": "0123456789abcdef",
                "git_dirty": False,
            }
        )
    )
    return run_dir


def write_reported(path: Path, rows: list[tuple]) -> Path:
    lines = ["backbone,variant,frames,size,metric,value,unit,gflops_paper,source"]
    lines += [",".join(str(x) for x in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def full_run(tmp_path: Path, frames=(243,), backbones=tuple(BACKBONES)) -> Path:
    """The realistic run: 4 backbones x 3 variants x the given lengths."""
    records = []
    for b in backbones:
        for t in frames:
            for v in VARIANTS:
                records += efficiency_records(case(b, v, t))
    return write_run(tmp_path / "run", records)


# The HoT/H2OT figures as a reported table would hold them (mixste hierarchical deliberately absent).
REPORTED_ROWS = [
    ("mixste", "rectangle", 243, "base", "mpjpe", 40.9, "mm", 277.0, "HoT Fig. 1"),
    ("mixste", "single", 243, "base", "mpjpe", 41.0, "mm", 168.0, "HoT Fig. 1"),
    ("motionbert", "rectangle", 243, "lite", "mpjpe", 39.8, "mm", 131.0, "HoT Fig. 1"),
    ("motionbert", "single", 243, "", "mpjpe", 39.8, "mm", 63.0, "HoT Fig. 1"),
]


@pytest.fixture(autouse=True)
def _plots_only_where_tested(request, monkeypatch):
    """Rendering is most of a report's time: tests of tables and joins skip it (plot tests ask for
    ``real_plots``), which keeps this file well inside the suite's time budget on 2 cores."""
    if "real_plots" not in request.fixturenames:
        monkeypatch.setattr("bench.analysis.plots.render_all", lambda *a, **k: {})


@pytest.fixture
def real_plots() -> None:
    """Marks a test that renders the figures for real."""


@pytest.fixture
def mixste_run(tmp_path: Path) -> Path:
    records = []
    for v in VARIANTS:
        records += efficiency_records(case("mixste", v, 243))
    return write_run(tmp_path / "run", records)


def read_summary(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "summary.csv", keep_default_na=True).set_index("variant", drop=False)


# --------------------------------------------------------------------------- the join


def test_join_takes_accuracy_by_key_and_leaves_missing_values_blank(tmp_path, mixste_run):
    csv = write_reported(tmp_path / "reported.csv", REPORTED_ROWS)
    out = write_report(mixste_run, accuracy=[str(csv)], out=tmp_path / "rep")
    s = read_summary(out)
    assert s.loc["rectangle", "mpjpe_reported"] == pytest.approx(40.9)
    assert s.loc["single", "mpjpe_reported"] == pytest.approx(41.0)
    assert s.loc["single", "mpjpe_reported_change"] == pytest.approx(0.1)
    # Nobody reported mixste hierarchical: blank, not borrowed from a neighbour or interpolated.
    assert math.isnan(s.loc["hierarchical", "mpjpe_reported"])
    md = (out / "index.md").read_text()
    header = [c.strip() for c in next(line for line in md.splitlines() if line.startswith("| Variant")).split("|")]
    hier = [c.strip() for c in next(line for line in md.splitlines() if line.startswith("| hierarchical")).split("|")]
    assert dict(zip(header, hier, strict=True))["MPJPE reported (mm)"] == ""
    assert "41.0" in next(line for line in md.splitlines() if line.startswith("| single"))


def test_join_matches_frames_and_size_not_just_the_name(tmp_path, mixste_run):
    rows = [
        ("mixste", "rectangle", 81, "base", "mpjpe", 50.0, "mm", "", "x"),  # other T
        ("mixste", "rectangle", 243, "tiny", "mpjpe", 60.0, "mm", "", "x"),
    ]  # other size
    csv = write_reported(tmp_path / "reported.csv", rows)
    s = read_summary(write_report(mixste_run, accuracy=[str(csv)], out=tmp_path / "rep"))
    assert s["mpjpe_reported"].isna().all()


def test_measured_accuracy_joins_from_an_accuracy_run_and_stays_apart_from_reported(tmp_path, mixste_run):
    acc = [
        rec(case("mixste", v, 243), "mpjpe", val, "synthetic", steps=200, seed=0)
        for v, val in (("rectangle", 120.0), ("single", 123.5))
    ]
    acc_dir = write_run(tmp_path / "acc", acc)
    csv = write_reported(tmp_path / "reported.csv", REPORTED_ROWS)
    out = write_report(mixste_run, accuracy=[str(acc_dir), str(csv)], out=tmp_path / "rep")
    s = read_summary(out)
    assert s.loc["single", "mpjpe_synthetic"] == pytest.approx(123.5)
    assert s.loc["single", "mpjpe_synthetic_change"] == pytest.approx(3.5)
    assert s.loc["single", "mpjpe_reported"] == pytest.approx(41.0)  # not overwritten by synthetic
    header = next(line for line in (out / "index.md").read_text().splitlines() if line.startswith("| Variant"))
    assert "MPJPE reported (mm)" in header and "MPJPE synthetic (mm)" in header


def test_no_accuracy_sources_leaves_the_mpjpe_column_blank(tmp_path, mixste_run):
    out = write_report(mixste_run, accuracy=[], out=tmp_path / "rep")
    s = read_summary(out)
    assert not any(c.startswith("mpjpe") for c in s.columns)
    md = (out / "index.md").read_text()
    assert "MPJPE (mm)" in md and "No accuracy source" in md


# --------------------------------------------------------------------------- the numbers


def test_table_numbers_equal_the_records(tmp_path, mixste_run):
    out = write_report(mixste_run, accuracy=[], out=tmp_path / "rep")
    s = read_summary(out)
    records = [json.loads(line) for line in (mixste_run / "records.jsonl").read_text().splitlines()]

    def value(variant, metric, method=None, phase=None):
        (v,) = [
            r["value"]
            for r in records
            if r["variant"] == variant
            and r["metric"] == metric
            and (method is None or r["method"] == method)
            and (phase is None or r.get("phase") == phase)
        ]
        return v

    for variant in VARIANTS:
        assert s.loc[variant, "params"] == value(variant, "params")
        assert s.loc[variant, "gflops_paper"] == pytest.approx(value(variant, "flops", "paper"))
        assert s.loc[variant, "gflops_fvcore"] == pytest.approx(value(variant, "flops", "fvcore"))
        assert s.loc[variant, "peak_rss_inference_mib"] == pytest.approx(value(variant, "peak_rss", phase="inference"))
        assert s.loc[variant, "peak_rss_train_mib"] == pytest.approx(value(variant, "peak_rss", phase="train"))
    # Changes against the rectangle, worked out by hand from the synthetic numbers above.
    assert s.loc["single", "flops_change_pct"] == pytest.approx((167.5 / 277.4 - 1) * 100)
    assert s.loc["hierarchical", "flops_change_pct"] == pytest.approx(-57.97, abs=0.01)
    assert s.loc["single", "speedup"] == pytest.approx(value("single", "fps") / value("rectangle", "fps"))

    # The Markdown table shows those numbers: params counted, GFLOPs to 3 digits, change %, speed-up.
    md = (out / "index.md").read_text().splitlines()
    single = [c.strip() for c in next(line for line in md if line.startswith("| single")).split("|")[1:-1]]
    header = [c.strip() for c in next(line for line in md if line.startswith("| Variant")).split("|")[1:-1]]
    row = dict(zip(header, single, strict=True))
    assert row["Params"] == "35,000,323"
    assert row["GFLOPs (paper)"] == "168"
    assert row["ΔFLOPs % (paper)"] == "-39.6"
    assert row["Speed-up (×)"] == f"{s.loc['single', 'speedup']:.2f} †"  # no paired records: ratio of medians
    assert s.loc["single", "speedup_method"] == "ratio of medians"
    rect = dict(
        zip(
            header,
            [c.strip() for c in next(line for line in md if line.startswith("| rectangle")).split("|")[1:-1]],
            strict=True,
        )
    )
    assert rect["Params"] == "33,783,811" and rect["GFLOPs (paper)"] == "277"
    assert rect["ΔFLOPs % (paper)"] == "—"  # the rectangle is the reference, not a measured change


def test_a_measurement_recorded_twice_is_refused_naming_both_lines(tmp_path):
    """A run holds each measurement once (resume removes an unfinished case's records first), so a
    repeated key means a damaged or hand-merged file: the report names both lines, not the last."""
    c = case("mixste", "rectangle", 243)
    records = [rec(c, "params", 1.0), rec(c, "params", 2.0e6)]
    run = write_run(tmp_path / "run", records)
    with pytest.raises(UsageError, match=r"records.jsonl:2: .*params.* is also on line 1"):
        write_report(run, accuracy=[], out=tmp_path / "rep")
    assert not (tmp_path / "rep" / "index.md").exists()


def test_an_error_record_and_an_ok_one_of_the_same_metric_are_a_duplicate_too(tmp_path):
    c = case("mixste", "rectangle", 243)
    records = [rec(c, "fps", None, status="error", error="killed"), rec(c, "fps", 50.0)]
    with pytest.raises(UsageError, match="is also on line 1"):
        write_report(write_run(tmp_path / "run", records), accuracy=[], out=tmp_path / "rep")


def test_latex_table_is_booktabs_and_escapes(tmp_path, mixste_run):
    out = write_report(mixste_run, accuracy=[], out=tmp_path / "rep")
    tex = (out / "tables" / "mixste.tex").read_text()
    for cmd in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}", r"\caption{", r"\resizebox{"):
        assert cmd in tex
    assert r"$\Delta$FLOPs \%" in tex
    assert "tpc+tra" in tex and "33,783,811" in tex
    assert tex.count(r"\\") == 1 + 3  # header + one row per variant


# --------------------------------------------------------------------------- plots and HTML


def _assert_images(files: list[Path]) -> None:
    for f in files:
        assert f.is_file() and f.stat().st_size > 1000, f
        if f.suffix == ".png":
            assert f.read_bytes()[:8] == PNG_SIGNATURE
            img = mpimg.imread(f)
            assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
        else:
            root = ET.parse(f).getroot()
            assert root.tag.endswith("svg")


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> tuple[Path, float]:
    """The realistic report, rendered once: 4 backbones x 3 variants x 2 lengths, reported MPJPE joined."""
    import time

    tmp = tmp_path_factory.mktemp("full")
    run = full_run(tmp, frames=(81, 243))
    csv = write_reported(tmp / "reported.csv", REPORTED_ROWS)
    start = time.process_time()  # CPU time: wall time on a shared 2-core box says little
    out = write_report(run, accuracy=[str(csv)], out=tmp / "rep")
    return out, time.process_time() - start


def test_every_plot_is_written_as_valid_png_and_svg(full_report, real_plots):
    out, _ = full_report
    names = ("speedup_vs_flops", "cost_per_variant", "efficiency_accuracy", "scaling", "hourglass", "flops_per_block")
    files = [out / "plots" / f"{n}.{ext}" for n in names for ext in ("png", "svg")]
    _assert_images(files)


def test_report_of_a_24_case_run_is_fast(full_report, real_plots):
    _, cpu_seconds = full_report
    assert cpu_seconds < 10


def test_plots_without_their_data_are_left_out_and_say_why(tmp_path, mixste_run, real_plots):
    out = write_report(mixste_run, accuracy=[], out=tmp_path / "rep")  # one T, no accuracy
    assert not (out / "plots" / "scaling.png").exists()
    assert not (out / "plots" / "efficiency_accuracy.png").exists()  # an empty chart says nothing
    _assert_images([out / "plots" / "hourglass.png", out / "plots" / "flops_per_block.svg"])
    md = (out / "index.md").read_text()
    assert "Cost vs sequence length: not drawn; no backbone was measured at several sequence lengths" in md
    assert "Efficiency vs accuracy: not drawn; no accuracy value matches" in md
    assert "not drawn" in (out / "index.html").read_text()
    # no breakdown records: neither the roofline nor memory by part is drawn, and the page says why
    assert not (out / "plots" / "roofline.png").exists() and not (out / "plots" / "mem_by_part.png").exists()
    assert ("Achieved FLOP/s against the machine's GEMM peak: not drawn; no breakdown records: run with "
            "--metrics ...,breakdown") in md  # fmt: skip
    assert "Where the memory goes: MiB allocated by part: not drawn; the run has no memory by part" in md


def test_html_holds_every_table_and_embeds_every_plot(full_report, real_plots):
    out, _ = full_report
    page = (out / "index.html").read_text()
    for b in BACKBONES:
        assert f"id='table-{b}'" in page
    assert page.count("<table") == len(BACKBONES) + 1  # + the environment table
    pngs = sorted((out / "plots").glob("*.png"))
    assert len(pngs) == 6
    for png in pngs:
        assert f"data-plot='plots/{png.name}'" in page
        assert f"plots/{png.stem}.svg" in page
    assert page.count("src='data:image/png;base64,") == len(pngs)  # self-contained
    assert "Test CPU 9000" in page and "ci-box" in page  # the environment from meta.json
    assert "leaves out the attention matmuls" in page  # what the paper counter counts
    md = (out / "index.md").read_text()
    for png in pngs:
        assert f"(plots/{png.name})" in md


# --------------------------------------------------------------------------- failures


def test_failed_and_oom_cases_are_reported_and_marked(tmp_path):
    records = []
    for v in VARIANTS:
        records += efficiency_records(case("mixste", v, 243))
    big = case("mixste", "rectangle", 729)
    records += [rec(big, "params", 33_783_811), rec(big, "flops", 832.2, "paper")]
    records += [
        rec(big, "latency", None, status="oom", error="CUDA out of memory. Tried to allocate 9.5 GiB"),
        rec(big, "peak_rss", None, status="oom", error="CUDA out of memory. Tried to allocate 9.5 GiB"),
    ]
    ok_case = case("mixste", "single", 243)  # NVML unavailable: a skipped reading, the case still ok
    records.append(rec(ok_case, "peak_rss", None, status="skipped", error="no NVML") | {"metric": "peak_mem_device"})
    broken = case("mixste", "hierarchical", 729)
    records += [
        rec(broken, m, None, status="error", error="RuntimeError: shapes cannot be multiplied")
        for m in ("params", "flops", "latency", "peak_rss", "train_step")
    ]
    out = write_report(write_run(tmp_path / "run", records), accuracy=[], out=tmp_path / "rep")
    s = pd.read_csv(out / "summary.csv").set_index("case_id")
    assert s.loc[big["case_id"], "status"] == "oom"
    assert s.loc[broken["case_id"], "status"] == "error"
    assert s.loc[ok_case["case_id"], "status"] == "ok"
    assert "shapes cannot be multiplied" in s.loc[broken["case_id"], "failures"]
    md = (out / "index.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and "729" in line]
    oom_row = next(r for r in rows if r.startswith("| rectangle"))
    assert "OOM [" in oom_row and "832" in oom_row  # what was measured stays, what failed says why
    assert "error [" in next(r for r in rows if r.startswith("| hierarchical"))
    assert "Tried to allocate 9.5 GiB" in md and "shapes cannot be multiplied" in md  # the footnotes
    assert "OOM" in (out / "index.html").read_text()
    assert r"\textsuperscript{" in (out / "tables" / "mixste.tex").read_text()


def test_failed_accuracy_record_marks_its_cell(tmp_path, mixste_run):
    acc = [
        rec(case("mixste", "rectangle", 243), "mpjpe", 100.0, "synthetic"),
        rec(case("mixste", "single", 243), "mpjpe", None, "synthetic", status="error", error="NaN loss"),
    ]
    acc[1]["method"] = "-"  # as failure() writes it: the report files it under the source's data set
    out = write_report(mixste_run, accuracy=[str(write_run(tmp_path / "acc", acc))], out=tmp_path / "rep")
    md = (out / "index.md").read_text()
    assert "NaN loss" in md
    assert "error [" in next(line for line in md.splitlines() if line.startswith("| single"))


# --------------------------------------------------------------------------- bad input


def test_malformed_records_name_file_and_line(tmp_path, mixste_run):
    path = mixste_run / "records.jsonl"
    lines = path.read_text().splitlines()
    lines.insert(2, '{"case_id": "x", "metric": ')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match=r"records\.jsonl:3:"):
        write_report(mixste_run, accuracy=[], out=tmp_path / "rep")


def test_missing_run_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="nowhere"):
        write_report(tmp_path / "nowhere", out=tmp_path / "rep")


@pytest.mark.parametrize(
    "row, message",
    [
        ("mixste,single,243,base,mpjpe,forty,mm,,HoT", r"reported\.csv:3: value must be a number, got 'forty'"),
        ("mixste,single,two-four-three,base,mpjpe,41,mm,,HoT", r"reported\.csv:3: frames must be an integer"),
        ("mixste,single,243,base,mpjpe,41,mm", r"reported\.csv:3: expected 9 comma-separated fields"),
        ("mixste,single,243,base,mpjpe,41,mm,nan,HoT", r"reported\.csv:3: gflops_paper must be finite"),
    ],
)
def test_malformed_reported_table_names_file_and_line(tmp_path, row, message):
    path = write_reported(tmp_path / "reported.csv", [REPORTED_ROWS[0]])
    path.write_text(path.read_text() + row + "\n")
    with pytest.raises(UsageError, match=message):
        read_reported(path)


def test_reported_table_without_its_columns_is_rejected(tmp_path):
    path = tmp_path / "reported.csv"
    path.write_text("backbone,variant,mpjpe\nmixste,single,41\n")
    with pytest.raises(UsageError, match=r"reported\.csv:1: header lacks frames"):
        read_reported(path)


def test_accuracy_run_without_accuracy_records_is_rejected(tmp_path, mixste_run):
    with pytest.raises(UsageError, match="holds no accuracy records"):
        write_report(mixste_run, accuracy=[str(mixste_run)], out=tmp_path / "rep")


def test_cli_reports_and_exits_2_on_bad_input(tmp_path, mixste_run, capsys):
    out = tmp_path / "rep"
    assert cli.main(["report", str(mixste_run), "--accuracy", "--out", str(out)]) == 0
    assert str(out / "index.html") in capsys.readouterr().out

    bad = write_reported(tmp_path / "reported.csv", [REPORTED_ROWS[0]])
    bad.write_text(bad.read_text() + "mixste,single,243,base,mpjpe,,mm,,HoT\n")
    assert cli.main(["report", str(mixste_run), "--accuracy", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "reported.csv:3: value is empty" in err and "Traceback" not in err
    assert cli.main(["report", str(tmp_path / "missing-run")]) == 2
    assert "missing-run" in capsys.readouterr().err


def test_tables_are_one_per_backbone_with_variants_as_rows(tmp_path):
    from bench.analysis.sources import records_frame
    from bench.analysis.summary import summarize

    run = full_run(tmp_path)
    tables = build_tables(summarize(records_frame(run)), {})
    assert [t.backbone for t in tables] == sorted(BACKBONES)
    for t in tables:
        assert [row[0].text for row in t.rows] == list(VARIANTS)
        assert r"\bottomrule" in table_latex(t)


def test_plotted_points_keep_measured_and_reported_apart(tmp_path, mixste_run):
    from bench.analysis.plots.efficiency import _accuracy_points
    from bench.analysis.sources import load_accuracy, records_frame
    from bench.analysis.summary import summarize

    acc = [rec(case("mixste", "rectangle", 243), "mpjpe", 120.0, "synthetic")]
    acc_dir = write_run(tmp_path / "acc", acc)
    reported = load_accuracy(str(write_reported(tmp_path / "reported.csv", REPORTED_ROWS)))
    summary = summarize(records_frame(mixste_run), pd.concat([load_accuracy(str(acc_dir)), reported]))
    pts = _accuracy_points(summary, reported)
    pts = pts[pts["backbone"] == "mixste"].set_index(["variant", "hollow"])
    # The paper's own point: its GFLOPs and MPJPE; ours: this run's GFLOPs and our MPJPE.
    assert pts.loc[("rectangle", True), "gflops"] == 277.0 and pts.loc[("rectangle", True), "mpjpe"] == 40.9
    assert pts.loc[("rectangle", False), "gflops"] == pytest.approx(277.4)
    assert pts.loc[("rectangle", False), "mpjpe"] == 120.0 and pts.loc[("rectangle", False), "kind"] == "synthetic"
    assert ("hierarchical", True) not in pts.index  # nothing reported, nothing plotted


def test_unwritable_output_directory_is_a_usage_error(tmp_path, mixste_run):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(UsageError, match="cannot write the report to"):
        write_report(mixste_run, accuracy=[], out=blocker / "rep")


def test_backbones_at_different_single_lengths_are_no_scaling_curve(tmp_path, real_plots):
    # The paper preset measures MHFormer at 351 and the others at 243: two T in the run, but no
    # backbone at several T, so there is nothing to draw a curve through.
    records = [r for b, t in (("mixste", 243), ("mhformer", 351)) for v in VARIANTS for r in efficiency_records(case(b, v, t))]
    out = write_report(write_run(tmp_path / "run", records), accuracy=[], out=tmp_path / "rep")
    assert not (out / "plots" / "scaling.png").exists()
    records += [r for v in VARIANTS for r in efficiency_records(case("mixste", v, 81))]
    out = write_report(write_run(tmp_path / "run2", records), accuracy=[], out=tmp_path / "rep2")
    _assert_images([out / "plots" / "scaling.png"])


# --------------------------------------------------------------------------- timing statistics (SPEC section 9)


def timed_run(tmp_path: Path, unstable: str = "") -> Path:
    """mixste x 3 variants with the timing fields of SPEC section 9 and paired speed-up records."""
    records = []
    for v in VARIANTS:
        c = case("mixste", v, 243)
        for r in efficiency_records(c):
            if r["metric"] in ("latency", "train_step"):
                r.update(n=20, ci_low=r["value"] * 0.97, ci_high=r["value"] * 1.04, stable=True, mad_pct=1.5)
            records.append(r)
        if v != "rectangle":
            records.append(rec(c, "speedup", 1.5 if v == "single" else 2.25, "paired", n=20, ci_low=1.4,
                               ci_high=1.6 if v == "single" else 2.4, stable=v != unstable, mad_pct=9.0))  # fmt: skip
    return write_run(tmp_path / "run", records)


def test_paired_speedup_and_cis_fill_the_table(tmp_path):
    out = write_report(timed_run(tmp_path, unstable="hierarchical"), accuracy=[], out=tmp_path / "rep")
    s = read_summary(out)
    assert s.loc["single", "speedup"] == 1.5 and s.loc["single", "speedup_method"] == "paired"
    assert s.loc["single", "speedup_ci_low"] == 1.4
    assert s["params"].dtype.kind == "i"  # counts stay integers in the CSV
    md = (out / "index.md").read_text()
    single = next(line for line in md.splitlines() if line.startswith("| single"))
    assert "1.50 [1.40, 1.60]" in single and "†" not in single
    hier = next(line for line in md.splitlines() if line.startswith("| hierarchical"))
    assert "2.25 [1.40, 2.40] [" in hier  # the unstable figure carries a footnote mark
    assert "unstable speedup timing (MAD 9.0 % of the median)" in md
    assert "Unstable timings" in md and "mixste/hierarchical" in md.split("Unstable timings")[1].split("\n")[0]
    assert "class='warn'" in (out / "index.html").read_text()


def test_accuracy_at_another_length_is_named_not_left_as_empty_columns(tmp_path, mixste_run):
    csv = write_reported(tmp_path / "reported.csv", [("mixste", "rectangle", 81, "base", "mpjpe", 50.0, "mm", "", "x")])
    out = write_report(mixste_run, accuracy=[str(csv)], out=tmp_path / "rep")
    md = (out / "index.md").read_text()
    assert "Accuracy exists only at another T or size" in md and "mixste at T=81 size base (this run: T=243 size base)" in md
    header = next(line for line in md.splitlines() if line.startswith("| Variant"))
    assert "MPJPE reported" not in header


def test_a_report_without_accuracy_has_the_efficiency_plots(tmp_path, real_plots):
    from bench.analysis.plots import costs, efficiency

    out = write_report(timed_run(tmp_path), accuracy=[], out=tmp_path / "rep")
    drawn = sorted(p.stem for p in (out / "plots").glob("*.png"))
    assert {"speedup_vs_flops", "cost_per_variant", "hourglass", "flops_per_block"} <= set(drawn)
    _assert_images([out / "plots" / f"{n}.png" for n in drawn])
    fig = efficiency.speedup_vs_flops(read_summary(out).reset_index(drop=True))
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("FLOPs saving") and "realised = FLOPs" in [t.get_text() for t in ax.texts]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "paired (95 % CI)" in labels and "rectangle" not in labels  # only what is drawn
    fig = costs.cost_per_variant(read_summary(out).reset_index(drop=True))
    assert [a.get_title() for a in fig.axes] == [
        "Latency per forward", "Training step", "Peak memory, inference (CPU RSS)", "Peak memory, training (CPU RSS)"
    ]
    assert "95 % CI of the median" in fig._suptitle.get_text()


def test_accuracy_axis_has_a_minimum_span_and_legend_lists_only_drawn_variants(tmp_path, mixste_run, real_plots):
    from bench.analysis.plots import efficiency
    from bench.analysis.sources import load_accuracy, records_frame
    from bench.analysis.summary import summarize

    reported = load_accuracy(str(write_reported(tmp_path / "reported.csv", REPORTED_ROWS)))
    summary = summarize(records_frame(mixste_run), reported)
    fig = efficiency.efficiency_accuracy(summary, reported)
    lo, hi = fig.axes[0].get_ylim()
    assert hi - lo >= efficiency.MIN_MPJPE_SPAN_MM  # 40.9 vs 41.0 mm must not fill the axis
    texts = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert "single" in texts and "hierarchical" not in texts  # no MPJPE for hierarchical: not in the legend


def test_a_plot_is_added_by_registering_one_function(tmp_path, mixste_run, real_plots, monkeypatch):
    from bench.analysis import plots

    monkeypatch.setattr(plots.base, "PLOTS", dict(plots.PLOTS))  # the registry: undone after the test

    @plots.register("my_plot", "My plot", "never missing")
    def _mine(data):
        fig, ax = plots.base.plt.subplots()
        ax.plot(data.summary["frames"], data.summary["params"])
        return fig

    out = write_report(mixste_run, accuracy=[], out=tmp_path / "rep")
    assert (out / "plots" / "my_plot.png").is_file() and "### My plot" in (out / "index.md").read_text()


def breakdown_run(tmp_path: Path) -> Path:
    """mixste's three variants at T=243 with the breakdown group's records: achieved FLOP/s by two
    counters, the GEMM peak (the hierarchical case timed at one thread, the others at two) and MiB by part."""
    records = []
    for i, v in enumerate(VARIANTS):
        c = case("mixste", v, 243)
        records += efficiency_records(c)
        threads, peak = (1, 40.0) if v == "hierarchical" else (2, 80.0)
        records.append(rec(c, "machine_peak_gflops", peak, "gemm", threads=threads, dtype="float32"))
        records.append(rec(c, "achieved_gflops", 10.0 + i, "fvcore", ci_low=9.0 + i, ci_high=12.0 + i))
        records.append(rec(c, "achieved_gflops", 99.0, "torch"))  # the figure uses fvcore when the run has it
        for block in (0, 1):
            records.append(rec(c, "mem_by_part", 2.0 + i, "torch.profiler", part="mlp", block=block, phase="inference"))
            records.append(rec(c, "mem_by_part", 1.0, "torch.profiler", part="mlp", block=block, phase="train",
                               step="backward"))  # fmt: skip
        records.append(rec(c, "mem_by_part", 0.5, "torch.profiler", part="prune", block=2, phase="inference"))
    return write_run(tmp_path / "run", records)


def _breakdown_report(tmp_path, plot: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The report of :func:`breakdown_run` with ``plot`` drawn: its summary table and the run's records."""
    run = breakdown_run(tmp_path)
    out = write_report(run, accuracy=[], out=tmp_path / "rep")
    _assert_images([out / "plots" / f"{plot}.png", out / "plots" / f"{plot}.svg"])
    return pd.read_csv(out / "summary.csv"), pd.read_json(run / "records.jsonl", lines=True)


def test_roofline_has_a_point_per_case_and_a_peak_per_device_dtype_and_threads(tmp_path, real_plots):
    from bench.analysis import plots
    from bench.analysis.plots import breakdown

    summary, recs = _breakdown_report(tmp_path, "roofline")
    data = plots.PlotInputs(summary, recs[recs["metric"] == "flops_block"], None,
                            breakdown=recs[recs["metric"].isin(("achieved_gflops", "machine_peak_gflops"))])  # fmt: skip
    fig = breakdown.roofline(data)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "achieved GFLOP/s (fvcore FLOPs / median latency)"
    points = {tuple(c.lines[0].get_xydata()[0]) for c in ax.containers}
    # x: the mean over blocks of flops_block's tokens (mixste's profiles at T=243), batch 1
    tokens = {v: sum(max(1, round(243 * f)) for f in prof) / len(prof)
              for v, prof in zip(VARIANTS, BACKBONES["mixste"][3:6], strict=True)}  # fmt: skip
    assert points == {(tokens[v], 10.0 + i) for i, v in enumerate(VARIANTS)}
    peaks = sorted(line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == "--")
    assert peaks == [40.0, 80.0]
    assert any("2 threads: 80.0 GFLOP/s" in t.get_text() for t in ax.texts)


def test_mem_by_part_stacks_the_parts_of_each_phase(tmp_path, real_plots):
    from bench.analysis import plots
    from bench.analysis.plots import breakdown

    summary, recs = _breakdown_report(tmp_path, "mem_by_part")
    fig = breakdown.mem_by_part(recs[recs["metric"] == "mem_by_part"], summary)
    inference, train = fig.axes[:2]
    assert inference.get_xlabel() == "MiB allocated per forward" and "training step" in train.get_xlabel()
    # summed over blocks: 2 x (2 + i) MiB of mlp and 0.5 MiB of prune per forward; 2 MiB per training step
    assert [t.get_text() for t in inference.texts] == [plots.short(2 * (2.0 + i) + 0.5) for i in range(3)]
    assert [t.get_text() for t in train.texts] == ["2.00"] * 3
