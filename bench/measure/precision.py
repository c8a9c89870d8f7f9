"""Inference precision: where fp16, bf16 and int8 run, and the int8 models themselves.

    why = unsupported("fp16", "eager", "cpu")      # "" where it runs, else the reason (a skipped record)
    qmodel = quantize_eager(model)                # int8 weights for nn.Linear, float32 activations
    qbytes = quantize_onnx(onnx_bytes)            # the same for an exported ONNX model

- ``fp32``: everywhere.
- ``fp16`` / ``bf16``: the model and its input in float16 / bfloat16 (``Case.dtype``). On CUDA
  fp16 always, bf16 where ``torch.cuda.is_bf16_supported()``. On a CPU only where it has native
  half-precision matrix units, asked from torch (oneDNN's ``_is_mkldnn_fp16_supported`` /
  ``_is_mkldnn_bf16_supported``: AVX512-FP16 or AMX-FP16 for fp16, AVX512-BF16 or AMX for bf16)
  and confirmed by a small matmul; elsewhere torch emulates the format in float32 at a fraction
  of fp32's speed, which no deployment would choose. ONNX Runtime takes fp16 on CUDA only (its
  CPU provider lacks half kernels for most operators) and bf16 nowhere.
- ``int8``: dynamic quantization of the linear layers: weights stored as int8 (per tensor),
  activations quantized per call from their observed range, everything else in float32. Eager
  and compile: ``torch.ao.quantization.quantize_dynamic`` (CPU only; deprecated in torch 2.13,
  still working, the warning silenced here and the record says ``quantizer``). ONNX Runtime:
  ``onnxruntime.quantization.quantize_dynamic`` of the exported model (MatMul/Gemm weights to
  signed int8; CPU provider).

Nothing here measures; the scenarios (bench.scenarios.latency, .precision, .pose_error) use it.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..core.case import PRECISIONS

EAGER_QUANTIZER = "torch.ao.quantization.quantize_dynamic"
ONNX_QUANTIZER = "onnxruntime.quantization.quantize_dynamic"


def unsupported(precision: str, runtime: str, device: str = "cpu") -> str:
    """Why ``precision`` cannot run on ``runtime`` and ``device`` here; "" where it can."""
    if precision not in PRECISIONS:
        return f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}"
    cuda = torch.device(device).type == "cuda"
    if precision == "fp32":
        return ""
    if precision == "int8":
        if cuda:
            return (f"int8 dynamic quantization runs on the CPU only ({EAGER_QUANTIZER} and ONNX Runtime's "
                    "integer MatMul kernels); use --device cpu")  # fmt: skip
        if runtime == "onnxruntime":
            return "" if _importable("onnxruntime.quantization") else "onnxruntime.quantization is not installed"
        return _torch_int8_missing()
    if runtime == "onnxruntime":
        if precision == "bf16":
            return "ONNX Runtime has no bf16 inference (numpy has no bfloat16 to feed it); use eager or compile"
        if not cuda:
            return "ONNX Runtime's CPU provider has no fp16 kernels for most operators; fp16 there needs --device cuda"
        return ""
    if cuda:
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            return f"bf16 on {device}: this GPU has no bfloat16 support (torch.cuda.is_bf16_supported() is False)"
        return ""
    return _cpu_half_missing(precision)


@functools.cache
def _cpu_half_missing(precision: str) -> str:
    """"" when this CPU multiplies ``precision`` matrices natively, else why not (asked once per process)."""
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    query = "_is_mkldnn_fp16_supported" if precision == "fp16" else "_is_mkldnn_bf16_supported"
    units = "AVX512-FP16 or AMX-FP16" if precision == "fp16" else "AVX512-BF16 or AMX-BF16"
    try:
        native = bool(getattr(torch.ops.mkldnn, query)())
    except (AttributeError, RuntimeError):  # a torch without oneDNN: no native path either
        native = False
    if not native:
        return (f"{precision} on this CPU: no native {precision} matrix multiply ({units}; torch.ops.mkldnn.{query}() "
                f"is False), so torch would emulate it at a fraction of fp32's speed; measure fp32 or int8 here, "
                f"{precision} on a CPU that has them or on CUDA")  # fmt: skip
    try:  # the capability says yes: make sure the kernels exist in this build
        a = torch.ones(8, 8, dtype=dtype)
        if not torch.isfinite((a @ a).float()).all():
            raise RuntimeError("non-finite result")
    except RuntimeError as e:
        return f"{precision} on this CPU: a small {precision} matmul failed ({e})"
    return ""


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is missing
        return False


@functools.cache
def _torch_int8_missing() -> str:
    quantization = getattr(getattr(torch, "ao", None), "quantization", None)
    if quantization is None or not hasattr(quantization, "quantize_dynamic"):
        return (f"this torch ({torch.__version__}) has no {EAGER_QUANTIZER} (removed); int8 runs on "
                "--runtime onnxruntime")  # fmt: skip
    engines = [e for e in torch.backends.quantized.supported_engines if e != "none"]
    if not engines:
        return f"this torch ({torch.__version__}) has no quantized CPU engine (fbgemm, x86, onednn or qnnpack)"
    return ""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.ao's deprecation warnings and ONNX Runtime's pre-processing advice are not the user's to act on."""
    import logging

    root = logging.getLogger()
    level = root.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root.setLevel(max(level, logging.ERROR))
        try:
            yield
        finally:
            root.setLevel(level)


def quantize_eager(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` dynamically quantized to int8 (``model`` untouched).

    Float32 model in, float32 activations out. Raises RuntimeError where :func:`unsupported`
    would have said why.
    """
    why = _torch_int8_missing()
    if why:
        raise RuntimeError(why)
    with _quiet():
        quantized = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model).float().cpu().eval(), {nn.Linear}, dtype=torch.qint8
        )
    return quantized


def quantized_linears(model: nn.Module) -> int:
    """How many linear layers of ``model`` hold int8 weights (the record's ``quantized_layers``)."""
    return sum(1 for m in model.modules() if "quantized" in type(m).__module__ and type(m).__name__ == "Linear")


def quantize_onnx(data: bytes) -> tuple[bytes, dict[str, Any]]:
    """A serialized ONNX model with its MatMul/Gemm weights dynamically quantized to int8, and what was done."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp, _quiet():
        src, dst = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
        src.write_bytes(data)
        # MatMulConstBOnly (the default of dynamic quantization, spelled out): only products with a
        # weight, as torch quantizes nn.Linear; attention's activation x activation products stay float.
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                         extra_options={"MatMulConstBOnly": True})  # fmt: skip
        out = dst.read_bytes()
    info = {"quantizer": ONNX_QUANTIZER, "weight_type": "QInt8", "op_types": ["MatMul", "Gemm"],
            "onnx_bytes_fp32": len(data), "onnx_bytes_int8": len(out)}  # fmt: skip
    return out, info
