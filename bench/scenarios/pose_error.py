"""The ``pose_error`` group: what a case's precision and runtime cost in millimetres.

``pose_error`` (mm, method ``fp32_eager``): the MPJPE between the case's poses and the poses of
the same weights in fp32 eager PyTorch, on a fixed set of synthetic test clips
(bench.accuracy.weights: the weights of a trained checkpoint, or of a short synthetic training,
cached per run; ``weights`` says which). Both sides go through the same standardiser and have
their root joint set to 0, as the accuracy protocol scores predictions; only the model's own
arithmetic differs (int8 weights, half precision, an ONNX Runtime graph). The fp32 eager case
compares the reference with itself and gives 0, which is what its record checks.

The record also carries ``mpjpe_delta`` (mm): the case's MPJPE against the clips' ground truth
minus the fp32 poses' MPJPE on the same clips, so a reader sees whether the error moves accuracy
or only moves poses around; with ``mpjpe_case``, ``mpjpe_fp32``, ``max_error`` (the largest joint
distance between the two, mm), ``pose_spread`` (mm: how far the fp32 poses stray from their own
mean pose, the scale an error is small or large against: weights that learned nothing give poses
that hardly move, and errors to match), and how many clips and frames were scored.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..accuracy import metrics
from ..accuracy.standardise import Standardiser
from ..accuracy.weights import cache_dir, pose_clips, pose_data, pose_weights
from ..core.case import Case
from ..core.progress import report_progress
from ..core.results import record
from .base import Settings
from .latency import prepare

METHOD = "fp32_eager"  # what the case's poses are compared with
# The export check before pose_error quantizes or runs the ONNX model only asks "is the export right?":
# a wrong export differs by O(1) of the output scale, float arithmetic by 1e-5 to 1e-4 (MotionAGFormer-243
# with trained weights: 1.1e-4, above the latency group's 1e-4). The difference itself is what pose_error
# measures, in mm, so here only a difference above 1 % fails the case.
EXPORT_SANITY = 1e-2


def records(run_id: str, case: Case, settings: Settings, run_dir: str | Path | None) -> Iterator[dict[str, Any]]:
    """The case's pose_error record (the case resolved; its weights trained or loaded here)."""
    start = time.perf_counter()
    report_progress("pose error: weights")
    data = pose_data(int(case.frames or 0))
    weights = pose_weights(case, checkpoint=settings.checkpoint, steps=settings.pose_steps,
                           cache=cache_dir(run_dir), data=data)  # fmt: skip
    ref_model = weights.model
    x, gt = pose_clips(data, int(case.frames or 0), case.pipeline, case.batch)
    channels = int(ref_model.in_channels)  # type: ignore[arg-type]
    x = x[..., :channels]
    report_progress("pose error: fp32 reference")
    ref = poses(_eager(ref_model), x, case.batch, weights.norm, torch.float32, case.device)

    model = copy.deepcopy(ref_model).to(case.device, getattr(torch, case.dtype)).eval()
    example = _standardised(x[: case.batch], weights.norm, case.device).to(getattr(torch, case.dtype))
    report_progress(f"pose error: {case.precision} {case.runtime}")
    prepared = prepare(case, model, example, settings, save=False, parity_tolerance=EXPORT_SANITY)
    if prepared.error or prepared.call is None:
        raise RuntimeError(prepared.error or f"the {case.runtime} runtime cannot run other inputs")
    got = poses(prepared.call, x, case.batch, weights.norm, getattr(torch, case.dtype), case.device)

    error = np.linalg.norm(got - ref, axis=-1)
    target = gt.astype(np.float64)  # root-relative already (the data's convention)
    mpjpe_case, mpjpe_fp32 = metrics.mpjpe(got, target), metrics.mpjpe(ref, target)
    flat = ref.reshape(-1, *ref.shape[-2:])
    spread = float(np.linalg.norm(flat - flat.mean(axis=0), axis=-1).mean())
    yield record(
        run_id, case, "pose_error", float(error.mean()), method=METHOD, weights=weights.label,
        mpjpe_delta=mpjpe_case - mpjpe_fp32, mpjpe_case=mpjpe_case, mpjpe_fp32=mpjpe_fp32, pose_spread=spread,
        max_error=float(error.max()), p99_error=float(np.percentile(error, 99)), clips=int(x.shape[0]),
        frames_scored=int(got.shape[0] * got.shape[1]), data="synthetic test clips (seed 0)",
        weights_info=weights.info, seconds=round(time.perf_counter() - start, 2),
        **{k: v for k, v in prepared.fields.items() if k in ("quantizer", "quantized_layers", "exporter")},
    )  # fmt: skip


def _eager(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def call(t: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(t)

    return call


def _standardised(x: np.ndarray, norm: Standardiser | None, device: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    return norm.inputs(t) if norm is not None else t


def poses(
    call: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray, batch: int, norm: Standardiser | None,
    dtype: torch.dtype, device: str,
) -> np.ndarray:
    """Poses (N, T_out, 17, 3) in mm, root joint at 0, of ``call`` on the clips ``x`` in batches of ``batch``.

    The standardiser's maps (fixed pre- and post-processing) run in float32 around ``call``,
    whose input is cast to ``dtype``: only the model runs in the case's precision.
    """
    out = []
    for lo in range(0, len(x), batch):
        y = call(_standardised(x[lo : lo + batch], norm, device).to(dtype)).float()
        metres = norm.outputs(y) if norm is not None else y
        out.append(metres.detach().cpu().double().numpy() * 1000.0)
    p = np.concatenate(out)
    p[..., 0, :] = 0.0  # the root joint is the origin of root-relative poses (bench.accuracy.evaluate.predict)
    return p
