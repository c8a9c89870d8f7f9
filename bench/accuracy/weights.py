"""The weights and clips that pose error is measured with (bench.scenarios.pose_error).

Pose error compares a reduced-precision model's poses with the same weights' fp32 poses, in mm.
Random weights give meaningless millimetres: behind the :class:`Standardiser`, a model at its
initialisation predicts little more than the mean pose, so every error, int8's included, is
small because the outputs hardly move. The weights come from

- a trained checkpoint (``--checkpoint``: a vptbench checkpoint, or a release's file converted as
  ``vptbench accuracy`` does) where its backbone, T and size are the case's; ``weights`` is
  ``checkpoint:<file>``;
- otherwise a short synthetic training, :data:`POSE_STEPS` steps (the accuracy protocol's loss,
  optimiser and standardiser, from a zeroed regression head), ``weights`` ``synthetic:<steps>
  steps``: of the case's rectangle, whose weights load into the variants without parameters of
  their own (all variants share the blocks), or of the variant itself where it has some
  (:func:`trained_case`). It is trained once per (backbone, size, T, steps) and cached
  (:func:`cache_dir`), so every case of a run, each in its own process, loads the same file.

:func:`pose_clips` is the fixed set of clips: synthetic test clips (seed 0, subjects the training
never saw), inputs and ground truth in mm as the accuracy data has them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

import backbones

from ..core.case import Case
from ..core.errors import UsageError
from .data import Clips, PoseData
from .standardise import Standardiser

WEIGHTS_FORMAT = "vptbench-pose-weights/2"  # /2: lr 3e-4 from a zeroed head (a /1 file is trained again)
# Synthetic training for pose error: enough to put the outputs at the scale of real poses (the
# curve of pose error over steps is in docs/precision.md), little enough for canonical models on
# 2 CPU cores: one clip per step (T supervised frames) for seq2seq, 8 centre frames for seq2frame.
# lr 3e-4 from a zeroed head: at 1e-3, or from the released initialisation's head, canonical
# MixSTE ends its 30 steps predicting one pose for every frame (measured: docs/precision.md).
POSE_STEPS = 30
POSE_BATCH = {"seq2seq": 1, "seq2frame": 8}
POSE_LR = 3e-4
ZERO_HEAD = True  # start the regression head at zero (zero_output_layer)
# The data: 16 training and 4 test sequences of 420 frames (longer than the longest canonical
# T, 351), seed 0. The clips: 4 seq2seq clips (4 x T frames) or 32 centre frames, spread evenly.
DATA_SEED = 0
TRAIN_SEQUENCES, TEST_SEQUENCES = 16, 4
POSE_CLIPS = {"seq2seq": 4, "seq2frame": 32}


@dataclass
class PoseWeights:
    """The fp32 model (the case's variant, eval, on the case's device) with the weights pose error uses."""

    model: nn.Module
    norm: Standardiser | None
    label: str  # the record's ``weights``: "checkpoint:<file>" | "synthetic:<steps> steps"
    info: dict[str, Any]


def cache_dir(run_dir: str | Path | None) -> Path:
    """``run_dir/weights`` in a run; outside one (``vptbench profile``) the user's cache directory."""
    if run_dir is not None:
        return Path(run_dir) / "weights"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vptbench" / "weights"


def pose_data(frames: int) -> PoseData:
    """The synthetic data of pose error (module constants), long enough for ``frames``."""
    from .data.synthetic import synthetic_data

    return synthetic_data(DATA_SEED, TRAIN_SEQUENCES, TEST_SEQUENCES, max(420, frames + 1))


