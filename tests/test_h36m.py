"""The Human3.6M loader on tiny generated files with VideoPose3D's key structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.accuracy.data.h36m import (
    FILE_3D,
    FILES_2D,
    INTRINSICS,
    KEEP_JOINTS,
    TEST_SUBJECTS,
    TRAIN_SUBJECTS,
    load_h36m,
    world_to_camera,
)
from bench.cli import main
from bench.core.errors import UsageError
from bench.core.results import read_records

SUBJECTS = TRAIN_SUBJECTS + TEST_SUBJECTS
ACTIONS = ("Walking", "Eating 2")
FRAMES = 12


def _world_motion(rng: np.random.Generator) -> np.ndarray:
    """(FRAMES, 32, 3) metres: a random skeleton-sized cloud near the capture centre, moving."""
    base = rng.uniform(-0.5, 0.5, (32, 3)) + np.array([0.0, 0.0, 0.9])
    drift = np.linspace(0, 0.2, FRAMES)[:, None, None] * np.array([1.0, 0.5, 0.0])
    return base[None] + drift


def write_h36m(root: Path, *, drop_3d_key: bool = False, drop_2d_subject: str | None = None) -> dict:
    """Write data_3d_h36m.npz and the CPN 2D file as VideoPose3D lays them out; return the 3D."""
    rng = np.random.default_rng(0)
    poses3 = {s: {a: _world_motion(rng) for a in ACTIONS} for s in SUBJECTS}
    # 2D detections run 2 frames longer than the mocap, as CPN files do for some sequences.
    poses2 = {s: {a: [rng.uniform(200, 800, (FRAMES + 2, 17, 2)) for _ in range(4)] for a in ACTIONS}
              for s in SUBJECTS if s != drop_2d_subject}  # fmt: skip
    meta = {"layout_name": "h36m", "num_joints": 17, "keypoints_symmetry": [[4, 5, 6, 11, 12, 13], [1, 2, 3, 14, 15, 16]]}
    if drop_3d_key:
        np.savez_compressed(root / FILE_3D, positions=np.array(poses3, dtype=object))
    else:
        np.savez_compressed(root / FILE_3D, positions_3d=np.array(poses3, dtype=object))
    np.savez_compressed(root / FILES_2D["cpn"], positions_2d=np.array(poses2, dtype=object),
                        metadata=np.array(meta, dtype=object))  # fmt: skip
    return poses3


def test_loads_splits_joints_units_and_lengths(tmp_path):
    poses3 = write_h36m(tmp_path)
    data = load_h36m(tmp_path)
    assert data.method == "h36m"
    assert len(data.train) == len(TRAIN_SUBJECTS) * len(ACTIONS) * 4
    assert len(data.test) == len(TEST_SUBJECTS) * len(ACTIONS) * 4
    assert {s.name.split("/")[0] for s in data.test} == set(TEST_SUBJECTS)
    seq = next(s for s in data.test if s.name == "S9/Walking/cam2")
    assert len(seq) == FRAMES  # 2D trimmed to the mocap length
    assert seq.inputs.shape == (FRAMES, 17, 3)
    assert np.all(seq.inputs[..., 2] == 1.0)  # no confidence in the files
    assert np.all(seq.targets[:, 0] == 0.0)  # root-relative
    # A rigid camera transform keeps distances: joint j's distance to the root, in mm, is that
    # of 32-skeleton joint KEEP_JOINTS[j] in the world file (in metres).
    world = poses3["S9"]["Walking"]
    expected = np.linalg.norm(world[:, list(KEEP_JOINTS)] - world[:, :1], axis=-1) * 1000
    assert np.allclose(np.linalg.norm(seq.targets, axis=-1), expected, rtol=1e-4, atol=1e-2)


def test_2d_is_normalised_by_the_image_width(tmp_path):
    write_h36m(tmp_path)
    raw = np.load(tmp_path / FILES_2D["cpn"], allow_pickle=True)["positions_2d"].item()
    seq = next(s for s in load_h36m(tmp_path).train if s.name == "S5/Eating 2/cam0")
    px = raw["S5"]["Eating 2"][0][:FRAMES]
    w, h = INTRINSICS[0][4], INTRINSICS[0][5]
    assert np.allclose(seq.inputs[..., 0], px[..., 0] / w * 2 - 1, atol=1e-6)
    assert np.allclose(seq.inputs[..., 1], px[..., 1] / w * 2 - h / w, atol=1e-6)


@pytest.mark.parametrize("subject", ["S1", "S9", "S11"])
def test_camera_extrinsics_put_the_capture_centre_in_front_of_every_camera(subject):
    # The capture centre at hip height should be 3-7 m in front of each camera and project near
    # the image centre: a wrong quaternion convention puts it behind the camera or off the image.
    centre = np.array([0.0, 0.0, 900.0])
    for cam, (fx, fy, cx, cy, w, h) in enumerate(INTRINSICS):
        p = world_to_camera(centre, subject, cam)
        assert 3000 < p[2] < 7000
        u, v = fx * p[0] / p[2] + cx, fy * p[1] / p[2] + cy
        assert abs(u - w / 2) < 300 and abs(v - h / 2) < 300


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(UsageError, match=FILE_3D):
        load_h36m(tmp_path)


def test_missing_key_names_file_and_key(tmp_path):
    write_h36m(tmp_path, drop_3d_key=True)
    with pytest.raises(UsageError, match=rf"{FILE_3D}.*missing key 'positions_3d'"):
        load_h36m(tmp_path)


def test_missing_subject_names_file_and_subject(tmp_path):
    write_h36m(tmp_path, drop_2d_subject="S11")
    with pytest.raises(UsageError, match=rf"{FILES_2D['cpn']}.*positions_2d lacks subject 'S11'"):
        load_h36m(tmp_path)


def test_garbage_file_is_a_usage_error(tmp_path):
    write_h36m(tmp_path)
    (tmp_path / FILE_3D).write_bytes(b"this is not a zip archive")
    with pytest.raises(UsageError, match=FILE_3D):
        load_h36m(tmp_path)


def test_malformed_files_exit_2_naming_file_and_key(tmp_path, capsys):
    write_h36m(tmp_path, drop_3d_key=True)
    code = main(["accuracy", "--data", "h36m", "--data-dir", str(tmp_path), "--backbones", "mixste",
                 "--variants", "rectangle", "--out", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert FILE_3D in err and "positions_3d" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_accuracy_trains_and_evaluates_on_human36m_files(tmp_path, capsys):
    # The whole path on the real key layout: load, standardise (a constant confidence channel),
    # train a few steps, evaluate S9/S11, record; a seq2seq and a seq2frame backbone.
    write_h36m(tmp_path)
    out = tmp_path / "run"
    argv = ["accuracy", "--data", "h36m", "--data-dir", str(tmp_path), "--backbones", "mixste,mhformer",
            "--variants", "rectangle", "--frames", "9", "--batch", "2", "--steps", "2", "--executor", "inline",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    recs = read_records(out)
    assert {(r["backbone"], r["metric"]) for r in recs} == {
        (b, m) for b in ("mixste", "mhformer") for m in ("mpjpe", "p_mpjpe", "mpjve")
    }
    for r in recs:
        assert r["status"] == "ok" and r["method"] == "h36m" and np.isfinite(r["value"]), r
