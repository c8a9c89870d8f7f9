"""Live video (bench.measure.stream, bench.scenarios.stream, ``vptbench stream``, ``--metrics stream``).

The arithmetic is checked with a fake model of known, fixed cost: a forward that sleeps C ms.
Sleeping is robust on a loaded machine (a sleeping thread needs no CPU), and the checks compare
with the cost the stream itself measured where the scheduler's wake-up could add a little.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
import time

import numpy as np
import pytest

import backbones
from bench import cli
from bench.analysis.gate import compare
from bench.analysis.stream_section import format_text
from bench.core.case import Case
from bench.core.errors import UsageError
from bench.core.results import MEASUREMENT_KEY, METRIC_UNITS, read_records
from bench.measure import stream, stream_search
from bench.scenarios import Settings, measure_case

FAKE_MODULE = textwrap.dedent(
    '''
    import time

    import torch
    import torch.nn as nn

    from backbones.registry import VariantSpec, register


    class Sleepy(nn.Module):
        """A lifter of fixed cost: its forward sleeps cost_ms (half of it when pruned)."""

        def __init__(self, frames, pipeline, schedule=(), pruner=None, recoverer=None, embed_kept=False, cost_ms=20.0):
            super().__init__()
            self.frames, self.pipeline, self.in_channels = frames, pipeline, 2
            self.cost_s = cost_ms / 1e3 / (2 if schedule else 1)
            self.head = nn.Linear(2, 3)

        def forward(self, x):
            time.sleep(self.cost_s)
            y = self.head(x)
            return y if self.pipeline == "seq2seq" else y[:, self.frames // 2 : self.frames // 2 + 1]


    for name, pipeline in (("sleepy", "seq2seq"), ("sleepy_frame", "seq2frame")):
        @register(name, pipeline=pipeline, in_channels=2, frames=9,
                  single=VariantSpec(((1, 0.5),), "tps", "tri" if pipeline == "seq2seq" else None),
                  hierarchical=VariantSpec(((0, 0.5), (1, 0.25)), "tps", "tri" if pipeline == "seq2seq" else None),
                  sizes={"tiny": {"cost_ms": 20.0}, "slow": {"cost_ms": 40.0}}, default_size="tiny")
        def build(frames=9, _pipeline=pipeline, **kw):
            return Sleepy(frames, _pipeline, **kw)
    '''
)


@pytest.fixture(scope="module")
def sleepy(tmp_path_factory):
    """The fake backbones, registered from a module file (a plugin for the commands' workers)."""
    folder = tmp_path_factory.mktemp("sleepy")
    path = folder / "stream_sleepy.py"
    path.write_text(FAKE_MODULE)
    sys.path.insert(0, str(folder))
    importlib.import_module("stream_sleepy")
    yield path
    for name in ("sleepy", "sleepy_frame"):
        backbones.unregister(name)
    sys.modules.pop("stream_sleepy", None)
    sys.path.remove(str(folder))


def run_cli(argv: list[str]) -> int:
    """The exit code of ``vptbench ARGV``, whether argparse or the command decides it."""
    try:
        return cli.main(argv)
    except SystemExit as e:
        return int(e.code or 0)


def sleeper(cost_s: float):
    return lambda j: time.sleep(cost_s)


# --------------------------------------------------------------------------- the cut into windows


def test_windows_emit_every_frame_once_with_the_lookahead_of_the_emission():
    newest = stream.make_plan("seq2seq", window=27, fps=30, frames=60, stride=4, emit="newest")
    assert (newest.lookahead, newest.first_window, newest.delay_frames) == (0, 0, 3)
    assert list(newest.emitted(0)) == [0, 1, 2, 3] and newest.end_frame(0) == 3
    middle = stream.make_plan("seq2seq", window=27, fps=30, frames=60, stride=5, emit="middle")
    assert middle.lookahead == 11  # 27 = 11 before the 5 emitted frames + 11 after
    first = middle.first_window
    assert min(middle.emitted(first)) <= 0 <= max(middle.emitted(first)) and max(middle.emitted(first - 1)) < 0
    frame = stream.make_plan("seq2frame", window=27, fps=30, frames=60, stride=7, emit="newest")
    assert (frame.stride, frame.lookahead, frame.emit) == (1, 13, "middle")  # the model's centre frame
    covered = [i for k in range(middle.first_window, middle.windows) for i in middle.emitted(k)]
    assert covered == sorted(set(covered))  # no frame twice
    assert stream.min_frames("seq2frame", 351, 1, "newest") == 176


@pytest.mark.parametrize(
    ("pipeline", "settings", "message"),
    [
        ("seq2seq", stream.StreamSettings(fps=(0.0,)), "camera rate must be > 0"),
        ("seq2seq", stream.StreamSettings(fps=(-30.0,)), "camera rate must be > 0"),
        ("seq2seq", stream.StreamSettings(stride=28), "must lie in 1..27"),
        ("seq2frame", stream.StreamSettings(stride=3), "is seq2frame"),
        ("seq2frame", stream.StreamSettings(fps=(30.0,), seconds=0.2), "at least 0.47 s"),
        ("seq2seq", stream.StreamSettings(emit="sideways"), "choose from newest, middle"),
    ],
)
def test_bad_stream_options_name_the_value_and_what_is_allowed(pipeline, settings, message):
    with pytest.raises(UsageError, match=message):
        stream.check("toy", pipeline, 27, settings)


# --------------------------------------------------------------------------- the clock, with a fake model


def test_latency_is_delay_plus_queue_plus_compute_for_a_model_that_keeps_up():
    cost = 0.020
    plan = stream.make_plan("seq2seq", window=27, fps=30, frames=45, stride=3, emit="newest")
    start = time.perf_counter()
    log = stream.run_stream([sleeper(cost)], plan)
    assert time.perf_counter() - start >= (plan.end_frame(plan.windows - 1)) / plan.fps  # it waited for the camera
    frames = stream.per_frame(log)
    assert frames.dropped == 0 and len(frames.index) == 45
    np.testing.assert_allclose(frames.ready - frames.arrival, frames.delay + frames.queue + frames.compute, atol=1e-9)
    f = stream.latency_fields(log, frames)
    assert f["delay_ms"] == pytest.approx(1e3 / 30, abs=0.01)  # frames wait 0, 1 or 2 frames: the median 1
    assert cost * 1e3 <= f["compute_ms"] < cost * 1e3 + 5
    assert f["queue_ms"] < 5  # the model is idle when each window completes
    assert abs(f["value"] - (f["delay_ms"] + f["compute_ms"])) < 5
    assert f["ci_low"] <= f["value"] <= f["ci_high"] and f["n"] == plan.windows
    assert stream.rtf(log) == pytest.approx(f["compute_ms"] / 1e3 * 30 / 3, rel=1e-4) and stream.sustained(log)


def test_a_stream_of_one_window_has_a_latency_without_an_interval():
    plan = stream.make_plan("seq2seq", window=27, fps=200, frames=27, stride=27, emit="newest")
    log = stream.run_stream([sleeper(0.005)], plan)
    assert len(log.processed) == 1
    f = stream.latency_fields(log, stream.per_frame(log))
    assert f["n"] == 1 and f["ci_low"] is None and f["ci_high"] is None and f["value"] > 0
    assert f["ci_method"].startswith("none over windows") and "one sample" in f["unstable_reason"]


def test_a_model_slower_than_the_frame_budget_drops_the_expected_share():
    cost, fps = 0.050, 50.0  # 2.5 frame intervals per forward, stride 1 (seq2frame)
    plan = stream.make_plan("seq2frame", window=9, fps=fps, frames=100, stride=1, emit="newest")
    log = stream.run_stream([sleeper(cost)], plan)
    frames = stream.per_frame(log)
    measured = float(np.median(log.compute_s()))
    expected = 1 - (1 / fps) / measured  # always busy: one window in (cost / budget) gets through
    assert frames.dropped / len(frames.index) == pytest.approx(expected, abs=0.1)
    assert frames.late == 0  # skip_to_newest never starts a window that a newer one has superseded
    assert stream.rtf(log) > 1 and not stream.sustained(log)
    lat = stream.latency_fields(log, frames)
    assert lat["delay_ms"] == pytest.approx(1e3 * 4 / fps)  # the centre of 9 frames: 4 frames of look-ahead
    assert lat["queue_ms"] < 1e3 / fps + 5  # the newest window is taken: at most one interval old


def test_max_fps_is_the_stride_over_the_cost():
    cost, stride = 0.040, 2

    def probe(fps):
        frames = max(4 * stride, stream.stream_frames(0.5, fps))
        return stream.run_stream([sleeper(cost)], stream.Plan(fps, frames, 27, stride, 0, "newest"))

    found = stream_search.max_fps(probe, estimate=stride / cost, cap=1000.0)
    assert found.best is not None and not found.capped
    measured = float(np.median(found.best.compute_s()))
    assert found.fps == pytest.approx(stride / measured, rel=0.1)
    assert found.fps == pytest.approx(stride / cost, rel=0.15)
    assert found.unsustained is not None and found.fps < found.unsustained <= found.fps * 1.25
    assert len(found.probes) <= 8 and max(p["fps"] for p in found.probes if p["sustained"]) == round(found.fps, 4)


def test_paired_windows_alternate_the_order_and_time_each_model():
    plan = stream.make_plan("seq2seq", window=9, fps=50, frames=30, stride=3, emit="newest")
    order: list[str] = []
    log = stream.run_stream([lambda j: (order.append("a"), time.sleep(0.010)),
                             lambda j: (order.append("b"), time.sleep(0.005))], plan)  # fmt: skip
    assert order[:4] == ["a", "b", "b", "a"]
    ratios = np.array(log.compute_s(0)) / np.array(log.compute_s(1))
    assert 1.5 < float(np.median(ratios)) < 2.2


# --------------------------------------------------------------------------- the scenario and the commands


def test_records_of_the_stream_group(sleepy):
    settings = Settings(warmup=1, stream=stream.StreamSettings(fps=(30.0, 60.0), seconds=1.0, stride=3, probe_s=0.5))
    case = Case("sleepy", "hierarchical", size="slow").resolve()  # 20 ms per window, its rectangle 40 ms
    recs = list(measure_case(case, ["stream"], "t", settings=settings))
    assert all(r["status"] == "ok" for r in recs), [r["error"] for r in recs if r["status"] != "ok"]
    by = {(r["metric"], r["fps_in"]): r for r in recs}
    assert set(by) == {(m, f) for m in ("stream_latency", "stream_rtf", "stream_dropped") for f in (30.0, 60.0)} | {
        ("stream_max_fps", None), ("stream_speedup", 60.0)}
    for r in recs:
        assert r["unit"] == METRIC_UNITS[r["metric"]] and r["frames"] == 9 and r["window"] == 9
        assert {"stride", "delay_frames", "emit", "runtime", "threads"} <= set(r)
    assert len({tuple(r.get(k) for k in MEASUREMENT_KEY) for r in recs}) == len(recs)  # unique measurements
    lat = by[("stream_latency", 30.0)]
    assert lat["stride"] == 3 and lat["delay_ms"] == pytest.approx(1e3 / 30, abs=0.01)
    assert abs(lat["value"] - lat["delay_ms"] - lat["queue_ms"] - lat["compute_ms"]) < 5
    assert by[("stream_dropped", 30.0)]["value"] == 0 and by[("stream_dropped", 30.0)]["method"] == "skip_to_newest"
    assert by[("stream_rtf", 60.0)]["value"] == pytest.approx(0.020 * 60 / 3, rel=0.25)
    mx = by[("stream_max_fps", None)]
    assert mx["stride"] == 3 and mx["value"] == pytest.approx(3 / mx["compute_ms"] * 1e3, rel=0.1)
    assert mx["ci_low"] == mx["value"] < mx["ci_high"]
    sp = by[("stream_speedup", 60.0)]
    assert sp["method"] == "paired" and sp["ci_low"] <= sp["value"] <= sp["ci_high"]
    assert sp["value"] == pytest.approx(2.0, rel=0.2) and sp["reference"].startswith("sleepy/rectangle")


def test_auto_stride_keeps_up_and_seq2frame_takes_one(sleepy):
    settings = Settings(warmup=1, stream=stream.StreamSettings(fps=(100.0,), seconds=0.6, probe_s=0.3, max_probes=3))
    recs = list(measure_case(Case("sleepy", size="tiny").resolve(), ["stream"], "t", settings=settings))
    lat = next(r for r in recs if r["metric"] == "stream_latency")
    assert lat["stride"] >= 3 and lat["stride_mode"] == "auto"  # 20 ms per window at 10 ms per frame
    assert next(r for r in recs if r["metric"] == "stream_max_fps")["stride"] == 9  # auto: the window
    recs = list(measure_case(Case("sleepy_frame", size="tiny").resolve(), ["stream"], "t", settings=settings))
    assert {r["stride"] for r in recs} == {1} and {r["emit"] for r in recs} == {"middle"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["mixste", "--fps", "0"], "camera rate must be > 0"),
        (["mixste", "--fps", "-30"], "camera rate must be > 0"),
        (["mixste", "--size", "tiny", "--frames", "27", "--stride", "28"], "must lie in 1..27"),
        (["mhformer", "--size", "tiny", "--frames", "27", "--stride", "3"], "is seq2frame"),
        (["mhformer", "--size", "tiny", "--frames", "27", "--fps", "30", "--seconds", "0.2"], "at least 0.47 s"),
        (["mixste", "--emit", "sideways"], "invalid choice: 'sideways'"),
    ],
)
def test_stream_command_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert run_cli(["stream", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_stream_command_prints_every_figure_and_the_paired_ratio(sleepy, capsys):
    argv = ["stream", "sleepy", "--variant", "rectangle,hierarchical", "--fps", "30", "--seconds", "0.6",
            "--stride", "3", "--plugin", str(sleepy), "--json"]  # fmt: skip
    assert cli.main(argv) == 0
    recs = json.loads(capsys.readouterr().out)
    assert {r["metric"] for r in recs} == {"stream_latency", "stream_rtf", "stream_dropped", "stream_max_fps",
                                           "stream_speedup"}  # fmt: skip
    out = format_text(recs)  # what the command prints without --json
    for text in ("latency median [95 % CI]", "p99", "delay / queue / compute", "real-time factor", "dropped",
                 "sustains", "paired gain over rectangle", "sleepy hierarchical"):
        assert text in out, text


def test_run_with_metrics_stream_reports_the_figure_and_table_resumes_and_gates(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--preset", "smoke", "--backbones", "mixste,mhformer", "--variants", "rectangle,hierarchical",
            "--metrics", "stream", "--fps", "30,60", "--seconds", "0.6", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0, capsys.readouterr().err
    recs = read_records(out)
    metrics = {(r["case_id"].split("/")[0], r["metric"]) for r in recs if r["status"] == "ok"}
    assert ("mhformer", "stream_speedup") in metrics and ("mixste", "stream_max_fps") in metrics
    assert sum(r["metric"] == "stream_latency" for r in recs) == 8  # 4 cases x 2 rates, one record each
    report = out / "report"
    assert (report / "plots" / "stream_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (report / "index.html").read_text()
    assert "Live video" in page and "sustains" in page and "id='plot-stream_latency'" in page
    assert "## Live video" in (report / "index.md").read_text()
    capsys.readouterr()
    assert cli.main(["run", "--resume", "--out", str(out)]) == 0
    assert "0 case(s) measured, 4 already done" in capsys.readouterr().out
    assert run_cli(["run", "--resume", "--out", str(out), "--fps", "10"]) == 2
    result = compare(recs, recs)
    gated = {c.metric.split("[")[0] for c in result.comparisons}
    assert {"stream_max_fps", "stream_speedup"} <= gated and "stream_latency" not in gated and result.passed


def test_run_refuses_stream_options_without_the_stream_group(capsys):
    assert run_cli(["run", "--preset", "smoke", "--metrics", "params", "--fps", "30"]) == 2
    assert "add stream to --metrics" in capsys.readouterr().err


def test_the_gate_judges_max_fps_through_its_bracket():
    def rec(value, low, high):
        return {"case_id": "c", "backbone": "b", "variant": "single", "metric": "stream_max_fps", "method": "bisection",
                "fps_in": None, "value": value, "ci_low": low, "ci_high": high, "status": "ok", "unit": "frames/s"}

    base = [rec(100.0, 100.0, 104.0)]
    assert compare(base, [rec(76.0, 76.0, 80.0)]).passed  # within 25 %
    assert not compare(base, [rec(60.0, 60.0, 63.0)]).passed
    latency = {**rec(50.0, 49.0, 51.0), "metric": "stream_latency", "method": "wall_clock", "fps_in": 30.0}
    assert compare([latency], [{**latency, "value": 500.0}]).passed  # an absolute time is never gated


@pytest.mark.cuda
def test_a_stream_on_cuda_times_synchronised_windows():
    settings = Settings(warmup=1, stream=stream.StreamSettings(fps=(30.0,), seconds=0.6, probe_s=0.3, max_probes=3))
    case = Case("mixste", "hierarchical", frames=27, size="tiny", device="cuda").resolve()
    recs = list(measure_case(case, ["stream"], "t", settings=settings))
    assert all(r["status"] == "ok" for r in recs), [r["error"] for r in recs if r["status"] != "ok"]
    lat = next(r for r in recs if r["metric"] == "stream_latency")
    assert lat["device"] == "cuda" and 0 < lat["compute_ms"] <= lat["value"]


def _synthetic_run(tmp_path):
    """Stream records of two backbones x two variants, shaped like a run's (no model runs)."""
    recs = []
    for backbone, pipeline, window in (("mixste", "seq2seq", 243), ("mhformer", "seq2frame", 351)):
        for variant, cost_ms in (("rectangle", 1200.0), ("hierarchical", 500.0)):
            case = Case(backbone, variant).resolve()
            base = {"run_id": "syn", **case.fields(), "status": "ok", "error": "", "runtime": "eager", "threads": 2}
            stride = 1 if pipeline == "seq2frame" else 81
            ahead = (window - 1) - (window - 1) // 2 if pipeline == "seq2frame" else 0
            for fps in (30.0, 50.0):
                where = {"fps_in": fps, "stride": stride, "window": window, "delay_frames": stride - 1 + ahead,
                         "emit": "middle" if ahead else "newest"}  # fmt: skip
                lat = 1e3 * ahead / fps + cost_ms
                recs += [
                    base | where | {"metric": "stream_latency", "value": lat, "unit": "ms", "method": "wall_clock",
                                    "p99": lat * 1.1, "ci_low": lat * 0.98, "ci_high": lat * 1.02,
                                    "delay_ms": 1e3 * ahead / fps, "queue_ms": 1.0, "compute_ms": cost_ms},
                    base | where | {"metric": "stream_rtf", "value": cost_ms / 1e3 * fps / stride,
                                    "unit": METRIC_UNITS["stream_rtf"], "method": "wall_clock"},
                    base | where | {"metric": "stream_dropped", "value": 0.5 if pipeline == "seq2frame" else 0.0,
                                    "unit": METRIC_UNITS["stream_dropped"], "method": "skip_to_newest"},
                ]  # fmt: skip
            best = stride / cost_ms * 1e3
            recs.append(base | {"metric": "stream_max_fps", "value": best, "unit": "frames/s", "method": "bisection",
                                "fps_in": None, "stride": stride, "window": window, "ci_low": best,
                                "ci_high": best * 1.04, "latency_ms": 2 * cost_ms + 1e3 * ahead / best,
                                "delay_ms": cost_ms + 1e3 * ahead / best,
                                "compute_ms": cost_ms})  # fmt: skip
            if variant != "rectangle":
                recs.append(base | {"metric": "stream_speedup", "value": 2.4, "unit": "x", "method": "paired",
                                    "fps_in": 50.0, "stride": stride, "ci_low": 2.3, "ci_high": 2.5})  # fmt: skip
    run = tmp_path / "syn"
    run.mkdir()
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return run


def test_the_report_draws_latency_against_rate_and_says_what_each_case_sustains(tmp_path):
    from bench.analysis.report import write_report

    out = write_report(_synthetic_run(tmp_path), accuracy=[], out=tmp_path / "report")
    md = (out / "index.md").read_text()
    assert "| mixste rectangle (T=243, base)" in md and "| sustains 67.5 fps live with 2.40 s delay" in md
    assert "2.40x [2.30, 2.50] at 50 fps, stride 81" in md
    assert "| sustains 2.00 fps live with 88.5 s delay" in md  # mhformer: 175 frames of look-ahead at 2 fps
    assert "| mhformer hierarchical" in md and "50.0 %" in md  # the per-rate table, dropped share
    svg = (out / "plots" / "stream_latency.svg").read_text()
    for text in ("real time: one frame interval", "seq2frame delay floor", "175 frames", "highest rate sustained"):
        assert text in svg, text
    assert "id='plot-stream_latency'" in (out / "index.html").read_text()
