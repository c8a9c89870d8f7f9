"""`vptbench history`: runs ordered by commit, grouped by machine, steps found where they are and nowhere else.

Most tests build synthetic runs (records.jsonl + meta.json) over fake commits: 8 runs, noise within
the CIs everywhere, and a 20 % step in one metric at run 5.
"""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
from pathlib import Path

import pytest

from bench import cli
from bench.analysis import series as S
from bench.analysis.history import build_history, history_csv
from bench.analysis.history_page import chart_id, write_history
from bench.analysis.steps import detect
from bench.core.results import read_records

CASES = {
    "mixste/rectangle/T27/B1/tiny/cpu/float32": ("mixste", "rectangle"),
    "mixste/hierarchical/T27/B1/tiny/2:9,5:3/tps+tri/cpu/float32": ("mixste", "hierarchical"),
}
STEP_CASE = "mixste/hierarchical/T27/B1/tiny/2:9,5:3/tps+tri/cpu/float32"
MACHINE = {"hostname": "ci-1", "cpu_model": "AMD EPYC", "cpu_count": 2, "threads": 2, "device_name": None}


def noise(i: int, k: int) -> float:
    """Deterministic noise within +-2 %: well inside the +-5 % CIs the records carry."""
    return 1 + 0.02 * math.sin(1.7 * i + 2.3 * k)


def records(run_id: str, i: int, step_at: int | None = 4) -> list[dict]:
    out = []
    for k, (case_id, (backbone, variant)) in enumerate(CASES.items()):
        base = {"run_id": run_id, "case_id": case_id, "backbone": backbone, "variant": variant, "status": "ok",
                "error": "", "frames": 27, "batch": 1, "device": "cpu", "dtype": "float32"}  # fmt: skip
        latency = (40.0 if variant == "rectangle" else 20.0) * noise(i, k)
        if case_id == STEP_CASE and step_at is not None and i >= step_at:
            latency *= 1.2  # the 20 % step: slower from run 5 on
        timed = {"ci_low": 0.95, "ci_high": 1.05}
        out += [
            base | {"metric": "params", "value": 100_000 + k, "unit": "count", "method": "-"},
            base | {"metric": "flops", "value": 0.5 + k, "unit": "GFLOPs", "method": "paper"},
            base | {"metric": "latency", "value": latency, "unit": "ms", "method": "timeit", "n": 40, "stable": True,
                    "ci_low": latency * timed["ci_low"], "ci_high": latency * timed["ci_high"],
                    "samples": [latency * (1 + 0.01 * math.sin(j)) for j in range(9)]},
            base | {"metric": "fps", "value": 27e3 / latency, "unit": "frames/s", "method": "-"},
            base | {"metric": "peak_rss", "value": 300.0 * noise(i, k + 5), "unit": "MiB", "method": "process",
                    "phase": "inference"},
        ]  # fmt: skip
        if variant != "rectangle":
            sp = 2.0 * noise(i, k + 9)
            out.append(base | {"metric": "speedup", "value": sp, "unit": "x", "method": "paired", "stable": i != 2,
                               "ci_low": sp * 0.95, "ci_high": sp * 1.05, "n": 40})  # fmt: skip
    return out


def commit_of(i: int) -> str:
    return f"{i:x}" * 40 if i else "0" * 40


