"""One case of the accuracy protocol: its presets and data, train (or load) and evaluate, its records.

``vptbench accuracy`` trains every requested backbone x variant under identical conditions: the
same data, step budget, batch size, seed (so the same initial weights of the shared layers and
the same batches), optimiser and schedule. (A preset may give seq2frame backbones more clips per
step than seq2seq ones, so both learn from as many frames per step.) The protocol:

- loss, optimiser and schedule: :mod:`bench.accuracy.train`;
- standardisation, fitted on the training split and saved with the checkpoint:
  :mod:`bench.accuracy.standardise`;
- evaluation on the test split, every test frame once, scored in mm: :mod:`bench.accuracy.evaluate`.

:func:`accuracy_case` runs it for one case; :class:`AccuracyJob` is the executors' job around it.
Every mpjpe record also carries ``mean_pose_mpjpe``: the MPJPE of always predicting the mean
training pose, the floor a model that learned nothing would reach.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.case import Case
from ..core.errors import UsageError
from ..core.progress import report_progress
from ..core.results import failure, record
from .checkpoints import checkpoint_model, checkpoint_path, load_checkpoint, save_checkpoint
from .data import Clips, PoseData
from .evaluate import METRICS, evaluation_clips, mean_pose_mpjpe, predict, score
from .standardise import Standardiser
from .train import train


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


def synthetic_keys(description: dict[str, Any]) -> None:
    keys = ("seed", "train_sequences", "test_sequences", "frames_per_sequence")
    if any(k not in description for k in keys):
        raise UsageError(f"checkpoint data description lacks {', '.join(k for k in keys if k not in description)}")


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


# --------------------------------------------------------------------------- the executors' job


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
