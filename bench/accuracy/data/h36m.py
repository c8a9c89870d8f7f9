"""Human3.6M in the common VideoPose3D npz layout (the files HoT, MixSTE and MHFormer read).

Files in ``--data-dir``:

- ``data_3d_h36m.npz``: key ``positions_3d``, a dict subject -> action -> (L, 32, 3) world
  positions in metres (the 32-joint Human3.6M skeleton; a 17-joint array is taken as already
  reduced);
- ``data_2d_h36m_cpn_ft_h36m_dbb.npz`` (CPN detections, the standard protocol) or
  ``data_2d_h36m_gt.npz`` (projected ground truth): key ``positions_2d``, a dict subject -> action
  -> list of 4 (L, 17, 2) pixel arrays, one per camera, and key ``metadata`` (layout, symmetry).

What the loader does: keeps VideoPose3D's 17 joints (drops the 15 static or duplicated ones),
moves the 3D into each camera's coordinates with the published Human3.6M extrinsics, makes it
root-relative, in millimetres; trims 2D and 3D to their common length; normalises the 2D by the
image width to [-1, 1]; sets the confidence channel to 1 (the npz files carry none), so
3-channel backbones see (x, y, 1). Subjects S1, S5, S6, S7, S8 train; S9, S11 test. Every
missing file, key, subject or action, or a wrongly shaped array, is a UsageError naming the file
and the key. The files hold pickled dicts (``allow_pickle``): load only files you trust.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import UsageError
from . import NUM_JOINTS, PoseData, PoseSequence

TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
TEST_SUBJECTS = ("S9", "S11")
FILE_3D = "data_3d_h36m.npz"
FILES_2D = {"cpn": "data_2d_h36m_cpn_ft_h36m_dbb.npz", "gt": "data_2d_h36m_gt.npz"}

# The 17 of 32 joints that VideoPose3D keeps (it removes 4, 5, 9, 10, 11, 16, 20-24, 28-31).
KEEP_JOINTS = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)

# Camera facts of the Human3.6M release, as tabulated by VideoPose3D (h36m_dataset.py).
# Intrinsics per camera index: (focal x, focal y, centre x, centre y, width, height), pixels.
INTRINSICS = (
    (1145.0494384765625, 1143.7811279296875, 512.54150390625, 515.4514770507812, 1000, 1002),
    (1149.6756591796875, 1147.5916748046875, 508.8486328125, 508.0649108886719, 1000, 1000),
    (1149.1407470703125, 1148.7989501953125, 519.8158569335938, 501.40264892578125, 1000, 1000),
    (1145.5113525390625, 1144.77392578125, 514.9682006835938, 501.88201904296875, 1000, 1002),
)
# Extrinsics per subject and camera: orientation quaternion (w, x, y, z) of the camera in the
# world, and its position in the world (mm).
EXTRINSICS: dict[str, tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]] = {
    "S1": (
        ((0.1407056450843811, -0.1500701755285263, -0.755240797996521, 0.6223280429840088), (1841.1070556640625, 4955.28466796875, 1563.4454345703125)),  # noqa: E501
        ((0.6157187819480896, -0.764836311340332, -0.14833825826644897, 0.11794740706682205), (1761.278564453125, -5078.0068359375, 1606.2650146484375)),  # noqa: E501
        ((0.14651472866535187, -0.14647851884365082, 0.7653023600578308, -0.6094175577163696), (-1846.7777099609375, 5215.04638671875, 1491.972412109375)),  # noqa: E501
        ((0.5834008455276489, -0.7853162288665771, 0.14548823237419128, -0.14749594032764435), (-1794.7896728515625, -3722.698974609375, 1574.8927001953125)),  # noqa: E501
    ),
    "S5": (
        ((0.1467377245426178, -0.162370964884758, -0.7551892995834351, 0.6178938746452332), (2097.3916015625, 4880.94482421875, 1605.732421875)),  # noqa: E501
        ((0.6159758567810059, -0.7626792192459106, -0.15728192031383514, 0.1189815029501915), (2031.7008056640625, -5167.93310546875, 1612.923095703125)),  # noqa: E501
        ((0.14291371405124664, -0.12907841801643372, 0.7678384780883789, -0.6110143065452576), (-1620.5948486328125, 5171.65869140625, 1496.43701171875)),  # noqa: E501
        ((0.5920479893684387, -0.7814217805862427, 0.1274748593568802, -0.15036417543888092), (-1637.1737060546875, -3867.3173828125, 1547.033203125)),  # noqa: E501
    ),
    "S6": (
        ((0.1337897777557373, -0.15692396461963654, -0.7571090459823608, 0.6198879480361938), (1935.4517822265625, 4950.24560546875, 1618.0838623046875)),  # noqa: E501
        ((0.6147197484970093, -0.7628812789916992, -0.16174767911434174, 0.11819244921207428), (1969.803955078125, -5128.73876953125, 1632.77880859375)),  # noqa: E501
        ((0.1529948115348816, -0.13529130816459656, 0.7646096348762512, -0.6112781167030334), (-1769.596435546875, 5185.361328125, 1476.993408203125)),  # noqa: E501
        ((0.5916101336479187, -0.7804774045944214, 0.12832270562648773, -0.1561593860387802), (-1721.668701171875, -3884.13134765625, 1540.4879150390625)),  # noqa: E501
    ),
    "S7": (
        ((0.1435241848230362, -0.1631336808204651, -0.7548328638076782, 0.6188824772834778), (1974.512939453125, 4926.3544921875, 1597.8326416015625)),  # noqa: E501
        ((0.6141672730445862, -0.7638262510299683, -0.1596645563840866, 0.1177929937839508), (1937.0584716796875, -5119.7900390625, 1631.5665283203125)),  # noqa: E501
        ((0.14550060033798218, -0.12874816358089447, 0.7660516500473022, -0.6127139329910278), (-1741.8111572265625, 5208.24951171875, 1464.8245849609375)),  # noqa: E501
        ((0.5912848114967346, -0.7821764349937439, 0.12445473670959473, -0.15196487307548523), (-1734.7105712890625, -3832.42138671875, 1548.5830078125)),  # noqa: E501
    ),
    "S8": (
        ((0.14110587537288666, -0.15589867532253265, -0.7561917304992676, 0.619644045829773), (2150.65185546875, 4896.1611328125, 1611.9046630859375)),  # noqa: E501
        ((0.6169601678848267, -0.7647668123245239, -0.14846350252628326, 0.11158157885074615), (2219.965576171875, -5148.453125, 1613.0440673828125)),  # noqa: E501
        ((0.1471444070339203, -0.13377119600772858, 0.7670128345489502, -0.6100369691848755), (-1571.2215576171875, 5137.0185546875, 1498.1761474609375)),  # noqa: E501
        ((0.5927824378013611, -0.7825870513916016, 0.12147816270589828, -0.14631995558738708), (-1476.913330078125, -3896.7412109375, 1547.97216796875)),  # noqa: E501
    ),
    "S9": (
        ((0.15540587902069092, -0.15548215806484222, -0.7532095313072205, 0.6199594736099243), (2044.45849609375, 4935.1171875, 1481.2275390625)),  # noqa: E501
        ((0.618784487247467, -0.7634735107421875, -0.14132238924503326, 0.11933968216180801), (1990.959716796875, -5123.810546875, 1568.8048095703125)),  # noqa: E501
        ((0.13357827067375183, -0.1367100477218628, 0.7689454555511475, -0.6100738644599915), (-1670.9921875, 5211.98583984375, 1528.387939453125)),  # noqa: E501
        ((0.5879399180412292, -0.7823407053947449, 0.1427614390850067, -0.14794869720935822), (-1696.04345703125, -3827.099853515625, 1591.4127197265625)),  # noqa: E501
    ),
    "S11": (
        ((0.15232472121715546, -0.15442320704460144, -0.7547563314437866, 0.6191070079803467), (2098.440185546875, 4926.5546875, 1500.278564453125)),  # noqa: E501
        ((0.6189449429512024, -0.7600917220115662, -0.15300633013248444, 0.1255258321762085), (2083.182373046875, -4912.1728515625, 1561.07861328125)),  # noqa: E501
        ((0.14943228662014008, -0.15650227665901184, 0.7681233882904053, -0.6026304364204407), (-1609.8153076171875, 5177.3359375, 1537.896728515625)),  # noqa: E501
        ((0.5894251465797424, -0.7818877100944519, 0.13991211354732513, -0.14715361595153809), (-1590.738037109375, -3854.1689453125, 1578.017578125)),  # noqa: E501
    ),
}


def quaternion_matrix(q: tuple[float, ...] | np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) of a quaternion (w, x, y, z); normalised first."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])  # fmt: skip


def world_to_camera(points_mm: np.ndarray, subject: str, camera: int) -> np.ndarray:
    """World points (..., 3) in mm -> coordinates of ``camera`` (0..3) of ``subject``, mm.

    The quaternion rotates camera axes into the world, so world -> camera is its inverse:
    X_cam = R^T (X - t), written for row vectors as (X - t) @ R.
    """
    q, t = EXTRINSICS[subject][camera]
    return (points_mm - np.asarray(t)) @ quaternion_matrix(q)


def normalise_pixels(pixels: np.ndarray, camera: int) -> np.ndarray:
    """Pixels -> [-1, 1] by the image width of ``camera`` (VideoPose3D's normalisation)."""
    w, h = INTRINSICS[camera][4], INTRINSICS[camera][5]
    return pixels / w * 2.0 - np.array([1.0, h / w])


# --------------------------------------------------------------------------- file reading


def _load_npz(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """The dict objects stored under ``keys`` in ``path``; UsageError naming what is missing."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file (the Human3.6M VideoPose3D layout needs it in --data-dir)")
    try:
        npz = np.load(path, allow_pickle=True)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        raise UsageError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise UsageError(f"{path}: not an .npz archive (expected keys {', '.join(keys)})")
    with npz:
        missing = [k for k in keys if k not in npz.files]
        if missing:
            raise UsageError(f"{path}: missing key {missing[0]!r} (has {', '.join(npz.files) or 'no keys'})")
        try:
            out = {k: npz[k] for k in keys}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
            raise UsageError(f"{path}: cannot read its arrays ({type(e).__name__}: {e})") from None
    for k, v in out.items():
        if isinstance(v, np.ndarray) and v.dtype == object and v.shape == ():
            out[k] = v.item()
        if not isinstance(out[k], dict):
            raise UsageError(f"{path}: key {k!r} must hold a dict (subject -> action -> ...), got {type(out[k]).__name__}")
    return out


def _check_array(arr: Any, path: Path, where: str, joints: tuple[int, ...], dim: int) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 3 or a.shape[1] not in joints or a.shape[2] != dim or a.shape[0] < 1:
        want = "|".join(map(str, joints))
        raise UsageError(f"{path}: {where} has shape {a.shape}, expected (frames, {want}, {dim})")
    return a.astype(np.float64)


def load_h36m(
    data_dir: str | Path,
    keypoints: str = "cpn",
    train_subjects: tuple[str, ...] = TRAIN_SUBJECTS,
    test_subjects: tuple[str, ...] = TEST_SUBJECTS,
) -> PoseData:
    """Human3.6M as :class:`PoseData`: one sequence per (subject, action, camera).

    ``keypoints`` picks the 2D file: ``cpn`` (CPN detections, the protocol of the papers) or
    ``gt`` (ground-truth projections).
    """
    if keypoints not in FILES_2D:
        raise UsageError(f"unknown keypoints {keypoints!r}; choose from {', '.join(FILES_2D)}")
    root = Path(data_dir)
    if not root.is_dir():
        raise UsageError(f"--data-dir {root}: no such directory (it must hold {FILE_3D} and {FILES_2D[keypoints]})")
    path3, path2 = root / FILE_3D, root / FILES_2D[keypoints]
    poses3 = _load_npz(path3, ("positions_3d",))["positions_3d"]
    poses2 = _load_npz(path2, ("positions_2d", "metadata"))["positions_2d"]

    def split(subjects: tuple[str, ...]) -> list[PoseSequence]:
        out: list[PoseSequence] = []
        for subject in subjects:
            if subject not in EXTRINSICS:
                raise UsageError(f"unknown Human3.6M subject {subject!r}; choose from {', '.join(EXTRINSICS)}")
            if subject not in poses3:
                raise UsageError(f"{path3}: positions_3d lacks subject {subject!r}")
            if subject not in poses2:
                raise UsageError(f"{path2}: positions_2d lacks subject {subject!r}")
            for action in sorted(poses3[subject]):
                if action not in poses2[subject]:
                    raise UsageError(f"{path2}: positions_2d[{subject!r}] lacks action {action!r}")
                world = _check_array(poses3[subject][action], path3, f"positions_3d[{subject!r}][{action!r}]",
                                     (32, NUM_JOINTS), 3)  # fmt: skip
                if world.shape[1] == 32:
                    world = world[:, KEEP_JOINTS]
                world = world * 1000.0  # VideoPose3D stores metres
                views = poses2[subject][action]
                if len(views) != len(INTRINSICS):
                    raise UsageError(
                        f"{path2}: positions_2d[{subject!r}][{action!r}] has {len(views)} cameras, expected 4"
                    )
                for cam, kp in enumerate(views):
                    kp = _check_array(kp, path2, f"positions_2d[{subject!r}][{action!r}][{cam}]", (NUM_JOINTS,), 2)
                    n = min(len(kp), len(world))  # CPN detections may run a few frames longer
                    pos = world_to_camera(world[:n], subject, cam)
                    targets = pos - pos[:, :1]
                    xy = normalise_pixels(kp[:n], cam)
                    inputs = np.concatenate([xy, np.ones((n, NUM_JOINTS, 1))], axis=-1)
                    out.append(PoseSequence(f"{subject}/{action}/cam{cam}", inputs.astype(np.float32),
                                            targets.astype(np.float32)))  # fmt: skip
        return out

    desc: dict[str, object] = {"source": "h36m", "data_dir": str(root), "keypoints": keypoints,
            "train_subjects": list(train_subjects), "test_subjects": list(test_subjects)}  # fmt: skip
    return PoseData("h36m", split(train_subjects), split(test_subjects), desc)