def write_run(root: Path, i: int, *, machine: dict | None = None, recs: list[dict] | None = None,
              commit_date: bool = True, commit: str | None = None) -> Path:  # fmt: skip
    run_id = f"run-{i + 1}"
    d = root / run_id
    d.mkdir(parents=True)
    rows = recs if recs is not None else records(run_id, i)
    (d / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = {"run_id": run_id, "git_commit": commit or commit_of(i + 1), "git_dirty": False,
            # start times run backwards: the order must come from the commit dates
            "start_time": f"2026-12-{20 - i:02d}T10:00:00+00:00", **(machine or MACHINE)}  # fmt: skip
    if commit_date:
        meta["git_commit_date"] = f"2026-11-{i + 1:02d}T12:00:00+00:00"
    (d / "meta.json").write_text(json.dumps(meta))
    return d


@pytest.fixture
def eight(tmp_path) -> Path:
    root = tmp_path / "hist"
    for i in (3, 0, 7, 5, 1, 6, 2, 4):  # written out of order
        write_run(root, i)
    return root


def test_the_step_at_run_5_is_named_with_its_commit_and_nothing_else_is_flagged(eight):
    h = build_history([str(eight)])
    assert [r.run_id for r in h.runs] == [f"run-{i}" for i in range(1, 9)]  # commit order, not start order
    assert len(h.steps) == 1
    (f,) = h.steps
    assert (f.series.case_id, f.series.label) == (STEP_CASE, "latency")
    assert f.run.run_id == "run-5" and f.run.commit == commit_of(5) and f.step.index == 4
    assert f.step.confirmed and f.worse and f.step.change == pytest.approx(0.2, abs=0.03)
    assert not any(s.metric == "fps" for s in h.series[f.series.machine])  # FPS repeats the latency: on request


def test_fps_asked_for_carries_the_latencys_ci_inverted_and_steps_with_it(eight):
    h = build_history([str(eight)], metrics=["fps"])
    fps = next(s for s in h.series[h.runs[0].machine] if s.case_id == STEP_CASE)
    p, lat = fps.points[0], next(r for r in h.runs[0].records if r["case_id"] == STEP_CASE and r["metric"] == "latency")
    assert p.low == pytest.approx(p.value * lat["value"] / lat["ci_high"]) and p.low < p.value < p.high
    (f,) = h.steps
    assert f.series is fps and f.run.run_id == "run-5" and f.worse and f.step.change < -0.1


def test_the_command_prints_the_step_table_and_exits_0(eight, tmp_path, capsys):
    out = tmp_path / "page"
    assert cli.main(["history", str(eight / "*"), "--out", str(out), "--metrics", "latency,speedup,params"]) == 0
    text = capsys.readouterr().out
    assert "1 step(s) in 5 series over 8 run(s)" in text
    line = next(ln for ln in text.splitlines() if STEP_CASE in ln)
    assert "run-5" in line and commit_of(5)[:7] in line and "+" in line and "(worse)" in line
    assert text.strip().splitlines()[-2] == f"history: {out / 'index.html'}"
    page = (out / "index.html").read_text()
    assert page.count('<figure class="chart') == 5 and page.count("<svg") == 5
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "<script" not in page


def test_csv_has_one_row_per_run_case_and_metric_and_marks_the_step(eight):
    h = build_history([str(eight)], metrics=["latency", "peak_rss"])
    rows = list(csv.DictReader(io.StringIO(history_csv(h))))
    assert len(rows) == 8 * 2 * 2
    stepped = [r for r in rows if r["step_change"]]
    assert [(r["run_id"], r["case_id"], r["label"], r["commit"]) for r in stepped] == [
        ("run-5", STEP_CASE, "latency", commit_of(5))
    ]
    assert float(stepped[0]["ci_low"]) < float(stepped[0]["value"]) < float(stepped[0]["ci_high"])
    assert {r["date_source"] for r in rows} == {"commit"}


def test_filters_pick_backbones_variants_and_metrics(eight):
    h = build_history([str(eight)], variants=["rectangle"], metrics=["latency", "flops"])
    (series,) = h.series.values()
    assert {(s.case_id, s.label) for s in series} == {
        ("mixste/rectangle/T27/B1/tiny/cpu/float32", "latency"), ("mixste/rectangle/T27/B1/tiny/cpu/float32", "flops[paper]")
    }  # fmt: skip
    assert h.steps == []


def test_machines_are_grouped_and_never_mixed(tmp_path, capsys):
    root = tmp_path / "h"
    for i in range(4):
        write_run(root / "a", i)
        slow = [r | {"value": r["value"] * 3} if r["metric"] == "latency" else r for r in records(f"run-{i + 1}", i)]
        write_run(root / "b", i, machine=MACHINE | {"hostname": "gpu-box", "device_name": "NVIDIA H100"}, recs=slow)
    h = build_history([str(root / "a"), str(root / "b")], metrics=["latency"])
    assert len(h.machines) == 2 and h.steps == []  # 3x slower on the other machine is not a step
    assert all(len(runs) == 4 for runs in h.machines.values())
    gpu = next(m for m in h.machines if m.device)
    assert "gpu-box" in gpu.label and "NVIDIA H100" in gpu.label
    only = build_history([str(root / "a"), str(root / "b")], metrics=["latency"], machine="h100")
    assert list(only.machines) == [gpu]
    assert build_history([str(root / "a"), str(root / "b")], machine=gpu.id).machines.keys() == {gpu}
    assert cli.main(["history", str(root / "a"), "--machine", "nosuch", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--machine 'nosuch' matches none" in err[0] and "ci-1" in err[0]


def _git(repo: Path, *args: str, date: str | None = None) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x", "HOME": str(repo), "PATH": "/usr/bin:/bin"}  # fmt: skip
    if date:
        env |= {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    return subprocess.run(["git", "-C", str(repo), *args], env=env, check=True, capture_output=True, text=True).stdout


def test_commit_dates_come_from_git_when_the_run_does_not_record_them(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    commits = []
    for i in range(8):
        (repo / "f.txt").write_text(str(i))
        _git(repo, "add", "f.txt")
        _git(repo, "commit", "-q", "-m", f"c{i}", date=f"2026-10-{i + 1:02d}T08:00:00+00:00")
        commits.append(_git(repo, "rev-parse", "HEAD").strip())
    root = tmp_path / "runs"
    for i in (5, 2, 7, 0, 4, 1, 3, 6):
        write_run(root, i, commit_date=False, commit=commits[i])
    monkeypatch.chdir(repo)  # git is asked in the current checkout
    h = build_history([str(root)])
    assert [r.commit for r in h.runs] == commits and {r.date_source for r in h.runs} == {"commit"}
    assert h.runs[0].date.isoformat() == "2026-10-01T08:00:00+00:00"
    (f,) = h.steps
    assert f.run.commit == commits[4] and f.series.label == "latency"
    monkeypatch.chdir(tmp_path)  # not a checkout: the runs' start times order them (backwards here)
    S.commit_date.cache_clear()
    h = build_history([str(root)])
    assert {r.date_source for r in h.runs} == {"start"} and h.runs[0].run_id == "run-8"


def _series(values, cis=0.05, stable=True):
    return [S.Point(v, v * (1 - cis), v * (1 + cis), stable) if v is not None else None for v in values]


@pytest.mark.parametrize(
    "values, kind, expected",
    [
        ([10, 10.1, 9.9, 12, 12.1, 11.9], "ci", [(3, True)]),  # a sustained step
        ([10, 10.1, 9.9, 12, 10.1, 9.9], "ci", []),  # one outlier the next run does not follow
        ([10, 10.1, 9.9, 10, 10.1, 12], "ci", [(5, False)]),  # the latest run only: not yet confirmed
        ([10, 10.3, 10.6, 10.9, 11.2, 11.5, 11.8], "ci", [(5, True)]),  # a drift, found once it leaves the CIs
        ([10, None, 10, 12, None, 12], "ci", [(3, True)]),  # runs without the figure are skipped
        ([100, 100, 101, 101, 101], "exact", [(2, True)]),  # a count: any change, at once
        ([300, 305, 297, 340, 341], "relative", [(3, True)]),  # memory: more than 5 %
        ([300, 305, 297, 310, 306], "relative", []),
    ],
)
def test_the_change_point_rule(values, kind, expected):
    steps = detect(_series(values), kind)
    assert [(s.index, s.confirmed) for s in steps] == expected


def test_a_timing_without_a_ci_is_never_a_step():
    pts = [S.Point(v) for v in (10, 10, 10, 20, 20, 20)]
    assert detect(pts, "ci") == []


def test_a_tight_ci_does_not_make_a_small_change_a_step():
    assert detect(_series([10, 10, 10, 10.3, 10.3, 10.3], cis=0.001), "ci") == []  # 3 % < MIN_CHANGE
    assert [s.index for s in detect(_series([10, 10, 10, 10.6, 10.6, 10.6], cis=0.001), "ci")] == [3]  # 6 % is


def test_the_page_marks_the_step_and_unstable_points(eight, tmp_path):
    h = build_history([str(eight)], metrics=["latency", "speedup"])
    page = (write_history(h, tmp_path / "o") / "index.html").read_text()
    (f,) = h.steps
    assert f'<figure class="chart stepped worse" id="{chart_id(f.series)}"' in page
    assert page.count('class="step"') == 1 and f'href="#{chart_id(f.series)}"' in page
    assert page.count('class="unstable"') == 1  # run 3's speed-up is marked not stable: one hollow point
    assert commit_of(5)[:7] in page


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: [str(tmp / "nothing-*")], "matches nothing"),
        (lambda tmp: [str(tmp / "missing")], "no such run directory"),
        (lambda tmp: [str(_mkdir(tmp / "empty"))], "not a run directory"),
        (lambda tmp: [str(_cut(tmp))], "records.jsonl:2: not a JSON record"),
        (lambda tmp: [str(_duplicated(tmp))], "is also on line 1"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, make, message):
    assert cli.main(["history", *make(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_an_unwritable_out_or_unknown_metric_exits_2(eight, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert cli.main(["history", str(eight), "--out", str(tmp_path / "file")]) == 2
    assert cli.main(["history", str(eight), "--metrics", "latncy"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "cannot write the history" in err[0] and "unknown metric 'latncy'" in err[1]


def test_a_glob_leaves_out_what_is_not_a_run(eight, tmp_path, capsys):
    (eight / "baselines").mkdir()
    (eight / "baselines" / "cpu-smoke.jsonl").write_text("")
    h = build_history([str(eight / "*")])
    assert len(h.runs) == 8
    assert "left out 1 match(es) that are not runs" in capsys.readouterr().err


def _mkdir(p: Path) -> Path:
    p.mkdir()
    return p


def _cut(tmp: Path) -> Path:
    d = write_run(tmp / "cut", 0)
    lines = (d / "records.jsonl").read_text().splitlines()
    (d / "records.jsonl").write_text("\n".join([lines[0], lines[1][:30], *lines[2:]]) + "\n")
    return d


def _duplicated(tmp: Path) -> Path:
    d = write_run(tmp / "dup", 0)
    first = (d / "records.jsonl").read_text().splitlines()[0]
    with open(d / "records.jsonl", "a") as fh:
        fh.write(first + "\n")
    return d


# --------------------------------------------------------------------------- run --history DIR


def test_run_history_copies_each_finished_run_and_never_rewrites_one(tmp_path, capsys):
    from bench.run.archive import archive_run

    hist = tmp_path / "history"
    out = tmp_path / "run"
    argv = ["run", "--preset", "smoke", "--backbones", "mixste", "--variants", "rectangle", "--frames", "9",
            "--metrics", "params", "--executor", "inline", "--no-report", "--out", str(out), "--history", str(hist)]  # fmt: skip
    assert cli.main(argv) == 0
    assert f"history: {hist / 'run'}" in capsys.readouterr().out
    assert sorted(p.name for p in (hist / "run").iterdir()) == ["meta.json", "records.jsonl"]
    assert read_records(hist / "run") == read_records(out)
    before = (hist / "run" / "records.jsonl").read_bytes()
    assert archive_run(out, hist) == hist / "run.2"  # the same id again: a new directory
    assert (hist / "run" / "records.jsonl").read_bytes() == before
    h = build_history([str(hist)], metrics=["params"])  # the same run twice is read once
    assert len(h.runs) == 1 and "hold the same run" in capsys.readouterr().err


def test_run_history_that_cannot_be_written_is_refused_before_measuring(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    argv = ["run", "--preset", "smoke", "--backbones", "mixste", "--metrics", "params", "--executor", "inline",
            "--no-report", "--out", str(tmp_path / "run"), "--history", str(tmp_path / "file")]  # fmt: skip
    assert cli.main(argv) == 2
    assert "--history" in capsys.readouterr().err and not (tmp_path / "run" / "records.jsonl").exists()


# --------------------------------------------------------------------------- in a browser


def test_the_history_page_renders_in_chromium_with_one_chart_per_series(eight, tmp_path):
    from test_browser import opened_page

    h = build_history([str(eight)], metrics=["latency", "speedup", "peak_rss"])
    page_path = write_history(h, tmp_path / "page") / "index.html"
    expected = {(s.case_id, s.label) for s in next(iter(h.series.values()))}
    assert len(expected) == 2 + 1 + 2  # latency and peak_rss of both cases, the pruned case's speed-up
    with opened_page(page_path, tmp_path / "profile") as tools:
        page = tools.evaluate("""(() => ({
            title: document.title,
            charts: Array.from(document.querySelectorAll('figure.chart')).map(f => {
                const svg = f.querySelector('svg'), box = svg.getBoundingClientRect();
                return [f.dataset.case, f.dataset.metric, box.width, box.height,
                        svg.querySelectorAll('circle').length, svg.querySelectorAll('polygon').length];
            }),
            steps: document.querySelectorAll('figure.chart line.step').length,
        }))()""")
    assert page["title"].startswith("vptbench history")
    assert {(c, m) for c, m, *_ in page["charts"]} == expected and len(page["charts"]) == len(expected)
    for _case, metric, width, height, circles, bands in page["charts"]:
        assert width > 200 and height > 100 and circles == 8  # a point per run
        assert bands == (0 if metric.startswith("peak_rss") else 1)  # a CI band where the figure has CIs
    assert page["steps"] == 1
    errors = [e for e in tools.events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error")]  # fmt: skip
    assert errors == []
