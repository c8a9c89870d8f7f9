"""The built-in synthetic motion data set: offline, deterministic by seed, seconds to make.

What it is. A 17-joint Human3.6M skeleton (VideoPose3D joint order, bone lengths near the mean
Human3.6M subject, each subject scaled by +-10 % overall and +-4 % per bone, constant over a
sequence) driven by forward kinematics at 50 fps: half of the sequences are walks (a periodic gait
whose phase advances with the distance walked: hip and shoulder swing, knee and elbow flexion,
pelvis twist, wandering path steered back into a ~1.2 m capture area), half are free movement
(random smooth joint-angle trajectories, sums of low-frequency sinusoids within joint limits:
arm gestures, trunk and head movement, small independent leg movement plus occasional coupled
squats and bends, turning on the spot and drifting). The feet are kept on the floor (the root height is set so the
lower ankle is 80 mm above it). Each sequence is seen by one Human3.6M-like pinhole camera:
focal length ~1145 px, principal point ~(512, 515), 1000 x 1000 px, 4-6 m from the capture
centre at 1.2-1.9 m height, aimed at the subject's hips; the 2D is normalised to [-1, 1] by the
image width as VideoPose3D does. Detector-like noise is added to the 2D: per-joint Gaussian jitter
(larger at wrists and ankles), a temporally correlated drift, and rare multi-frame outlier jumps
(like a detector swapping limbs); the confidence channel falls with the error of that joint, so
it carries information as a real detector's score does. Train and test use disjoint subjects
(5 and 2, as Human3.6M) and independent motions.

What it is not. It is not Human3.6M: no real human motion, no lens distortion, no occlusion,
one actor per camera, and a motion vocabulary far poorer than people's. Errors on it are not
comparable with published MPJPE; it exists so that every variant can be trained and compared on
equal terms, offline and in CI, and so that "the pruned model still learns" can be tested.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import NUM_JOINTS, PARENTS, PoseData, PoseSequence

FPS = 50  # Human3.6M's frame rate

# Bone from the parent to each joint: length (mm) and rest direction in the body frame
# (x: the subject's left, y: forward, z: up). Lengths are close to the mean Human3.6M subject.
_BONES: dict[int, tuple[float, tuple[float, float, float]]] = {
    1: (133.0, (-1.0, 0.0, -0.05)),  # pelvis -> right hip
    2: (446.0, (0.0, 0.0, -1.0)),  # right thigh
    3: (447.0, (0.0, 0.0, -1.0)),  # right shin
    4: (133.0, (1.0, 0.0, -0.05)),  # pelvis -> left hip
    5: (446.0, (0.0, 0.0, -1.0)),  # left thigh
    6: (447.0, (0.0, 0.0, -1.0)),  # left shin
    7: (233.0, (0.0, 0.03, 1.0)),  # pelvis -> spine
    8: (254.0, (0.0, 0.0, 1.0)),  # spine -> thorax
    9: (115.0, (0.0, 0.25, 1.0)),  # thorax -> neck/nose
    10: (115.0, (0.0, -0.1, 1.0)),  # neck -> head top
    11: (150.0, (1.0, 0.0, -0.15)),  # thorax -> left shoulder
    12: (281.0, (0.0, 0.0, -1.0)),  # left upper arm
    13: (250.0, (0.0, 0.0, -1.0)),  # left forearm
    14: (150.0, (-1.0, 0.0, -0.15)),  # thorax -> right shoulder
    15: (281.0, (0.0, 0.0, -1.0)),  # right upper arm
    16: (250.0, (0.0, 0.0, -1.0)),  # right forearm
}
_RIGHT = (1, 2, 3, 14, 15, 16)  # mirrored joints: their roll and twist angles change sign
_ANKLES = (3, 6)
_ANKLE_HEIGHT = 80.0  # mm above the floor

# Free-movement ranges (degrees) of the joints that rotate their child bones, left-side convention.
# (flex_lo, flex_hi, roll_amp, twist_amp, outward_max): flexion about the lateral axis (positive
# swings a hanging limb forward, leans the trunk back), roll about the forward axis, twist about
# the vertical, and a one-sided abduction for hips and shoulders (limbs go outward, not through
# the body). Knees (2, 5) and elbows (12, 15) are hinges: flexion only, one way.
_FREE: dict[int, tuple[float, float, float, float, float]] = {
    0: (-10.0, 5.0, 6.0, 0.0, 0.0),  # pelvis tilt/roll (the heading is the root's own)
    7: (-25.0, 8.0, 8.0, 20.0, 0.0),  # lower back
    8: (-12.0, 6.0, 6.0, 12.0, 0.0),  # upper back
    9: (-25.0, 20.0, 10.0, 35.0, 0.0),  # neck
    1: (-15.0, 55.0, 0.0, 12.0, 25.0),  # hips
    4: (-15.0, 55.0, 0.0, 12.0, 25.0),
    2: (-70.0, 0.0, 0.0, 0.0, 0.0),  # knees bend backwards
    5: (-70.0, 0.0, 0.0, 0.0, 0.0),
    11: (-35.0, 95.0, 0.0, 30.0, 80.0),  # shoulders
    14: (-35.0, 95.0, 0.0, 30.0, 80.0),
    12: (0.0, 110.0, 0.0, 0.0, 0.0),  # elbows bend forwards
    15: (0.0, 110.0, 0.0, 0.0, 0.0),
}
# Detector jitter (px, one standard deviation) per joint: limb ends are the hardest to localise.
_JITTER_PX = np.array([2.5, 3.0, 3.5, 4.5, 3.0, 3.5, 4.5, 2.5, 2.5, 3.0, 3.5, 3.0, 4.0, 5.5, 3.0, 4.0, 5.5])


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: world (mm, z up) -> camera (OpenCV axes: x right, y down, z forward)."""

    rotation: np.ndarray  # (3, 3) world -> camera
    position: np.ndarray  # (3,) camera centre in the world, mm
    focal: np.ndarray  # (2,) px
    center: np.ndarray  # (2,) px
    res_w: int = 1000
    res_h: int = 1000

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points (..., 3) -> camera coordinates (..., 3), mm."""
        return (points - self.position) @ self.rotation.T

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """Camera points (..., 3) -> pixels (..., 2), no lens distortion."""
        return points_cam[..., :2] / points_cam[..., 2:3] * self.focal + self.center

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """Pixels -> [-1, 1] by the image width, keeping the aspect ratio (VideoPose3D's rule)."""
        return pixels / self.res_w * 2.0 - np.array([1.0, self.res_h / self.res_w])


@dataclass(frozen=True)
class SyntheticSequence:
    """Everything about one generated sequence; :meth:`pose_sequence` is what models see."""

    name: str
    kind: str  # "walk" | "free"
    bones: np.ndarray  # (17,) bone length to the parent per joint, mm (0 for the root)
    world: np.ndarray  # (L, 17, 3) mm, z up
    camera: Camera
    cam: np.ndarray  # (L, 17, 3) camera coordinates, mm (absolute)
    keypoints: np.ndarray  # (L, 17, 2) exact projection, normalised
    detections: np.ndarray  # (L, 17, 2) keypoints + detector-like noise, normalised
    confidence: np.ndarray  # (L, 17) in [0, 1]

    def pose_sequence(self) -> PoseSequence:
        inputs = np.concatenate([self.detections, self.confidence[..., None]], axis=-1)
        targets = self.cam - self.cam[:, :1]
        return PoseSequence(self.name, inputs.astype(np.float32), targets.astype(np.float32))


# --------------------------------------------------------------------------- kinematics


def _rot_x(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([o, z, z, z, c, -s, z, s, c], -1).reshape(*a.shape, 3, 3)


def _rot_y(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(*a.shape, 3, 3)


def _rot_z(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(*a.shape, 3, 3)


def forward_kinematics(angles: np.ndarray, bones: np.ndarray, heading: np.ndarray) -> np.ndarray:
    """Joint positions (L, 17, 3) relative to the pelvis, world axes, mm.

    ``angles`` (L, 17, 3) are each joint's (flex, roll, twist) in radians, rotating its child
    bones; ``heading`` (L,) turns the whole body about the vertical. Rotations preserve lengths,
    so every bone keeps its length ``bones[j]`` in every frame.
    """
    n = angles.shape[0]
    local = _rot_z(angles[..., 2]) @ _rot_y(angles[..., 1]) @ _rot_x(angles[..., 0])  # (L, 17, 3, 3)
    glob = [np.empty(0)] * NUM_JOINTS
    pos = np.zeros((n, NUM_JOINTS, 3))
    glob[0] = _rot_z(heading) @ local[:, 0]
    for j in range(1, NUM_JOINTS):
        p = PARENTS[j]
        _, direction = _BONES[j]
        offset = np.asarray(direction) / np.linalg.norm(direction) * bones[j]
        pos[:, j] = pos[:, p] + glob[p] @ offset
        glob[j] = glob[p] @ local[:, j]
    return pos


def subject_bones(rng: np.random.Generator) -> np.ndarray:
    """Bone lengths (17,) of a random subject: +-10 % overall, +-4 % per bone, left = right."""
    scale = rng.uniform(0.9, 1.1)
    bones = np.zeros(NUM_JOINTS)
    for j, (length, _) in _BONES.items():
        bones[j] = length * scale
    for right, left in ((1, 4), (2, 5), (3, 6), (14, 11), (15, 12), (16, 13)):
        f = rng.uniform(0.96, 1.04)
        bones[right] *= f
        bones[left] *= f
    for j in (7, 8, 9, 10):
        bones[j] *= rng.uniform(0.96, 1.04)
    return bones


# --------------------------------------------------------------------------- motion


def _smooth(rng: np.random.Generator, t: np.ndarray, lo: float, hi: float, parts: int = 3) -> np.ndarray:
    """A random smooth signal in [-1, 1]: a weighted sum of sinusoids of lo..hi Hz."""
    freq = rng.uniform(lo, hi, parts)
    phase = rng.uniform(0, 2 * np.pi, parts)
    w = rng.dirichlet(np.ones(parts))
    return (w[:, None] * np.sin(2 * np.pi * freq[:, None] * t + phase[:, None])).sum(0)


def _free_angles(rng: np.random.Generator, t: np.ndarray, amount: float, legs: float = 0.3) -> np.ndarray:
    """(L, 17, 3) random smooth joint angles within :data:`_FREE`, scaled by ``amount``.

    Legs move independently only a little (``legs`` of their range): people mostly stand on
    them; their big movements are coupled (both knees and hips bend together, see
    :func:`_free_motion`). Arms, trunk and neck use their full range.
    """
    ang = np.zeros((len(t), NUM_JOINTS, 3))
    for j, (lo, hi, roll, twist, outward) in _FREE.items():
        mid, half = (lo + hi) / 2, (hi - lo) / 2
        flex = mid + half * _smooth(rng, t, 0.1, 0.9)
        if lo == 0.0 or hi == 0.0:  # a hinge: stays at its limit side, 0 at rest
            flex = np.where(hi == 0.0, np.minimum(flex, 0.0), np.maximum(flex, 0.0))
        scale = amount * (legs if j in (1, 2, 4, 5) else 1.0)
        ang[:, j, 0] = scale * flex
        ang[:, j, 1] = scale * (roll * _smooth(rng, t, 0.1, 0.7) - outward * (0.5 + 0.5 * _smooth(rng, t, 0.1, 0.6)))
        ang[:, j, 2] = scale * twist * _smooth(rng, t, 0.1, 0.7)
    return np.deg2rad(ang)


def _free_motion(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Free movement: gestures and posture changes on top of occasional squats and bends."""
    ang = _free_angles(rng, t, 1.0)
    squat = np.clip(_smooth(rng, t, 0.05, 0.3), 0.0, 1.0) ** 2  # mostly 0: standing
    depth = np.deg2rad(rng.uniform(30, 60))
    ang[:, [1, 4], 0] += depth * squat[:, None]  # hips flex
    ang[:, [2, 5], 0] -= 1.6 * depth * squat[:, None]  # knees bend (further)
    ang[:, 7, 0] -= 0.5 * depth * squat  # the trunk leans forward to keep balance
    return ang


def _gait_angles(phase: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(L, 17, 3) angles of a walk at gait ``phase`` (radians, one stride per 2 pi)."""
    a_hip, a_knee = rng.uniform(18, 30), rng.uniform(45, 65)
    a_arm, a_elbow = rng.uniform(10, 25), rng.uniform(10, 25)
    ang = np.zeros((len(phase), NUM_JOINTS, 3))
    for hip, knee, sh, elbow, ph in ((4, 5, 14, 15, 0.0), (1, 2, 11, 12, np.pi)):
        # the left leg (4, 5) swings with the right arm (14, 15), and vice versa
        ang[:, hip, 0] = a_hip * np.sin(phase + ph)
        ang[:, knee, 0] = -a_knee * (0.5 - 0.5 * np.cos(phase + ph + 0.9)) ** 2
        ang[:, sh, 0] = a_arm * np.sin(phase + ph)
        ang[:, elbow, 0] = a_elbow + 0.5 * a_elbow * np.sin(phase + ph)
    ang[:, 0, 2] = 5.0 * np.sin(phase)  # pelvis twist
    ang[:, 8, 2] = -4.0 * np.sin(phase)  # the chest counter-rotates
    ang[:, 7, 0] = -rng.uniform(2, 8)  # a slight forward lean
    return np.deg2rad(ang)


def _root_path(rng: np.random.Generator, t: np.ndarray, walk: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground position (L, 2) mm, body heading (L,) rad and gait phase (L,) of one sequence."""
    n, dt = len(t), 1.0 / FPS
    xy = np.zeros((n, 2))
    xy[0] = rng.uniform(-600, 600, 2)
    direction = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(900, 1500) if walk else rng.uniform(0, 250)  # mm/s
    turn = np.deg2rad(40) * _smooth(rng, t, 0.05, 0.4)  # rad/s of wandering
    stride = rng.uniform(1200, 1500)  # mm per gait cycle
    heading_free = np.deg2rad(90) * _smooth(rng, t, 0.03, 0.3)
    dirs = np.zeros(n)
    for i in range(n):
        dirs[i] = direction
        if i + 1 < n:
            xy[i + 1] = xy[i] + speed * dt * np.array([np.cos(direction), np.sin(direction)])
            # Steer back towards the capture centre when far out: the cameras must keep seeing us.
            r = np.linalg.norm(xy[i + 1])
            home = np.arctan2(-xy[i + 1, 1], -xy[i + 1, 0])
            pull = np.sin(home - direction) * max(0.0, r - 800.0) / 400.0
            direction += (turn[i] + 2.0 * pull) * dt
    phase = rng.uniform(0, 2 * np.pi) + 2 * np.pi * speed * t / stride
    # The body faces the way it walks (body +y is forward, so heading = direction - 90 degrees).
    heading = dirs - np.pi / 2 if walk else dirs[0] - np.pi / 2 + heading_free
    return xy, heading, phase


def _look_at(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World -> camera rotation of a camera at ``position`` aimed at ``target`` (world z up)."""
    forward = target - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward])


def random_camera(rng: np.random.Generator) -> Camera:
    """A Human3.6M-like camera 4-6 m from the capture centre, 1.2-1.9 m high, aimed at the hips."""
    azimuth = rng.uniform(0, 2 * np.pi)
    dist, height = rng.uniform(4000, 6000), rng.uniform(1200, 1900)
    position = np.array([dist * np.cos(azimuth), dist * np.sin(azimuth), height])
    target = np.array([*rng.uniform(-200, 200, 2), rng.uniform(800, 1000)])
    focal = np.full(2, rng.uniform(1140, 1150)) + rng.uniform(-2, 2, 2)
    center = np.array([512.0, 515.0]) + rng.uniform(-8, 8, 2)
    return Camera(_look_at(position, target), position, focal, center)


def _detector_noise(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel noise (L, 17, 2) and the matching confidence (L, 17) of a 2D detector."""
    sigma = _JITTER_PX * rng.uniform(0.7, 1.3)
    white = rng.normal(size=(n, NUM_JOINTS, 2)) * sigma[:, None] * 0.7
    # A slow drift: white noise averaged over k frames (~0.2 s), rescaled to unit spread.
    k = 9
    c = np.cumsum(rng.normal(size=(n + k, NUM_JOINTS, 2)), axis=0)
    drift = (c[k:] - c[:-k]) / np.sqrt(k)
    noise = white + drift * sigma[:, None] * 0.7
    # Rare outliers: a joint jumps 15-40 px for 1-5 frames (a limb swap, a missed detection).
    starts = rng.random((n, NUM_JOINTS)) < 0.004
    for f, j in zip(*np.nonzero(starts), strict=True):
        length = rng.integers(1, 6)
        angle = rng.uniform(0, 2 * np.pi)
        noise[f : f + length, j] += rng.uniform(15, 40) * np.array([np.cos(angle), np.sin(angle)])
    err = np.linalg.norm(noise, axis=-1)
    conf = 0.97 * np.exp(-0.5 * (err / (2.5 * sigma)) ** 2) + rng.normal(0, 0.02, err.shape)
    return noise, np.clip(conf, 0.02, 1.0)


def make_sequence(
    seed: int, split: str, index: int, frames: int, bones: np.ndarray, walk_fraction: float = 0.5
) -> SyntheticSequence:
    """Sequence ``index`` of ``split``, a pure function of its arguments (so of the seed).

    It is a walk with probability ``walk_fraction``, else free movement.
    """
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], index])
    t = np.arange(frames) / FPS
    walk = bool(rng.random() < walk_fraction)
    xy, heading, phase = _root_path(rng, t, walk)
    # A walk keeps a little free variation on top of its gait (nobody walks like a metronome).
    angles = _gait_angles(phase, rng) + _free_angles(rng, t, 0.2) if walk else _free_motion(rng, t)
    rel = forward_kinematics(angles, bones, heading)
    world = rel.copy()
    world[..., :2] += xy[:, None]
    world[..., 2] += _ANKLE_HEIGHT - rel[:, _ANKLES, 2].min(axis=1, keepdims=True)  # feet on the floor
    camera = random_camera(rng)
    cam = camera.to_camera(world)
    keypoints = camera.normalise(camera.project(cam))
    noise, conf = _detector_noise(rng, frames)
    detections = keypoints + noise / camera.res_w * 2.0  # px -> normalised units
    return SyntheticSequence(
        name=f"{split}/{index:04d}-{'walk' if walk else 'free'}", kind="walk" if walk else "free",
        bones=bones, world=world, camera=camera, cam=cam, keypoints=keypoints,
        detections=detections, confidence=conf,
    )


_SPLIT_CODE = {"train": 0, "test": 1}
SUBJECTS = {"train": 5, "test": 2}  # disjoint subjects, as Human3.6M's S1,5,6,7,8 / S9,11


def generate(
    split: str, count: int, frames: int, seed: int = 0, walk_fraction: float = 0.5
) -> list[SyntheticSequence]:
    """``count`` sequences of ``frames`` frames of ``split`` ("train" | "test"), by seed.

    Sequence i belongs to subject ``i % SUBJECTS[split]``; it depends only on (seed, split, i),
    so a larger ``count`` extends a data set without changing its first sequences.
    """
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if count < 1 or frames < 2:
        raise ValueError(f"need count >= 1 and frames >= 2, got {count} and {frames}")
    if not 0.0 <= walk_fraction <= 1.0:
        raise ValueError(f"walk_fraction must lie in [0, 1], got {walk_fraction}")
    subjects = [
        subject_bones(np.random.default_rng([seed, _SPLIT_CODE[split], 10**6 + s])) for s in range(SUBJECTS[split])
    ]
    return [make_sequence(seed, split, i, frames, subjects[i % len(subjects)], walk_fraction) for i in range(count)]


def synthetic_data(
    seed: int = 0, train_sequences: int = 60, test_sequences: int = 16, frames: int = 400, walk_fraction: float = 0.5
) -> PoseData:
    """The synthetic :class:`PoseData`: ``train_sequences`` + ``test_sequences`` of ``frames`` frames.

    ``walk_fraction`` of the sequences are walks, the rest free movement (harder to lift: random
    joint angles leave more depth ambiguity than a gait does).
    """
    train = [s.pose_sequence() for s in generate("train", train_sequences, frames, seed, walk_fraction)]
    test = [s.pose_sequence() for s in generate("test", test_sequences, frames, seed, walk_fraction)]
    desc = {"source": "synthetic", "seed": seed, "train_sequences": train_sequences, "test_sequences": test_sequences,
            "frames_per_sequence": frames, "walk_fraction": walk_fraction, "fps": FPS}  # fmt: skip
    return PoseData("synthetic", train, test, desc)
