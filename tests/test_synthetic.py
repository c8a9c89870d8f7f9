"""The synthetic motion data set: deterministic, anatomically valid, and its 2D is its 3D projected."""

from __future__ import annotations

import numpy as np
import pytest

from bench.accuracy.data import PARENTS, Clips, PoseSequence
from bench.accuracy.data.synthetic import SUBJECTS, generate, synthetic_data


@pytest.fixture(scope="module")
def seqs():
    return generate("train", 6, 120, seed=3)


def _bone_lengths(poses: np.ndarray) -> np.ndarray:
    """(L, 17, 3) -> (L, 16) length of every bone in every frame."""
    child = [j for j, p in enumerate(PARENTS) if p >= 0]
    return np.linalg.norm(poses[:, child] - poses[:, [PARENTS[j] for j in child]], axis=-1)


def test_same_seed_same_data_other_seed_other_data():
    a = synthetic_data(seed=7, train_sequences=2, test_sequences=1, frames=60)
    b = synthetic_data(seed=7, train_sequences=2, test_sequences=1, frames=60)
    c = synthetic_data(seed=8, train_sequences=2, test_sequences=1, frames=60)
    for x, y in zip(a.train + a.test, b.train + b.test, strict=True):
        assert np.array_equal(x.inputs, y.inputs) and np.array_equal(x.targets, y.targets)
    assert not np.allclose(a.train[0].targets, c.train[0].targets)


def test_a_sequence_depends_only_on_seed_split_and_index():
    short = generate("test", 2, 50, seed=1)
    longer = generate("test", 4, 50, seed=1)
    assert np.array_equal(short[1].world, longer[1].world)
    assert not np.allclose(longer[0].world, longer[2].world)


def test_bone_lengths_constant_and_realistic_in_every_frame(seqs):
    for s in seqs:
        for poses in (s.world, s.cam, s.pose_sequence().targets.astype(np.float64)):
            lengths = _bone_lengths(poses)  # (L, 16)
            assert np.allclose(lengths, lengths[0], atol=0.05), s.name  # constant over time (mm)
            assert np.allclose(lengths[0], s.bones[[j for j, p in enumerate(PARENTS) if p >= 0]], atol=0.05)
        by_child = dict(zip([j for j, p in enumerate(PARENTS) if p >= 0], _bone_lengths(s.world)[0], strict=True))
        assert 340 < by_child[2] < 560 and 340 < by_child[3] < 560  # thigh and shin (mm)
        assert 200 < by_child[12] < 350 and 180 < by_child[13] < 320  # upper arm, forearm
        assert by_child[2] == pytest.approx(by_child[5])  # left and right thighs match


def test_subject_proportions_differ_between_subjects():
    seqs = generate("train", SUBJECTS["train"], 20, seed=0)
    thighs = {round(float(s.bones[2]), 3) for s in seqs}
    assert len(thighs) == SUBJECTS["train"]


def test_2d_is_the_projection_of_the_3d(seqs):
    for s in seqs:
        cam = s.camera.to_camera(s.world)
        assert np.allclose(cam, s.cam)
        assert (cam[..., 2] > 2000).all()  # in front of the camera, metres away
        f, c = s.camera.focal, s.camera.center
        pixels = cam[..., :2] / cam[..., 2:3] * f + c
        normalised = pixels / s.camera.res_w * 2 - np.array([1.0, s.camera.res_h / s.camera.res_w])
        assert np.allclose(s.keypoints, normalised)
        assert (np.abs(s.keypoints) < 1.0).all()  # the subject stays in the image
        # Detections are the projection plus noise of a few pixels (outliers aside).
        err_px = np.linalg.norm(s.detections - s.keypoints, axis=-1) * s.camera.res_w / 2
        assert 1.0 < np.median(err_px) < 12.0
        # Confidence falls with the detection error, as a detector's score would.
        assert np.corrcoef(err_px.ravel(), s.confidence.ravel())[0, 1] < -0.3
        assert ((s.confidence >= 0) & (s.confidence <= 1)).all()


def test_targets_are_root_relative_mm_and_feet_touch_the_floor(seqs):
    for s in seqs:
        seq = s.pose_sequence()
        assert isinstance(seq, PoseSequence)
        assert np.abs(seq.targets[:, 0]).max() == 0.0
        assert seq.inputs.shape == (120, 17, 3) and seq.inputs.dtype == np.float32
        lowest_ankle = s.world[:, [3, 6], 2].min(axis=1)
        assert np.allclose(lowest_ankle, 80.0)


def test_motion_is_smooth(seqs):
    # 50 fps human motion: joints move well under 100 mm between frames (12 m/s would be absurd).
    for s in seqs:
        step = np.linalg.norm(np.diff(s.world, axis=0), axis=-1)
        assert step.max() < 100.0
        assert step.mean() > 1.0  # and they do move


def test_train_and_test_use_different_subjects():
    train = generate("train", SUBJECTS["train"], 10, seed=0)
    test = generate("test", SUBJECTS["test"], 10, seed=0)
    assert not {tuple(np.round(s.bones, 6)) for s in train} & {tuple(np.round(s.bones, 6)) for s in test}


def test_clips_cover_every_frame():
    seq = synthetic_data(0, 1, 1, 40).test[0]
    clips = Clips([seq], frames=27, stride=27)  # seq2seq: 0..26 and a last clip 13..39
    assert clips.index[:, 1].tolist() == [0, 13]
    x, y = clips.get([1], channels=2)
    assert x.shape == (1, 27, 17, 2) and np.array_equal(y[0], seq.targets[13:40])
    centred = Clips([seq], frames=27, stride=1, centred=True)  # seq2frame: one clip per frame
    assert len(centred) == 40
    _, y = centred.get([0, 39])
    assert np.array_equal(y[0, 13], seq.targets[0]) and np.array_equal(y[1, 13], seq.targets[39])
    assert np.array_equal(y[0, 0], seq.targets[0])  # padded by repeating the first frame
