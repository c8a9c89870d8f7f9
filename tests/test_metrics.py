"""bench.accuracy.metrics against hand-computed values and the defining invariances of each metric."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.accuracy.metrics import mpjpe, mpjve, p_mpjpe, procrustes_align, root_relative


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def test_mpjpe_hand_computed():
    target = np.zeros((1, 2, 3))
    pred = np.array([[[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]]])  # errors 5 and 2 -> mean 3.5
    assert mpjpe(pred, target) == pytest.approx(3.5)


def test_mpjpe_accepts_torch_and_numpy_alike():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 5, 17, 3)), rng.normal(size=(4, 5, 17, 3))
    assert mpjpe(torch.from_numpy(a).float(), torch.from_numpy(b).float()) == pytest.approx(mpjpe(a, b), rel=1e-5)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differs"):
        mpjpe(np.zeros((2, 17, 3)), np.zeros((3, 17, 3)))
    with pytest.raises(ValueError, match=r"\(\.\.\., J, 3\)"):
        mpjpe(np.zeros((2, 17, 2)), np.zeros((2, 17, 2)))


def test_root_relative_puts_the_root_at_the_origin():
    poses = np.arange(2 * 17 * 3, dtype=float).reshape(2, 17, 3)
    rel = root_relative(poses)
    assert np.all(rel[:, 0] == 0)
    assert rel[1, 5] == pytest.approx(poses[1, 5] - poses[1, 0])


def test_p_mpjpe_is_zero_for_a_rotated_scaled_shifted_copy():
    rng = np.random.default_rng(1)
    target = rng.normal(size=(6, 17, 3)) * 300
    rot = _rotation(np.array([0.3, -1.0, 0.5]), 1.1)
    pred = 0.7 * target @ rot.T + np.array([120.0, -40.0, 2000.0])
    assert mpjpe(pred, target) > 100  # the copy is far off before alignment
    assert p_mpjpe(pred, target) == pytest.approx(0.0, abs=1e-8)


def test_p_mpjpe_equals_mpjpe_after_the_known_optimal_alignment():
    # Target T: the six points +-e_x, +-e_y, +-e_z. Distorted copy T + E with E[+k] = E[-k] and
    # sum(E) = 0, so E has zero mean and E^T T = 0: the cross-covariance is T^T T = 2 I, the best
    # rotation is the identity, and the best scale is |T|^2 / (|T|^2 + |E|^2) = 6 / (6 + 4 a^2).
    # The prediction is that copy rotated, doubled and shifted, which alignment must undo too.
    a = 0.5
    target = np.concatenate([np.eye(3), -np.eye(3)])[None]  # (1, 6, 3)
    e = np.zeros((1, 6, 3))
    e[0, [0, 3], 2] = a  # +-x points pushed up
    e[0, [1, 4], 2] = -a  # +-y points pushed down
    s = 6 / (6 + 4 * a * a)
    aligned_by_hand = s * (target + e)
    expected = (4 * math.sqrt((1 - s) ** 2 + (s * a) ** 2) + 2 * (1 - s)) / 6
    assert mpjpe(aligned_by_hand, target) == pytest.approx(expected)

    rot = _rotation(np.array([1.0, 2.0, -0.5]), 2.0)
    pred = 2.0 * (target + e) @ rot.T + np.array([10.0, -3.0, 7.0])
    assert p_mpjpe(pred, target) == pytest.approx(expected, rel=1e-9)
    assert np.allclose(procrustes_align(pred, target), aligned_by_hand)


def test_procrustes_never_uses_a_reflection():
    rng = np.random.default_rng(2)
    target = rng.normal(size=(1, 17, 3))
    mirrored = target * np.array([-1.0, 1.0, 1.0])  # a reflection, not reachable by rotation
    assert p_mpjpe(mirrored, target) > 0.1
    # and the aligned prediction is a proper rotation (+scale, shift) of the prediction
    aligned = procrustes_align(mirrored, target)[0]
    a0, m0 = aligned - aligned.mean(0), mirrored[0] - mirrored[0].mean(0)
    r, *_ = np.linalg.lstsq(m0, a0, rcond=None)
    assert np.linalg.det(r) > 0


def test_mpjve_hand_computed_and_blind_to_constant_offsets():
    target = np.zeros((3, 1, 3))
    target[:, 0, 0] = [0.0, 1.0, 2.0]  # moves 1 mm per frame along x
    pred = target.copy()
    pred[:, 0, 0] = [0.0, 3.0, 6.0]  # moves 3 mm per frame: velocity error 2 mm each step
    assert mpjve(pred, target) == pytest.approx(2.0)
    assert mpjve(target + 50.0, target) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="2 frames"):
        mpjve(np.zeros((1, 17, 3)), np.zeros((1, 17, 3)))
