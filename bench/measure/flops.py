"""FLOP counters: three ways of counting one forward pass, side by side.

    report = count_flops(model, x, "fvcore")     # -> FlopReport
    reports = count_all(model, x)                # {"fvcore": ..., "torch": ..., "paper": ...}
    reports = count_each(model, x)               # the same, an error in place of a failed counter

Every figure is in GFLOPs = 2 x multiply-adds (MACs), whatever the counter's own convention.
This module runs the counters; each is a module of its own, and :class:`FlopReport`
(:mod:`bench.measure.flops_report`) is what every one of them returns. The counters differ in
*what* they count, which is why all three are kept:

- ``fvcore`` (:mod:`bench.measure.flops_fvcore`): fvcore's FlopCountAnalysis (a jit trace; 1 per
  MAC, doubled here) with handles added for the multiply-add ops it misses (scaled-dot-product
  attention, cdist, baddbmm). It also counts norms, upsampling and adaptive pooling by its own
  rough rules (see ``flops_fvcore.FVCORE_NON_MATMUL``).
- ``torch`` (:mod:`bench.measure.flops_torch`): torch.utils.flop_counter.FlopCounterMode
  (dispatcher level; already 2 per MAC), given formulas for the fused CPU attention kernels it
  counts as 0 in torch 2.x, and for cdist. Matrix products and convolutions only. Its
  ``unsupported`` lists ops that read a weight matrix but have no formula (a fused kernel it
  cannot see into).
- ``paper`` (:mod:`bench.measure.flops_paper`): the protocol of the papers' tables (HoT, MixSTE,
  MotionBERT...): thop 0.1.1's MACs x 2, i.e. per-module hooks on nn.Linear, convolutions,
  norms... Attention matmuls, and anything done with functional ops, are left out. Reimplemented
  there (thop 0.1.1 needs distutils, gone in Python 3.12, and its successor ultralytics-thop
  counts differently).

Every counter runs under no_grad with the ``nn.MultiheadAttention`` fast path off, so
``nn.TransformerEncoderLayer`` decomposes into ops with formulas. :func:`disagreements` turns
counters more than 2x apart into warnings naming the suspect ops (``bench.scenarios.measure`` prints them
and stores them in the records).

Which ops are free. Elementwise arithmetic, activations, softmax, reductions, indexing and sorting
cost no multiply-adds in any of the counters: their cost is memory traffic, not arithmetic, and
counting them would not make the numbers comparable with anything published. The fvcore counter
marks them as deliberately free (``flops_fvcore.FVCORE_FREE_OPS``) so that its ``unsupported``
field lists only ops nobody has classified yet - a new backbone with an uncounted matmul-like op
shows up there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace

import torch
import torch.nn as nn

from ..core.errors import UsageError
from . import flops_fvcore, flops_paper, flops_torch
from .flops_report import FlopReport

COUNTERS = ("fvcore", "torch", "paper")

Inputs = torch.Tensor | Sequence[torch.Tensor]


def count_flops(model: nn.Module, inputs: Inputs, counter: str = "fvcore") -> FlopReport:
    """Count the GFLOPs of ``model(*inputs)`` with ``counter`` (one of ``COUNTERS``).

    The model runs once in eval mode under no_grad; its training flag, parameters'
    ``requires_grad`` and hooks are as before afterwards.
    """
    if counter not in COUNTERS:
        raise UsageError(f"unknown FLOP counter {counter!r}; choose from {', '.join(COUNTERS)}")
    args = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    fn = {
        "fvcore": flops_fvcore.count_fvcore, "torch": flops_torch.count_torch, "paper": flops_paper.count_paper
    }[counter]
    start = time.perf_counter()
    with _inference(model):
        report = fn(model, args)
    return replace(report, seconds=time.perf_counter() - start)


def count_all(model: nn.Module, inputs: Inputs) -> dict[str, FlopReport]:
    """All three counters on the same model and inputs, keyed by counter name; the first error raises."""
    reports = count_each(model, inputs)
    for r in reports.values():
        if isinstance(r, BaseException):
            raise r
    return {c: r for c, r in reports.items() if isinstance(r, FlopReport)}


def count_each(model: nn.Module, inputs: Inputs) -> dict[str, FlopReport | Exception]:
    """Every counter's report, or the error it raised, keyed by counter name, in two forwards.

    fvcore traces a forward of its own; torch's dispatch mode and the paper's module hooks see
    different levels of the same call, so they share one forward (a canonical model's forward
    takes seconds on a CPU). If that shared forward fails, each of the two runs alone, so that
    one counter's error does not take the other's figure with it.
    """
    args = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    out: dict[str, FlopReport | Exception] = {}
    try:
        out["fvcore"] = count_flops(model, args, "fvcore")
    except Exception as e:  # e.g. a trace error: the other counters still count
        out["fvcore"] = e
    start = time.perf_counter()
    try:
        with (
            _inference(model),
            flops_torch.torch_counting(model) as torch_report,
            flops_paper.paper_counting(model) as paper_report,
        ):
            model(*args)
        seconds = time.perf_counter() - start
        out["torch"] = replace(torch_report(), seconds=seconds)
        out["paper"] = replace(paper_report(), seconds=seconds)
    except Exception:
        for counter in ("torch", "paper"):
            try:
                out[counter] = count_flops(model, args, counter)
            except Exception as e:
                out[counter] = e
    return {c: out[c] for c in COUNTERS}


DISAGREEMENT = 2.0  # counters further apart than this factor get a warning


def disagreements(reports: Mapping[str, FlopReport], factor: float = DISAGREEMENT) -> list[str]:
    """One warning per pair of counters whose totals differ by more than ``factor``, naming suspect ops.

    fvcore and torch both count every multiply-add (fvcore adds norms), so a factor of 2 between
    them means one misses real work: an op it has no formula for. The paper protocol leaves out
    attention matmuls by design, which at long T and small width is more than half the work; it
    being lower is only flagged when it saw modules it could not count. The suspects are what
    each of the two reports as ``unsupported`` (fvcore: ops without a handle; torch: uncounted
    ops that read a weight matrix; paper: module types without a rule that hold weights).
    """
    out = []
    names = [c for c in COUNTERS if c in reports] + sorted(set(reports) - set(COUNTERS))
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            lo, hi = sorted((reports[a], reports[b]), key=lambda r: r.total)
            if hi.total <= factor * lo.total or (lo.counter == "paper" and not lo.unsupported):
                continue
            apart = f"{hi.total / lo.total:.1f}x apart" if lo.total > 0 else "one is 0"
            suspects = [f"{op} ({r.counter}: uncounted)" for r in (lo, hi) for op in r.unsupported]
            out.append(
                f"FLOP counters disagree: {lo.counter} {lo.total:.4g} GFLOPs vs {hi.counter} {hi.total:.4g} "
                f"({apart}); suspect ops: {', '.join(suspects) if suspects else 'none reported, compare by_operator'}"
            )
    return out


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode, no_grad, parameters that do not require grad and no fused fast paths, restored afterwards.

    Turning ``requires_grad`` off matters for the torch counter: its module tracker hooks the
    backward of every input that requires grad and fails on views of parameters taken under
    no_grad (e.g. ``query.expand(...)``), which have requires_grad but no grad_fn.

    The fast path of ``nn.TransformerEncoderLayer`` and ``nn.MultiheadAttention`` (taken in eval
    mode without grad) runs whole layers as one fused kernel that no counter has a formula for
    (torch counts it as 0, fvcore flags it): with it off they decompose into linear layers and
    attention, which are counted. The arithmetic is the same either way.
    """
    training = model.training
    grads = [(p, p.requires_grad) for p in model.parameters()]
    fastpath = torch.backends.mha.get_fastpath_enabled()
    model.eval()
    for p, _ in grads:
        p.requires_grad_(False)
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(training)
        for p, flag in grads:
            p.requires_grad_(flag)

