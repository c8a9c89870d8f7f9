"""Deployment runtimes: the forward callable that latency times, for eager, torch.compile or ONNX Runtime.

    prepared = prepare("onnxruntime", model, x, device="cpu")
    samples = timing.measure_latency(prepared.forward, warmup=2, repeats=10)
    prepared.reports   # export_error (or compile_s): measured while preparing, recorded beside latency

The runtime only decides *what is timed*; the timing protocol (warm-up, repeats, timer) is the
caller's and the same for every runtime, so latencies compare across runtimes.

- ``eager``: the model itself under ``torch.inference_mode``.
- ``compile``: ``torch.compile`` (inductor by default) of the model. The first call, which traces
  and generates code, is timed once and reported as ``compile_s``; latency is the steady state
  after it. Graph breaks and the number of graphs come from dynamo's own counters
  (``torch._dynamo.utils.counters``) of that first call.
- ``onnxruntime``: the model exported to ONNX, run by an ``onnxruntime.InferenceSession`` with
  as many intra-op threads as torch uses (the CPU provider; the CUDA provider for ``--device
  cuda``). Exporters are tried in :data:`EXPORTERS` order (``auto``): the TorchScript one first
  (seconds per model, where the dynamo exporter takes minutes on 2 CPU cores), the dynamo one
  when it fails. ``export_error`` is max |onnx - eager| / max |eager| over two inputs, the timed
  one and a second random one (a gather index baked into the graph as a constant would pass on
  the traced input and fail on the other); above :func:`tolerance` the case fails.

Precision: eager and compile take float32, float16 and bfloat16; onnxruntime takes float32 on
CPU and float16 too on CUDA (the CPU provider has no half-precision kernels for most operators,
and numpy no bfloat16). :func:`check` refuses the rest with one line. int8 (``precision="int8"``,
bench.measure.precision): the caller passes eager and compile a model it quantized; onnxruntime
checks the float export's parity (``export_error``), then runs the dynamically quantized model.
:attr:`Prepared.call` runs the prepared runtime on another input of the same shape (pose error).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..core.case import RUNTIMES
from ..core.errors import UsageError

EXPORTERS = ("torchscript", "dynamo")  # the order ``auto`` tries them in
OPSET = 17  # ONNX opset of the TorchScript exporter: LayerNormalization is native from 17 on
DEPLOY_HINT = 'pip install -e ".[deploy]"'
# Metric groups measured on every runtime: parameters and FLOPs are the model's, latency, the
# paired speed-up (the pruned case and its rectangle both prepared on the runtime) and the pose
# error (the runtime's poses against fp32 eager) the runtime's. The others (peak memory and
# training in a fresh eager process, the profiler's breakdown) are measured for the eager runtime
# only; ONNX Runtime does not train.
ANY_RUNTIME_GROUPS = ("params", "flops", "latency", "speedup", "stream", "pose_error")


@dataclass
class Report:
    """A measurement taken while preparing a runtime (``compile_s``, ``export_error``).

    ``error`` non-empty: the runtime cannot be timed (export failed or disagrees with eager); the
    report is recorded with status error and the latency group fails with the same reason.
    """

    metric: str
    value: float | None
    method: str
    extra: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass
class Prepared:
    """What latency times (``forward``: one inference call), with fields to record beside it."""

    forward: Callable[[], Any]
    fields: dict[str, Any]
    reports: list[Report] = field(default_factory=list)
    call: Callable[[torch.Tensor], torch.Tensor] | None = None  # any input of the timed one's shape -> output

    @property
    def error(self) -> str:
        return next((r.error for r in self.reports if r.error), "")


def check(runtime: str, device: str = "cpu", dtype: str = "float32") -> None:
    """UsageError (one line) unless ``runtime`` exists, is installed and runs ``dtype`` on ``device``."""
    if runtime not in RUNTIMES:
        raise UsageError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    if runtime != "onnxruntime":
        return
    missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if not _importable(m)]
    if missing:
        raise UsageError(f"--runtime onnxruntime needs {', '.join(missing)}: install the deploy extra ({DEPLOY_HINT})")
    cuda = torch.device(device).type == "cuda"
    if cuda and "CUDAExecutionProvider" not in _providers():
        raise UsageError(
            f"--runtime onnxruntime --device {device}: this onnxruntime has no CUDAExecutionProvider "
            f"(it has {', '.join(_providers())}); install onnxruntime-gpu or use --device cpu"
        )
    if dtype == "bfloat16" or (dtype == "float16" and not cuda):
        allowed = "float32, float16" if cuda else "float32"
        raise UsageError(f"--runtime onnxruntime cannot run --dtype {dtype} on {device}; it takes {allowed}")


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def tolerance(dtype: str) -> float:
    """The largest export_error that passes: 1e-4 in float32; half precision rounds at ~1e-3."""
    return 1e-4 if dtype == "float32" else 1e-2


def prepare(
    runtime: str,
    model: nn.Module,
    x: torch.Tensor,
    *,
    device: str = "cpu",
    save_dir: str | Path | None = None,
    name: str = "model",
    exporter: str = "auto",
    compile_backend: str = "inductor",
    precision: str = "fp32",
    parity_tolerance: float | None = None,
) -> Prepared:
    """The forward callable of ``model`` on input ``x`` under ``runtime`` (see the module doc).

    ``save_dir``: where the .onnx file is written (``name``.onnx); None keeps it in memory.
    ``exporter``: ``auto`` or one of :data:`EXPORTERS`. ``compile_backend``: torch.compile's
    backend (tests use ``eager`` to check the plumbing without minutes of code generation).
    ``precision``: ``int8`` quantizes the exported model (onnxruntime); eager and compile get the
    quantized model from the caller (bench.measure.precision.quantize_eager). ``parity_tolerance``:
    the export_error above which the export counts as wrong (default :func:`tolerance`).
    """
    if runtime == "eager":
        return Prepared(_eager(model, x), {"runtime": "eager"}, call=_caller(model))
    if runtime == "compile":
        return _compiled(model, x, device, compile_backend)
    if runtime == "onnxruntime":
        return _onnxruntime(model, x, device, save_dir, name, exporter, quantize=precision == "int8",
                            parity_tolerance=parity_tolerance)  # fmt: skip
    raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")


def _eager(model: nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    def forward() -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return forward


def _caller(model: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    def call(t: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(t)

    return call


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(torch.device(device))


# --------------------------------------------------------------------------- torch.compile


def _compiled(model: nn.Module, x: torch.Tensor, device: str, backend: str) -> Prepared:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # counters and caches of an earlier model in this process must not count
    counters.clear()
    compiled: Any = torch.compile(model, backend=backend)
    forward = _eager(compiled, x)
    start = time.perf_counter()
    try:
        y = forward()
        _sync(device)
    except Exception as e:  # a model that does not compile: recorded, the run goes on
        msg = f"torch.compile failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e) else ''}"
        report = Report("compile_s", None, "compile", {"backend": backend}, error=msg)
        return Prepared(forward, {"runtime": "compile", "backend": backend}, [report])
    seconds = time.perf_counter() - start
    breaks = counters["graph_break"]
    info = {
        "backend": backend,
        "graph_breaks": int(sum(breaks.values())),
        "graphs": int(counters["stats"]["unique_graphs"]),
        "break_reasons": sorted(breaks)[:10],
        "max_abs_diff": _max_abs_diff(y, _eager(model, x)()),  # compiled vs eager, for information
    }
    fields = {"runtime": "compile", "backend": backend, "graph_breaks": info["graph_breaks"]}
    return Prepared(forward, fields, [Report("compile_s", seconds, "compile", info)], call=_caller(compiled))


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


# --------------------------------------------------------------------------- ONNX Runtime


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' deprecation and tracer warnings are theirs, not the user's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def export_onnx(model: nn.Module, x: torch.Tensor, exporter: str) -> bytes:
    """``model`` (on input ``x``, fixed shapes) as a serialized ONNX model, by ``exporter``."""
    with _quiet(), torch.no_grad():
        if exporter == "torchscript":
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "model.onnx"
                torch.onnx.export(model, (x,), path, dynamo=False, opset_version=OPSET, input_names=["x"],
                                  output_names=["y"])  # fmt: skip
                return path.read_bytes()
        if exporter == "dynamo":
            program = torch.onnx.export(model, (x,), dynamo=True, input_names=["x"], output_names=["y"], verbose=False)
            assert program is not None
            return bytes(program.model_proto.SerializeToString())
    raise ValueError(f"unknown exporter {exporter!r}; choose from auto, {', '.join(EXPORTERS)}")


def _onnxruntime(
    model: nn.Module, x: torch.Tensor, device: str, save_dir: str | Path | None, name: str, exporter: str,
    quantize: bool = False, parity_tolerance: float | None = None,
) -> Prepared:
    import onnxruntime as ort

    order = EXPORTERS if exporter == "auto" else (exporter,)
    failures: list[str] = []
    data, used, export_s = b"", "", 0.0
    for candidate in order:
        start = time.perf_counter()
        try:
            data = export_onnx(model, x, candidate)
        except Exception as e:  # this exporter cannot take the model: try the next one
            text = str(e).strip().splitlines()[0][:200] if str(e) else ""
            failures.append(f"{candidate}: {type(e).__name__}: {text}")
            continue
        used, export_s = candidate, time.perf_counter() - start
        break
    fields: dict[str, Any] = {"runtime": "onnxruntime", "exporter": used or exporter}
    if not used:
        report = Report("export_error", None, "onnxruntime", {"exporter": exporter, "exporter_failures": failures},
                        error=f"no exporter could export the model ({'; '.join(failures)})")  # fmt: skip
        return Prepared(lambda: None, fields, [report])
    path = None
    if save_dir is not None:
        path = Path(save_dir) / f"{name}.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()  # the same threads as the eager model gets
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads sleep instead of spinning: a speed-up's pairs hold two sessions, and the
    # spinning threads of the one that just ran took the cores from the other (measured: both calls
    # 40-60 % slower and the ratio 1.36 instead of 1.55 for MHFormer-351). Off for every session,
    # so that latencies timed alone and in pairs are alike; alone it costs 0-10 %.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    dev = torch.device(device)
    providers: list[Any] = ["CPUExecutionProvider"]
    if dev.type == "cuda":
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": dev.index or 0}))
    session = ort.InferenceSession(data, sess_options=opts, providers=providers)
    input_name = session.get_inputs()[0].name

    def run(t: torch.Tensor) -> np.ndarray:
        return session.run(None, {input_name: t.detach().cpu().numpy()})[0]

    # Parity on the timed input and on a second one that the export never saw.
    gen = torch.Generator().manual_seed(1)
    other = torch.randn(x.shape, generator=gen).to(x.device, x.dtype)
    worst = 0.0
    for inp in (x, other):
        with torch.inference_mode():
            ref = model(inp).double().cpu().numpy()
        got = run(inp).astype(np.float64)
        worst = max(worst, float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12)))
    dtype = str(x.dtype).removeprefix("torch.")
    tol = tolerance(dtype) if parity_tolerance is None else parity_tolerance
    provider = session.get_providers()[0]
    info: dict[str, Any] = {
        "exporter": used, "exporter_failures": failures, "export_s": export_s, "provider": provider,
        "tolerance": tol, "inputs": 2, "onnx_file": str(path) if path else None,
    }  # fmt: skip
    error = ""
    if not worst <= tol:  # NaN fails too
        error = f"ONNX Runtime output differs from eager by {worst:.3g} of the output scale (> {tol:g}; {used} exporter)"
    fields.update(provider=provider, ort_threads=opts.intra_op_num_threads, ort_spinning=False)
    if quantize and not error:  # the float export is right (above); time its int8 quantization
        from .precision import quantize_onnx

        data, qinfo = quantize_onnx(data)
        info.update(qinfo, parity_of="the float32 export, before quantization (pose_error measures int8)")
        if path is not None:
            path.write_bytes(data)
        session = ort.InferenceSession(data, sess_options=opts, providers=providers)
        fields.update(quantizer=qinfo["quantizer"])
    x_np = x.detach().cpu().numpy()

    def forward() -> Any:
        return session.run(None, {input_name: x_np})

    def call(t: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(run(t)).to(t.device)

    return Prepared(forward, fields, [Report("export_error", worst, "onnxruntime", info, error=error)], call=call)
