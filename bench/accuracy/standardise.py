"""Standardisation in the accuracy protocol: fixed invertible maps around a model.

:class:`Standardiser`, fitted on the training split and saved with the checkpoint: the 2D of
every joint but the root is taken relative to the root's, then every (joint, channel) is shifted
and scaled to zero mean and unit spread, and the model predicts the offset from the mean training
pose in units of the targets' spread. All are fixed invertible maps, so the loss and the metrics
are unchanged; they spare a short run the hundreds of steps that the released initialisations
need to reach the scale of the data and to find the pose beneath the subject's place in the image
(a token's 2D is small next to the bias of its embedding; metre-scale outputs come from weights
initialised at std 0.02). :func:`run_model` is the model's prediction in metres, through the
standardiser or without one, for training and evaluation alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..core.errors import UsageError
from .data import PoseData


@dataclass(frozen=True)
class Standardiser:
    """Fixed maps around a model: 2D relative to the root, unit spread; outputs from the mean pose.

    ``inputs``: the 2D of every joint but the root (joint 0) is taken relative to the root's 2D
    in the same frame, while the root keeps its image position, so the map is invertible and
    nothing is lost; then each (joint, channel) is shifted by its training mean and divided by
    its training standard deviation (a constant one, e.g. the root's relative position or the
    confidence of ground-truth 2D, is only shifted). A model with one token per joint otherwise
    spends hundreds of steps learning to find the root through attention before the pose, not
    the subject's place in the image, reaches its tokens. ``outputs``: the model's output times
    ``target_scale`` plus ``target_mean``, in metres, so a model that outputs 0 predicts the
    mean training pose.
    """

    input_mean: tuple[tuple[float, ...], ...]  # (17, C): per joint and input channel, after the root shift
    input_std: tuple[tuple[float, ...], ...]
    target_mean: tuple[tuple[float, float, float], ...]  # (17, 3) metres, root-relative
    target_scale: float  # metres: RMS distance of a training coordinate from the mean pose

    @classmethod
    def fit(cls, data: PoseData) -> Standardiser:
        """Statistics of the training split of ``data`` (float64 sums, so large sets stay exact)."""
        x = cls.root_relative(np.concatenate([s.inputs for s in data.train]).astype(np.float64))
        y = np.concatenate([s.targets for s in data.train]).astype(np.float64) / 1000.0  # mm -> metres
        x_std = x.std(axis=0)
        mean = y.mean(axis=0)
        scale = float(np.sqrt(((y - mean) ** 2).mean()))
        return cls(
            input_mean=_nested(x.mean(axis=0)),
            input_std=_nested(np.where(x_std > 1e-6, x_std, 1.0)),
            target_mean=_nested(mean),
            target_scale=scale if scale > 1e-9 else 1.0,
        )

    @staticmethod
    def root_relative(x: Any) -> Any:
        """(..., 17, C) -> the same with joints 1-16's 2D minus the root's (numpy or torch)."""
        rel = x.clone() if isinstance(x, torch.Tensor) else x.copy()
        rel[..., 1:, :2] = x[..., 1:, :2] - x[..., :1, :2]
        return rel

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """(..., 17, C) raw inputs -> standardised (C may be fewer channels than were fitted)."""
        c = x.shape[-1]
        mean = torch.tensor(self.input_mean, dtype=x.dtype, device=x.device)[:, :c]
        std = torch.tensor(self.input_std, dtype=x.dtype, device=x.device)[:, :c]
        return (self.root_relative(x) - mean) / std

    def outputs(self, y: torch.Tensor) -> torch.Tensor:
        """(..., 17, 3) model outputs -> poses in metres."""
        return y * self.target_scale + torch.tensor(self.target_mean, dtype=y.dtype, device=y.device)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Standardiser:
        try:
            norm = cls(_nested(np.asarray(d["input_mean"], dtype=np.float64)),
                       _nested(np.asarray(d["input_std"], dtype=np.float64)),
                       _nested(np.asarray(d["target_mean"], dtype=np.float64)), float(d["target_scale"]))  # fmt: skip
            if np.shape(norm.input_mean) != np.shape(norm.input_std) or np.ndim(norm.input_mean) != 2:
                raise ValueError("input_mean and input_std must both be (joints, channels)")
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"checkpoint key 'standardiser' is malformed ({type(e).__name__}: {e})") from None
        return norm


def _nested(a: np.ndarray) -> tuple[Any, ...]:
    """A float array as nested tuples (hashable, comparable and JSON-able)."""
    return tuple(_nested(row) for row in a) if a.ndim > 1 else tuple(float(v) for v in a)


def run_model(model: nn.Module, x: torch.Tensor, norm: Standardiser | None) -> torch.Tensor:
    """The model's prediction in metres for raw inputs ``x``."""
    if norm is None:
        return model(x)
    return norm.outputs(model(norm.inputs(x)))
