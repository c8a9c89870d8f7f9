"""Pose error metrics of 3D human pose estimation, in millimetres (SPEC section 5, accuracy).

All three take a prediction and a target of the same shape ``(..., J, 3)`` (numpy arrays or torch
tensors, any float dtype; they are evaluated in float64 numpy) and return the mean over every
leading index and joint as a Python float, in the unit of the input (mm throughout vptbench).

Root-relative handling, the usual Human3.6M protocol:

- :func:`mpjpe` (protocol 1) compares the poses as given. It does *not* subtract the root: the
  caller makes both poses root-relative first (:func:`root_relative`), as VideoPose3D, HoT and the
  ``vptbench accuracy`` command do (targets have the pelvis at the origin and predictions get
  their root joint set to 0 before scoring).
- :func:`p_mpjpe` (protocol 2) aligns each predicted pose to its target by the best similarity
  transform (rotation, uniform scale, translation), so a root offset, a global rotation or a
  scale error costs nothing; root-relative or absolute input gives the same value.
- :func:`mpjve` compares velocities (differences between consecutive frames along the time axis,
  ``axis=-3`` of ``(..., T, J, 3)``); a constant offset cancels, so it is root-agnostic too. Its
  unit is mm per frame, as in VideoPose3D.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ArrayLike = Any  # np.ndarray | torch.Tensor; torch stays an optional import here


def _as_numpy(x: ArrayLike) -> np.ndarray:
    """A float64 numpy copy of an array or tensor (detached, on the CPU)."""
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _pair(pred: ArrayLike, target: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p, t = _as_numpy(pred), _as_numpy(target)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} differs from target shape {t.shape}")
    if p.ndim < 2 or p.shape[-1] != 3:
        raise ValueError(f"poses must have shape (..., J, 3), got {p.shape}")
    if p.size == 0:
        raise ValueError("no poses to compare (empty arrays)")
    return p, t


def root_relative(poses: ArrayLike, root: int = 0) -> np.ndarray:
    """Poses ``(..., J, 3)`` minus their root joint (index ``root``, the pelvis in Human3.6M)."""
    p = _as_numpy(poses)
    return p - p[..., root : root + 1, :]


def mpjpe(pred: ArrayLike, target: ArrayLike) -> float:
    """Mean per-joint position error: mean Euclidean distance between corresponding joints."""
    p, t = _pair(pred, target)
    return float(np.linalg.norm(p - t, axis=-1).mean())


def procrustes_align(pred: ArrayLike, target: ArrayLike) -> np.ndarray:
    """``pred`` moved onto ``target`` pose by pose by the best similarity transform.

    For every pose (the last two axes, J x 3) it finds the rotation R, scale s and translation t
    that minimise ``sum_j |s R p_j + t - q_j|^2`` (Umeyama's closed form via an SVD of the
    cross-covariance). When the best orthogonal matrix is a reflection (det -1), the last singular
    direction is flipped, so the result is always a proper rotation: a mirrored prediction is
    not "aligned away".
    """
    p, t = _pair(pred, target)
    mu_p, mu_t = p.mean(axis=-2, keepdims=True), t.mean(axis=-2, keepdims=True)
    p0, t0 = p - mu_p, t - mu_t
    cov = np.swapaxes(p0, -1, -2) @ t0  # (..., 3, 3)
    u, sing, vt = np.linalg.svd(cov)
    # Proper rotation: flip the weakest direction when U V^T would be a reflection.
    sign = np.sign(np.linalg.det(u @ vt))
    sign = np.where(sign == 0, 1.0, sign)
    d = np.ones_like(sing)
    d[..., -1] = sign
    rot = (u * d[..., None, :]) @ vt  # U diag(d) V^T, applied to row vectors: p0 @ rot
    norm_p = (p0**2).sum(axis=(-1, -2))
    # A degenerate prediction (all joints at one point) gets scale 0: it is scored by its offset.
    scale = np.where(norm_p > 0, (sing * d).sum(axis=-1) / np.where(norm_p > 0, norm_p, 1.0), 0.0)
    return scale[..., None, None] * (p0 @ rot) + mu_t


def p_mpjpe(pred: ArrayLike, target: ArrayLike) -> float:
    """MPJPE after per-pose similarity Procrustes alignment (protocol 2), see :func:`procrustes_align`."""
    _, t = _pair(pred, target)
    return mpjpe(procrustes_align(pred, target), t)


def mpjve(pred: ArrayLike, target: ArrayLike) -> float:
    """Mean per-joint velocity error: MPJPE of the frame-to-frame differences along time.

    Input ``(..., T, J, 3)`` with T >= 2 consecutive frames; the result is in mm per frame.
    """
    p, t = _pair(pred, target)
    if p.ndim < 3 or p.shape[-3] < 2:
        raise ValueError(f"mpjve needs (..., T, J, 3) with at least 2 frames, got {p.shape}")
    return mpjpe(np.diff(p, axis=-3), np.diff(t, axis=-3))
