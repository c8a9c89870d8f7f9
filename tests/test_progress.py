"""A running case's progress line: written by the case's process, shown on the executor's bar."""

from __future__ import annotations

import re

from bench.accuracy.data import Clips
from bench.accuracy.data.synthetic import synthetic_data
from bench.accuracy.train import train
from bench.core.case import Case
from bench.core.progress import read_progress, report_progress, reporting_to
from bench.run.executors import _label


def test_lines_reach_the_part_only_while_the_case_runs(tmp_path):
    report_progress("before")  # outside a case: nowhere, and no error
    assert read_progress(tmp_path) == ""
    with reporting_to(tmp_path):
        report_progress("1/10 loss 120.0mm")
        assert read_progress(tmp_path) == "1/10 loss 120.0mm"
        report_progress("latency")
        assert read_progress(tmp_path) == "latency"  # the latest line only
    report_progress("after")
    assert read_progress(tmp_path) == "latency"
    assert list(tmp_path.iterdir()) == [tmp_path / "progress.txt"]  # no temporary file left


def test_a_closed_part_neither_fails_the_case_nor_the_reader(tmp_path):
    gone = tmp_path / "closed-part"
    with reporting_to(gone):
        report_progress("2/10")  # the directory no longer exists
    assert read_progress(gone) == ""


def test_training_reports_its_step_and_running_loss(tmp_path):
    data = synthetic_data(seed=0, train_sequences=2, test_sequences=1, frames=40)
    model = Case("mixste", "rectangle", frames=9, size="tiny", batch=2).resolve().build()
    with reporting_to(tmp_path):
        loss = train(model, Clips(data.train, 9), steps=12, batch=2, lr=1e-3, weight_decay=0.0, seed=0, device="cpu",
                     progress=False)  # fmt: skip
    line = read_progress(tmp_path)
    m = re.fullmatch(r"12/12 loss (\d+\.\d)mm", line)
    assert m, line
    assert float(m.group(1)) == round(loss, 1)


def test_the_bar_names_each_running_case_with_its_line(tmp_path):
    case = Case("motionbert", "hierarchical", frames=9, size="tiny").resolve()
    assert _label(case, tmp_path) == "motionbert/hierarchical"
    with reporting_to(tmp_path):
        report_progress("300/600 loss 95.1mm")
    assert _label(case, tmp_path) == "motionbert/hierarchical 300/600 loss 95.1mm"
