"""Accuracy of backbones and their pruned variants: train (or load) and evaluate, record MPJPE.

``vptbench accuracy`` trains every requested backbone x variant under identical conditions: the
same data, step budget, batch size, seed (so the same initial weights of the shared layers and
the same batches), optimiser and schedule. (A preset may give seq2frame backbones more clips per
step than seq2seq ones, so both learn from as many frames per step.) The protocol:

- loss: MPJPE on root-relative 3D in camera coordinates, in *metres* (as VideoPose3D and HoT
  train), on every output frame (seq2seq) or on the centre frame (seq2frame);
- standardisation (:class:`Standardiser`, fitted on the training split and saved with the
  checkpoint): the 2D of every joint but the root is taken relative to the root's, then every
  (joint, channel) is shifted and scaled to zero mean and unit spread, and the model predicts the
  offset from the mean training pose in units of the targets' spread. All are fixed invertible
  maps, so the loss and the metrics are unchanged; they spare a short run the hundreds of steps
  that the released initialisations need to reach the scale of the data and to find the pose
  beneath the subject's place in the image (a token's 2D is small next to the bias of its
  embedding; metre-scale outputs come from weights initialised at std 0.02);
- optimiser: AdamW (weight decay 0.01, fused where torch has the kernel), linear warm-up over
  the first 5 % of the steps, then cosine decay to zero; gradients clipped to norm 1;
- evaluation on the test split, every test frame once: seq2seq models see consecutive clips of
  T frames (the last one aligned to the sequence end), seq2frame models one clip centred on every
  frame (edges padded by repetition); predictions get their root joint set to 0 (the usual
  protocol), then MPJPE, P-MPJPE and MPJVE in mm (:mod:`bench.accuracy.metrics`). No test-time flip.

Every mpjpe record also carries ``mean_pose_mpjpe``: the MPJPE of always predicting the mean
training pose, the floor a model that learned nothing would reach.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from ..core.case import Case
from ..core.errors import UsageError
from ..core.progress import report_progress
from ..core.results import failure, record
from . import metrics
from .checkpoints import (
    checkpoint_model,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from .data import Clips, PoseData

METRICS = ("mpjpe", "p_mpjpe", "mpjve")


@dataclass(frozen=True)
class Preset:
    """What a named accuracy run trains: sizes, length, budget, data volume and CPU threads."""

    name: str
    size: str | None  # None: each backbone's default size
    frames: int | None  # None: each backbone's canonical T
    steps: int
    batch: int  # clips per step
    lr: float
    weight_decay: float = 0.01
    # synthetic data volume (sequences of ``sequence_frames`` frames)
    train_sequences: int = 48
    test_sequences: int = 12
    sequence_frames: int = 300
    threads: int | None = None  # torch threads per training process; None: the executor's share
    # Clips per step of seq2frame models, which learn from one frame per clip (None: ``batch``).
    seq2frame_batch: int | None = None

    def batch_for(self, pipeline: str) -> int:
        return (self.seq2frame_batch or self.batch) if pipeline == "seq2frame" else self.batch


PRESETS = {
    # Every backbone x variant in under 7 minutes on 2 CPU cores, one case per core, each ending
    # at 0.44-0.52 of the mean-pose MPJPE (the README has the table). Tiny sizes;
    # T = 9, the shortest length every backbone takes (MHFormer's strided layers want a multiple
    # of 9), because these small models learn per optimiser step, not per frame. A step is 8 clips
    # of a seq2seq model (72 supervised frames) and 72 clips of a seq2frame one (72 centre frames):
    # at 8 clips MHFormer sees a ninth of the supervision per step and stops near 0.6.
    # The tiny sizes start their joint embeddings at unit spread and the inputs are taken
    # relative to the root (see Standardiser): both cut the plateau that joint-token models sit on
    # until they tell joints apart. One thread: tiny models gain nothing from more.
    "smoke": Preset("smoke", size="tiny", frames=9, steps=600, batch=8, seq2frame_batch=72, lr=4e-3,
                    train_sequences=48, test_sequences=12, sequence_frames=240, threads=1),  # fmt: skip
    # Canonical sizes and lengths, for a GPU. Sequences must exceed the longest canonical T (351).
    # MHFormer: 128 clips of 351 frames per step, its official training batch.
    "full": Preset("full", size=None, frames=None, steps=20000, batch=16, seq2frame_batch=128, lr=2e-4,
                   train_sequences=400, test_sequences=60, sequence_frames=600),  # fmt: skip
}


# --------------------------------------------------------------------------- data


def load_data(
    source: str, *, preset: Preset, seed: int, data_dir: str | None = None, keypoints: str = "cpn"
) -> PoseData:
    """The :class:`PoseData` of ``source`` ("synthetic" | "h36m") for ``preset``."""
    if source == "synthetic":
        from .data.synthetic import synthetic_data

        return synthetic_data(seed, preset.train_sequences, preset.test_sequences, preset.sequence_frames)
    if source == "h36m":
        if not data_dir:
            raise UsageError("--data h36m needs --data-dir DIR holding the VideoPose3D npz files")
        from .data.h36m import load_h36m

        return load_h36m(data_dir, keypoints=keypoints)
    raise UsageError(f"unknown data {source!r}; choose from synthetic, h36m")


def synthetic_from(description: dict[str, Any]) -> PoseData:
    """Rebuild the synthetic data a checkpoint was trained on, from its recorded description."""
    from .data.synthetic import synthetic_data

    synthetic_keys(description)
    return synthetic_data(int(description["seed"]), int(description["train_sequences"]),
                          int(description["test_sequences"]), int(description["frames_per_sequence"]))  # fmt: skip


# --------------------------------------------------------------------------- standardisation


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


def _run_model(model: nn.Module, x: torch.Tensor, norm: Standardiser | None) -> torch.Tensor:
    """The model's prediction in metres for raw inputs ``x``."""
    if norm is None:
        return model(x)
    return norm.outputs(model(norm.inputs(x)))


