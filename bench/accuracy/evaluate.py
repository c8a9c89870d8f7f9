"""Evaluation in the accuracy protocol: a prediction for every test frame, and its scores.

Evaluation on the test split, every test frame once: seq2seq models see consecutive clips of
T frames (the last one aligned to the sequence end), seq2frame models one clip centred on every
frame (edges padded by repetition); predictions get their root joint set to 0 (the usual
protocol), then MPJPE, P-MPJPE and MPJVE in mm (:mod:`bench.accuracy.metrics`). No test-time flip.
:func:`mean_pose_mpjpe` is the floor to read them against: always predicting the mean training pose.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn

from . import metrics
from .data import Clips, PoseData
from .standardise import Standardiser, run_model

METRICS = ("mpjpe", "p_mpjpe", "mpjve")


@torch.inference_mode()
def predict(
    model: nn.Module, clips: Clips, *, batch: int, device: str, norm: Standardiser | None = None
) -> list[np.ndarray]:
    """Per-sequence predictions (L, 17, 3) in mm, root joint at 0, one per frame of every sequence.

    ``clips`` must cover every frame: consecutive clips (seq2seq, any stride <= T) or clips
    centred on every frame (seq2frame, stride 1), as :func:`evaluation_clips` makes them.
    """
    model.eval()
    seq2frame = model.pipeline == "seq2frame"
    preds = [np.full((len(s), 17, 3), np.nan, dtype=np.float64) for s in clips.sequences]
    for lo in range(0, len(clips), batch):
        idx = np.arange(lo, min(lo + batch, len(clips)))
        x, _ = clips.get(idx, int(model.in_channels))  # type: ignore[arg-type]
        out = run_model(model, torch.from_numpy(x).to(device), norm).float().cpu().numpy() * 1000.0  # m -> mm
        for k, i in enumerate(idx):
            s, first = clips.index[i][0], clips.first[i]
            if seq2frame:
                preds[s][first] = out[k, 0]
            else:
                n = min(clips.frames, len(preds[s]) - first)
                preds[s][first : first + n] = out[k, :n]
    for p in preds:
        if np.isnan(p).any():
            raise RuntimeError("evaluation clips left frames without a prediction")
        p[:, 0] = 0.0  # the root joint is the origin of root-relative poses
    return preds


def evaluation_clips(data: PoseData, frames: int, pipeline: str) -> Clips:
    """Test clips that predict every test frame exactly once (see the module docstring)."""
    if pipeline == "seq2frame":
        return Clips(data.test, frames, stride=1, centred=True)
    return Clips(data.test, frames, stride=frames, centred=False)


def score(preds: Sequence[np.ndarray], data: PoseData) -> dict[str, float]:
    """MPJPE, P-MPJPE (over all test frames) and MPJVE (within sequences), mm."""
    pred = np.concatenate(list(preds))
    target = np.concatenate([s.targets for s in data.test]).astype(np.float64)
    velocity = [(metrics.mpjve(p, s.targets), len(s) - 1) for p, s in zip(preds, data.test, strict=True) if len(s) > 1]
    return {
        "mpjpe": metrics.mpjpe(pred, target),
        "p_mpjpe": metrics.p_mpjpe(pred, target),
        "mpjve": sum(v * n for v, n in velocity) / max(1, sum(n for _, n in velocity)),
    }


def mean_pose_mpjpe(data: PoseData) -> float:
    """MPJPE (mm) on the test split of always predicting the mean training pose."""
    target = np.concatenate([s.targets for s in data.test]).astype(np.float64)
    return metrics.mpjpe(np.broadcast_to(data.mean_pose(), target.shape), target)