def pose_clips(data: PoseData, frames: int, pipeline: str, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (N, T, 17, 3) and root-relative ground truth in mm (N, T or 1, 17, 3) of the fixed clips.

    :data:`POSE_CLIPS` clips spread evenly over the test split, rounded up to whole batches of ``batch``.
    """
    seq2frame = pipeline == "seq2frame"
    clips = Clips(data.test, frames, stride=1 if seq2frame else frames, centred=seq2frame)
    n = -(-POSE_CLIPS[pipeline] // batch) * batch
    idx = np.round(np.linspace(0, len(clips) - 1, n)).astype(int)
    x, y = clips.get(idx, 3)
    if seq2frame:
        centre = (frames - 1) // 2
        y = y[:, centre : centre + 1]
    return x, y


def pose_weights(
    case: Case, *, checkpoint: str | None = None, steps: int = POSE_STEPS, cache: Path, data: PoseData | None = None
) -> PoseWeights:
    """The fp32 model of ``case`` (resolved) with pose error's weights (module docstring)."""
    if checkpoint:
        loaded = _from_checkpoint(case, checkpoint)
        if loaded is not None:
            return loaded
    return _synthetic(case, steps, cache, data)


# --------------------------------------------------------------------------- a checkpoint


def _from_checkpoint(case: Case, path: str) -> PoseWeights | None:
    """The checkpoint's weights in ``case``'s variant; None when it holds another backbone, T or size."""
    from .checkpoints import is_vptbench, load_checkpoint, official_model, overrides, read_file

    obj = read_file(path)
    if is_vptbench(obj):
        ckpt = load_checkpoint(path)
        stored = Case(**ckpt["case"])
        where = (stored.backbone, stored.frames, stored.size)
        state, kw = ckpt["state_dict"], ckpt.get("overrides")
        norm_d = ckpt.get("standardiser")
        norm = Standardiser.from_dict(norm_d) if isinstance(norm_d, dict) else None
        info: dict[str, Any] = {"steps": ckpt.get("steps"), "checkpoint_variant": stored.variant}
    else:
        from backbones.official import detect_backbone, unwrap_state_dict

        if detect_backbone(unwrap_state_dict(obj)) not in (None, case.backbone):
            return None
        model = official_model(path, backbone=case.backbone, loaded=obj)
        m: Any = model
        where, state, kw, norm = (m.backbone, m.frames, m.size), model.state_dict(), overrides(model), None
        info = {"official": dict(getattr(model, "official", {})), "checkpoint_variant": m.variant}
    if where != (case.backbone, case.frames, case.size):
        return None
    model = _variant_model(case, kw if isinstance(kw, dict) else None, path)
    load_shared(model, state, path, case)
    return PoseWeights(model.to(case.device).eval(), norm, f"checkpoint:{path}", info | {"file": str(path)})


def _variant_model(case: Case, kw: dict[str, Any] | None, where: str | Path) -> nn.Module:
    """``case``'s fp32 model, built with a checkpoint's configuration where it has one, seeded."""
    fp32 = dataclasses.replace(case, precision="fp32", dtype="float32", runtime="eager").resolve()
    torch.manual_seed(0)  # the variant's own parameters (tokens.*) start alike in every process
    if kw is None:
        return fp32.build()
    args: dict[str, Any] = dict(kw)
    if fp32.variant != "rectangle":
        args.update(schedule=backbones.parse_schedule(fp32.schedule), pruner=fp32.pruner,
                    recoverer=fp32.recoverer or None)  # fmt: skip
    try:
        return backbones.create(fp32.backbone, variant=fp32.variant, frames=fp32.frames, size=fp32.size, **args)
    except (TypeError, ValueError) as e:
        raise UsageError(f"{where}: its configuration does not build {fp32.case_id}: {e}") from None


def load_shared(model: nn.Module, state: Any, where: str | Path, case: Case) -> None:
    """Load ``state`` into ``model`` where the variants share parameters: only ``tokens.*`` may differ.

    A rectangle's weights in a pruned variant leave its pruning/recovering parameters as
    initialised; a pruned variant's in the rectangle drop theirs. Anything else that does not
    fit is a UsageError naming the keys.
    """
    if not isinstance(state, dict):
        raise UsageError(f"{where}: state_dict is not a mapping of parameter names to tensors")
    own = model.state_dict()
    shapes = [k for k, v in own.items() if k in state and tuple(getattr(state[k], "shape", ())) != tuple(v.shape)]
    result = model.load_state_dict({k: v for k, v in state.items() if k not in shapes}, strict=False)
    bad = [k for k in [*result.missing_keys, *result.unexpected_keys, *shapes] if not k.startswith("tokens.")]
    if bad:
        raise UsageError(f"{where}: its weights do not fit {case.case_id} ({len(bad)} keys, e.g. "
                         f"{', '.join(bad[:3])}); was it trained for another backbone or size?")  # fmt: skip


# --------------------------------------------------------------------------- a short synthetic training


def trained_case(case: Case) -> Case:
    """The case whose model the short training trains for ``case``: its rectangle, unless the
    variant has parameters of its own (``tokens.*``: TRA's queries, kept-token embeddings), which
    the rectangle's training leaves at their initialisation (TRA's zero queries recover the same
    token at every frame: poses that hardly move); then the variant itself."""
    base = dataclasses.replace(case, precision="fp32", dtype="float32", runtime="eager").resolve()
    rect = dataclasses.replace(base, variant="rectangle", schedule="", pruner="", recoverer="").resolve()
    if base.variant == "rectangle":
        return rect
    torch.manual_seed(0)
    own = any(k.startswith("tokens.") for k in base.build().state_dict())
    return base if own else rect


def pose_lr(size: str | None) -> float:
    """The learning rate of the short training: the tiny sizes take the accuracy smoke preset's 4e-3."""
    return 4e-3 if size == "tiny" else POSE_LR


def weights_file(case: Case, steps: int, cache: Path) -> Path:
    """The cached weights of ``case``'s :func:`trained_case` after ``steps`` steps: one file per
    (backbone, size, T) for the rectangle and the variants it serves, one per schedule for the others."""
    trained = trained_case(case)
    name = f"{trained.backbone}-{trained.size}-T{trained.frames}-{steps}steps"
    if trained.variant != "rectangle":
        name += f"-{trained.variant}-{trained.schedule}-{trained.pruner}+{trained.recoverer}"
    return cache / f"{re.sub(r'[^A-Za-z0-9_.+-]+', '_', name)}.pt"


def _synthetic(case: Case, steps: int, cache: Path, data: PoseData | None) -> PoseWeights:
    if steps < 0:
        raise UsageError(f"pose-error training steps must be >= 0, got {steps}")
    path = weights_file(case, steps, cache)
    with _locked(path):  # cases in parallel processes: one trains, the others wait and load
        saved = _read(path)
        cached = saved is not None
        if saved is None:
            saved = train_weights(trained_case(case), steps, data or pose_data(int(case.frames or 0)))
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            torch.save(saved, tmp)
            os.replace(tmp, path)
    model = _variant_model(case, None, path)
    load_shared(model, saved["state_dict"], path, case)
    norm = Standardiser.from_dict(saved["standardiser"])
    info = {k: saved.get(k) for k in ("steps", "batch", "lr", "train_loss", "train_s", "threads")}
    info.update(file=str(path), cached=cached, trained=saved["case"].get("variant"))
    return PoseWeights(model.to(case.device).eval(), norm, f"synthetic:{steps} steps", info)


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a file cut short by a kill: train again
        return None
    return saved if isinstance(saved, dict) and saved.get("format") == WEIGHTS_FORMAT else None


def train_weights(trained: Case, steps: int, data: PoseData) -> dict[str, Any]:
    """``steps`` steps of the accuracy protocol's training of ``trained`` (seed 0, a zeroed head), as a dict to save."""
    from .train import train

    torch.manual_seed(0)
    model = trained.build().to(trained.device)
    head = zero_output_layer(model) if ZERO_HEAD else ""
    norm = Standardiser.fit(data)
    pipeline = trained.pipeline
    batch, lr = POSE_BATCH[pipeline], pose_lr(trained.size)
    start = time.perf_counter()
    loss = float("nan")
    if steps:
        clips = Clips(data.train, int(trained.frames or 0), stride=1, centred=pipeline == "seq2frame")
        loss = train(model, clips, steps=steps, batch=batch, lr=lr, weight_decay=0.01, seed=DATA_SEED,
                     device=trained.device, norm=norm, desc=f"pose-error weights {trained.case_id}",
                     progress=False)  # fmt: skip
    return {"format": WEIGHTS_FORMAT, "case": dataclasses.asdict(trained),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "standardiser": norm.to_dict(), "steps": steps, "batch": batch, "lr": lr, "train_loss": loss,
            "train_s": round(time.perf_counter() - start, 2), "threads": torch.get_num_threads(),
            "data": data.description, "zero_head": head}  # fmt: skip


def zero_output_layer(model: nn.Module) -> str:
    """Zero the weights and bias of ``model``'s last linear or 1x1-conv layer (its regression head); its name.

    The poses then start at the standardiser's mean pose, and the first steps fit the head to the
    backbone's features, instead of first shrinking a random head's output to the mean pose and
    sitting there (canonical MixSTE, 30 steps at lr 3e-4: poses within 0.9 mm of one pose from its
    own initialisation, 51 mm of spread from a zeroed head).
    """
    name, layer = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv1d)][-1]
    with torch.no_grad():
        layer.weight.zero_()
        if layer.bias is not None:
            layer.bias.zero_()
    return name


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``.lock while the block runs (where the OS has flock)."""
    try:
        import fcntl
    except ImportError:  # no flock: parallel cases may each train (same seed, same result)
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
