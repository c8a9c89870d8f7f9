"""Pose data for accuracy runs: whole sequences, and clips of T frames cut from them.

Both sources (the built-in synthetic motion in :mod:`bench.accuracy.data.synthetic` and Human3.6M in the
VideoPose3D layout in :mod:`bench.accuracy.data.h36m`) produce the same thing, a :class:`PoseData` of
train and test :class:`PoseSequence`\\ s, independent of the clip length. A model then takes
:class:`Clips` of its own T from them, so one data set serves every backbone and variant.

Conventions shared by both sources:

- ``inputs`` (L, 17, 3): x, y of the 2D keypoints normalised by the image width to [-1, 1]
  (VideoPose3D's ``normalize_screen_coordinates``) and a detection confidence in [0, 1];
  2-channel backbones take ``[..., :2]``.
- ``targets`` (L, 17, 3): the 3D pose in camera coordinates, millimetres, root-relative (the
  pelvis, joint 0, at the origin in every frame).
- joints in the Human3.6M 17-joint order of VideoPose3D (:data:`JOINT_NAMES`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

JOINT_NAMES = (
    "pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "spine", "thorax",
    "neck", "head", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
)  # fmt: skip
# Parent of every joint in the 17-joint skeleton (-1: the root).
PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
NUM_JOINTS = len(JOINT_NAMES)


@dataclass(frozen=True)
class PoseSequence:
    """One continuous recording (one subject, action and camera)."""

    name: str
    inputs: np.ndarray  # (L, 17, 3) normalised x, y + confidence, float32
    targets: np.ndarray  # (L, 17, 3) camera coordinates, mm, root-relative, float32

    def __post_init__(self) -> None:
        if self.inputs.shape[:2] != self.targets.shape[:2] or self.inputs.shape[1:] != (NUM_JOINTS, 3):
            raise ValueError(
                f"sequence {self.name}: inputs {self.inputs.shape} and targets {self.targets.shape} "
                f"must both be (L, {NUM_JOINTS}, 3)"
            )

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


@dataclass(frozen=True)
class PoseData:
    """Train and test sequences of one source; ``method`` is the accuracy records' method."""

    method: str  # "synthetic" | "h36m"
    train: Sequence[PoseSequence]
    test: Sequence[PoseSequence]
    description: dict[str, object] = field(default_factory=dict)  # how it was made, for meta.json

    def mean_pose(self) -> np.ndarray:
        """Mean training target pose (17, 3), mm: the 'predict the average pose' baseline."""
        total = sum(s.targets.astype(np.float64).sum(axis=0) for s in self.train)
        frames = sum(len(s) for s in self.train)
        return np.asarray(total / max(frames, 1), dtype=np.float64)


def _pad_edges(a: np.ndarray, before: int, after: int) -> np.ndarray:
    """Repeat the first and last frame (VideoPose3D pads sequence ends the same way)."""
    if before == 0 and after == 0:
        return a
    return np.concatenate([np.repeat(a[:1], before, 0), a, np.repeat(a[-1:], after, 0)], axis=0)


class Clips:
    """Clips of ``frames`` consecutive frames over a list of sequences, sliced lazily per batch.

    ``centred=False`` (seq2seq): clips start at 0, stride, 2*stride, ... and, when the stride
    does not reach it, one more clip ends exactly at the last frame, so every frame is covered;
    a sequence shorter than T is padded at its end by repeating the last frame.
    ``centred=True`` (seq2frame): one clip centred on every ``stride``-th frame; sequences are
    padded at both ends by repeating the edge frames, so the first and last frames are centres
    too. Clip ``i`` is ``(sequence, start)`` in ``self.index``; ``self.first[i]`` is the frame of
    the original sequence that the clip's first (seq2seq) or centre (seq2frame) frame shows.
    """

    def __init__(self, sequences: Sequence[PoseSequence], frames: int, stride: int = 1, centred: bool = False):
        if frames < 1 or stride < 1:
            raise ValueError(f"frames and stride must be >= 1, got {frames} and {stride}")
        if not sequences:
            raise ValueError("no sequences to cut clips from")
        self.frames, self.stride, self.centred = frames, stride, centred
        self.sequences = list(sequences)
        self._inputs: list[np.ndarray] = []
        self._targets: list[np.ndarray] = []
        index: list[tuple[int, int]] = []
        first: list[int] = []
        pad = (frames - 1) // 2
        for s, seq in enumerate(self.sequences):
            n = len(seq)
            if centred:
                before, after = pad, frames - 1 - pad
                starts = list(range(0, n, stride))  # start in padded == centre in original
                frame_of = starts
            else:
                before, after = 0, max(0, frames - n)
                last = max(0, n - frames)
                starts = list(range(0, last + 1, stride))
                if starts[-1] != last:
                    starts.append(last)
                frame_of = starts
            self._inputs.append(_pad_edges(seq.inputs, before, after))
            self._targets.append(_pad_edges(seq.targets, before, after))
            index += [(s, st) for st in starts]
            first += frame_of
        self.index = np.asarray(index, dtype=np.int64)
        self.first = np.asarray(first, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def get(self, idx: Sequence[int] | np.ndarray, channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """Inputs (B, T, 17, channels) and targets (B, T, 17, 3) of clips ``idx``, float32."""
        t = self.frames
        xs = [self._inputs[s][st : st + t, :, :channels] for s, st in self.index[np.asarray(idx)]]
        ys = [self._targets[s][st : st + t] for s, st in self.index[np.asarray(idx)]]
        return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.float32)