# --------------------------------------------------------------------------- train / evaluate


def mpjpe_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Differentiable MPJPE: mean Euclidean joint distance, in the unit of the inputs."""
    return (pred - target).norm(dim=-1).mean()


def _lr_lambda(steps: int) -> Any:
    warm = max(1, steps // 20)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / max(1, steps - warm))))

    return f


def adamw(model: nn.Module, *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW, fused where this torch and device have the kernel (CPU from torch 2.4 on).

    The fused step is the same update in one kernel per step instead of several per parameter
    tensor: tiny MotionAGFormer (969 tensors) trains 15 % faster on one CPU thread.
    """
    params = list(model.parameters())
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except RuntimeError:  # torch < 2.4 on CPU: no fused kernel
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def train(
    model: nn.Module,
    clips: Clips,
    *,
    steps: int,
    batch: int,
    lr: float,
    weight_decay: float,
    seed: int,
    device: str,
    norm: Standardiser | None = None,
    desc: str = "",
    progress: bool = True,
) -> float:
    """Train ``model`` for ``steps`` batches of random training clips; returns the last loss (mm).

    Batches are drawn by a generator seeded with ``seed`` alone, so every variant trained with
    the same seed sees the same clips in the same order. ``norm`` wraps the model (see
    :class:`Standardiser`); the loss is in metres either way.
    """
    seq2frame = model.pipeline == "seq2frame"
    centre = (clips.frames - 1) // 2
    rng = np.random.default_rng(seed)
    opt = adamw(model, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(steps))
    model.train()
    running = float("nan")
    channels = int(model.in_channels)  # type: ignore[arg-type]
    bar = tqdm(range(steps), desc=desc, file=sys.stderr, disable=not progress, mininterval=0.5, leave=True)
    for step in bar:
        x, y = clips.get(rng.integers(0, len(clips), batch), channels)
        xt = torch.from_numpy(x).to(device)
        yt = torch.from_numpy(y).to(device) / 1000.0  # mm -> metres
        if seq2frame:
            yt = yt[:, centre : centre + 1]
        loss = mpjpe_loss(_run_model(model, xt, norm), yt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        value = float(loss.detach()) * 1000.0
        if not math.isfinite(value):
            raise FloatingPointError(f"training loss became {value} at step {step}")
        running = value if step == 0 else 0.95 * running + 0.05 * value
        if step % 10 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{running:.1f}mm", refresh=False)
            report_progress(f"{step + 1}/{steps} loss {running:.1f}mm")
    return running


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
        out = _run_model(model, torch.from_numpy(x).to(device), norm).float().cpu().numpy() * 1000.0  # m -> mm
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


# --------------------------------------------------------------------------- one case


def accuracy_case(
    case: Case,
    *,
    data: PoseData,
    steps: int,
    batch: int,
    seed: int,
    run_dir: str | Path,
    run_id: str,
    checkpoint: str | Path | None = None,
    lr: float = 2e-3,
    weight_decay: float = 0.01,
    standardise: bool = True,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train ``case`` for ``steps`` (or load ``checkpoint``), evaluate it, return its records.

    The model is built after seeding torch with ``seed``, so the variants of one backbone start
    from the same weights wherever their parameters coincide. ``standardise`` wraps it in the
    :class:`Standardiser` of the training split. The trained model is saved under
    ``run_dir/checkpoints`` with its case and standardiser. Failures (not user mistakes) come
    back as records with status error/oom, one per metric, so a run goes on.
    """
    case = case.resolve()
    extra: dict[str, Any] = {"steps": steps, "seed": seed}
    try:
        torch.manual_seed(seed)
        ckpt = load_checkpoint(checkpoint) if checkpoint is not None else None
        # A checkpoint's model: its case, with the configuration it stores (converted official files).
        model = (checkpoint_model(ckpt, case, checkpoint) if ckpt and checkpoint else case.build()).to(case.device)
        t0 = time.perf_counter()
        if ckpt is not None:
            extra.update(steps=int(ckpt.get("steps", 0)), seed=int(ckpt.get("seed", seed)),
                         checkpoint=str(checkpoint))  # fmt: skip
            loss = ckpt.get("train_loss")
            # A checkpoint is evaluated as it was trained: with its standardiser, or raw without one.
            stored = ckpt.get("standardiser")
            norm = Standardiser.from_dict(stored) if isinstance(stored, dict) else None
        else:
            if steps < 1:
                raise UsageError(f"--steps must be >= 1 to train, got {steps}")
            norm = Standardiser.fit(data) if standardise else None
            clips = Clips(data.train, case.frames or 0, stride=1, centred=case.pipeline == "seq2frame")
            loss = train(model, clips, steps=steps, batch=batch, lr=lr, weight_decay=weight_decay, seed=seed,
                         device=case.device, norm=norm, desc=case.case_id, progress=progress)  # fmt: skip
            path = checkpoint_path(run_dir, case)
            save_checkpoint(path, model, case, steps=steps, seed=seed, batch=batch, lr=lr,
                            weight_decay=weight_decay, train_loss=loss, data=data.description,
                            standardiser=norm.to_dict() if norm else None)  # fmt: skip
            extra["checkpoint"] = str(path)
        train_s = time.perf_counter() - t0
        report_progress("evaluating")
        scores = score(predict(model, evaluation_clips(data, case.frames or 0, case.pipeline),
                               batch=max(batch, 64), device=case.device, norm=norm), data)  # fmt: skip
        extra.update(train_loss=loss, train_s=round(train_s, 2), eval_s=round(time.perf_counter() - t0 - train_s, 2),
                     threads=torch.get_num_threads(), standardised=norm is not None)  # fmt: skip
    except (UsageError, KeyboardInterrupt):
        raise
    except Exception as e:
        status = "oom" if isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e) else "error"
        return [failure(run_id, case, m, e, status=status) | {"steps": extra["steps"], "seed": seed} for m in METRICS]
    baseline: dict[str, Any] = {"mean_pose_mpjpe": mean_pose_mpjpe(data)}
    return [
        record(run_id, case, m, scores[m], method=data.method, **extra, **(baseline if m == "mpjpe" else {}))
        for m in METRICS
    ]


# --------------------------------------------------------------------------- command


@dataclass(frozen=True)
class AccuracyJob:
    """The executors' job for ``vptbench accuracy`` (a :class:`bench.run.jobs.Job`): :func:`accuracy_case`.

    ``data`` loads the dataset in the process that trains (e.g. ``functools.partial(load_data,
    "synthetic", preset=..., seed=0)``), so that a job carries a recipe, not the arrays; it is
    called once per process. ``threads``: the training process's torch threads, where a preset
    wants fewer than the executor's share (tiny models train fastest on one). ``progress``: the
    per-step bar with the running loss (inline runs; a subprocess reports to the executor's bar).
    """

    data: Callable[[], PoseData]
    steps: int
    seed: int = 0
    checkpoint: str | None = None
    lr: float = 2e-3
    weight_decay: float = 0.01
    threads: int | None = None
    progress: bool = False

    def records(self, case: Case, run_id: str, run_dir: Path) -> list[dict[str, Any]]:
        if self.threads:
            torch.set_num_threads(self.threads)
        return accuracy_case(
            case, data=load_once(self.data), steps=self.steps, batch=case.batch, seed=self.seed, run_dir=run_dir,
            run_id=run_id, checkpoint=self.checkpoint, lr=self.lr, weight_decay=self.weight_decay,
            progress=self.progress,
        )  # fmt: skip

    def expected(self, case: Case) -> list[str]:
        return list(METRICS)


_DATA: dict[Any, Any] = {}  # loader -> its data; an inline run loads the dataset once, not per case


def load_once(loader: Callable[[], PoseData]) -> PoseData:
    if loader not in _DATA:
        _DATA[loader] = loader()
    return _DATA[loader]


def synthetic_keys(description: dict[str, Any]) -> None:
    keys = ("seed", "train_sequences", "test_sequences", "frames_per_sequence")
    if any(k not in description for k in keys):
        raise UsageError(f"checkpoint data description lacks {', '.join(k for k in keys if k not in description)}")
