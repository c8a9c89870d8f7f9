"""Token pruning and recovering: the one module every backbone calls between its blocks.

Vocabulary (SPEC section 4):

- a *schedule* is a sequence of stages ``(block_index, keep)`` or ``(block_index, keep, pruner)``:
  before block ``block_index`` the tokens are cut down to ``keep``. Blocks strictly increase, keeps
  strictly decrease; ``keep`` is a count or a ratio of T in (0, 1), so one schedule scales with the
  sequence length. A stage that names no pruner uses the model's ``pruner``. As text:
  ``"2:81:tpc,5:27:tps"`` (``BLOCK:KEEP[:PRUNER],...``).
- a *pruner* picks (or merges) the tokens that survive a stage; a *recoverer* brings the kept
  tokens back to all T frames at the end. Both are registries (:mod:`backbones.strategies`):
  ``tps``, ``tpc``, ``tpa``, ``tpmo``, ``tome`` and ``tri``, ``tra`` are built in, and
  ``register_pruner`` / ``register_recoverer`` add more.

Every kept token carries its absolute frame position (B, K) composed across stages, so recovery
knows where each token sits in time, and seq2frame models can always find the centre frame.

A backbone uses :class:`TokenHourglass` like this::

    pos = self.tokens.positions(x)                     # (B, T) absolute frame indices; starts a forward
    for i, block in enumerate(self.blocks):
        x, pos = self.tokens.prune(i, x, pos)          # no-op where no stage starts
        x = block(x)
    x = self.tokens.recover(x, pos)                    # (B, T, ...) again; no-op for the rectangle
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn as nn

from .strategies import (
    Merged,
    PruneInput,
    gather_tokens,
    pruner_spec,
    recoverer_spec,
    top_sorted,
)

# A stage is (block_index, keep) or (block_index, keep, pruner); keep is a count or a ratio of T.
Stage = tuple[int, int | float] | tuple[int, int | float, str]


# --------------------------------------------------------------------------- schedules


def parse_schedule(text: str) -> tuple[Stage, ...]:
    """Parse ``"BLOCK:KEEP[:PRUNER],..."`` (KEEP a count or a ratio of T in (0, 1)); ``""`` is no schedule.

    The pruner name is not looked up here (a plugin may register it later); models and cases do.
    """
    stages: list[Stage] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        fields = [f.strip() for f in part.split(":")]
        if len(fields) not in (2, 3):
            raise ValueError(f"schedule stage {part!r} is not BLOCK:KEEP[:PRUNER] (e.g. 3:81, 3:0.33 or 3:81:tpc)")
        try:
            b = int(fields[0])
            k: int | float = int(fields[1]) if fields[1].isdigit() else float(fields[1])
        except ValueError:
            raise ValueError(
                f"schedule stage {part!r}: BLOCK must be an integer and KEEP a count or a ratio in (0, 1)"
            ) from None
        if b < 0:
            raise ValueError(f"schedule stage {part!r}: BLOCK must be >= 0 (blocks count from 0)")
        if len(fields) == 3:
            if not fields[2].isidentifier():
                raise ValueError(f"schedule stage {part!r}: PRUNER must be a pruner's name (e.g. tpc)")
            stages.append((b, k, fields[2]))
        else:
            stages.append((b, k))
    return tuple(stages)


def format_schedule(stages: Iterable[Sequence[Any]]) -> str:
    """The inverse of :func:`parse_schedule`: ``[(3, 81), (5, 27, "tome")] -> "3:81,5:27:tome"``."""
    parts = []
    for block, keep, *rest in stages:
        text = f"{block}:{keep:g}" if isinstance(keep, float) else f"{block}:{keep}"
        parts.append(f"{text}:{rest[0]}" if rest and rest[0] else text)
    return ",".join(parts)


def resolve_schedule(schedule: Sequence[Sequence[Any]], frames: int, depth: int) -> list[Stage]:
    """Validate a schedule and turn ratios into token counts for ``frames`` frames.

    Raises ValueError naming the problem: blocks not strictly increasing or outside
    ``0..depth-1``, a keep below 1, or a keep not below the tokens entering its stage. A stage's
    pruner, if it names one, is kept as it is.
    """
    resolved: list[Stage] = []
    tokens, last_block = frames, -1
    for stage in schedule:
        if len(stage) not in (2, 3):
            raise ValueError(f"schedule stage {tuple(stage)!r} is not (block, keep) or (block, keep, pruner)")
        block, keep, *rest = stage
        if isinstance(keep, bool) or not isinstance(block, int):
            raise ValueError(f"schedule stage ({block!r}, {keep!r}): block must be an integer")
        if not 0 <= block < depth:
            raise ValueError(f"schedule block {block} is outside the depth {depth} (blocks 0..{depth - 1})")
        if block <= last_block:
            raise ValueError(
                f"schedule blocks must be strictly increasing, got block {block} after block {last_block}"
            )
        if isinstance(keep, float):  # written with a point: a ratio, even 1.0 (a count has no point)
            if not 0.0 < keep < 1.0:
                raise ValueError(f"schedule keep {keep:g} at block {block} has a decimal point, so it is a ratio of T "
                                 f"and must lie in (0, 1); a token count is written without one (e.g. {block}:81)")
            count = max(1, round(keep * frames))
        else:
            count = int(keep)
        if count < 1:
            raise ValueError(f"schedule keep must be >= 1 token, got {keep} at block {block}")
        if count >= tokens:
            raise ValueError(
                f"schedule keep {count} at block {block} must be below the {tokens} tokens entering that stage"
            )
        resolved.append((block, count, rest[0]) if rest and rest[0] else (block, count))
        tokens, last_block = count, block
    return resolved


def stage_pruners(stages: Sequence[Sequence[Any]], pruner: str | None) -> tuple[str | None, list[Stage]]:
    """The schedule's main pruner and its stages, each naming a pruner only where it differs.

    A stage without a pruner uses ``pruner``; when every stage names one, the first stage's is
    the main pruner. So ``2:9:tpc,5:3:tome`` is pruner ``tpc`` with ``2:9,5:3:tome``, and one
    experiment has one spelling (in case ids too).
    """
    named = [s[2] if len(s) > 2 and s[2] else None for s in stages]
    if named and all(named):
        pruner = named[0]
    canonical: list[Stage] = [
        (s[0], s[1]) if p in (None, pruner) else (s[0], s[1], p) for s, p in zip(stages, named, strict=True)
    ]
    return pruner, canonical


def token_profile(stages: Sequence[Sequence[Any]], frames: int, depth: int) -> list[int]:
    """Tokens seen by each block, e.g. ``[243, 243, 243, 81, 81, 81, 81, 81]``."""
    keep_at = {s[0]: s[1] for s in stages}
    profile, tokens = [], frames
    for i in range(depth):
        tokens = keep_at.get(i, tokens)
        profile.append(tokens)
    return profile


def ensure_centre(idx: torch.Tensor, pos: torch.Tensor, centre: int, score: torch.Tensor | None) -> torch.Tensor:
    """Make sure the token at absolute frame ``centre`` is among ``idx`` (seq2frame pipelines).

    Where it is missing, it replaces the selected token closest to it in time (no scores) or
    the lowest-scored selected token (score given), keeping the indices sorted.
    """
    local = (pos == centre).float().argmax(dim=1, keepdim=True)  # (B, 1) local index of the centre
    present = (idx == local).any(dim=1, keepdim=True)
    # No early return when every sample has it: a data-dependent branch that exporters and
    # torch.compile cannot follow. Where present, the result is ``idx`` (already sorted) anyway.
    if score is None:
        victim = (idx - local).abs().argmin(dim=1, keepdim=True)
    else:
        victim = torch.gather(score, 1, idx).argmin(dim=1, keepdim=True)
    replaced = idx.scatter(1, victim, local)
    return torch.where(present, idx, replaced).sort(dim=1).values


# --------------------------------------------------------------------------- the module


class TokenHourglass(nn.Module):
    """Prunes tokens at the scheduled blocks and recovers them at the end.

    Holds the resolved schedule, the optional learnable embeddings of the kept tokens (HoT adds
    one per stage) and the recoverer (under its name: ``tokens.tra.*``); all of them live under
    this module, so a rectangle checkpoint loads into a pruned variant missing only these.
    ``pruner`` is used by the stages that name none. Between :meth:`positions` and the last
    :meth:`prune` of a forward it remembers how many frames each token stands for (merging).
    """

    def __init__(
        self,
        *,
        frames: int,
        depth: int,
        dim: int,
        schedule: Sequence[Sequence[Any]] = (),
        pruner: str | None = None,
        recoverer: str | None = None,
        pipeline: str = "seq2seq",
        embed_kept: bool = False,
        heads: int = 8,
        qkv_bias: bool = True,
    ):
        super().__init__()
        self.frames, self.depth, self.pipeline = frames, depth, pipeline
        resolved = resolve_schedule(schedule, frames, depth)
        self.stages: list[tuple[int, int]] = [(s[0], int(s[1])) for s in resolved]
        main, self.canonical_stages = stage_pruners(resolved, pruner)
        self.stage_pruner: dict[int, str] = {}
        for block, _keep, *named in self.canonical_stages:
            name = named[0] if named else main
            if name is None:
                raise ValueError(f"schedule stage at block {block} names no pruner and no pruner was given")
            if pruner_spec(name).attention and block == 0:  # pruner_spec: ValueError if unknown
                raise ValueError(f"pruner {name!r} needs a block before its prune point (block >= 1), got block 0")
            self.stage_pruner[block] = name
        self.pruner = main if self.stages else None
        self.recoverer = recoverer if self.stages and pipeline == "seq2seq" else None
        if self.recoverer is not None:
            build = recoverer_spec(self.recoverer).build
            if hasattr(self, self.recoverer):
                raise ValueError(f"recoverer name {self.recoverer!r} clashes with an attribute of TokenHourglass")
            self.add_module(self.recoverer, build(frames=frames, dim=dim, heads=heads, qkv_bias=qkv_bias))
        self.centre = (frames - 1) // 2
        self.keep_at = dict(self.stages)
        self.embeds = nn.ParameterDict()
        if embed_kept:
            for block, keep in self.stages:
                self.embeds[str(block)] = nn.Parameter(torch.zeros(1, keep, dim))
                nn.init.trunc_normal_(self.embeds[str(block)], std=0.02)
        self._size: torch.Tensor | None = None  # (B, K) frames per token in the current forward

    @property
    def profile(self) -> list[int]:
        return token_profile(self.stages, self.frames, self.depth)

    @property
    def schedule_text(self) -> str:
        """The schedule as ``BLOCK:KEEP[:PRUNER],...``, naming only pruners other than :attr:`pruner`."""
        return format_schedule(self.canonical_stages)

    def wants_attention(self, block: int) -> bool:
        """Whether block ``block``'s temporal attention must report attention received (e.g. tpa)."""
        name = self.stage_pruner.get(block + 1)
        return name is not None and pruner_spec(name).attention

    def positions(self, x: torch.Tensor) -> torch.Tensor:
        """Absolute frame index of every token of a full-length input x (B, T, ...) -> (B, T).

        Call it once at the start of every forward: it also forgets the token sizes of the last one.
        """
        self._size = None
        return torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)

    def embed(self, block: int, x: torch.Tensor) -> torch.Tensor:
        """Add the stage's learnable kept-token embedding (1, K, C), broadcast over joints."""
        key = str(block)
        if key not in self.embeds:
            return x
        e = self.embeds[key]
        return x + (e.unsqueeze(2) if x.dim() == 4 else e)

    def prune(
        self, block: int, x: torch.Tensor, pos: torch.Tensor, received: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens (B, keep, ...) and positions (B, keep) after the stage at ``block``; as given if none.

        ``x`` is the feature the pruner judges, (B, T, J, C) or (B, T, C); ``received`` is the
        attention each token received in the preceding temporal block (B, T), for pruners that
        ask for it (:meth:`wants_attention`).
        """
        keep = self.keep_at.get(block)
        if keep is None:
            return x, pos
        name = self.stage_pruner[block]
        spec = pruner_spec(name)
        if spec.attention and received is None:
            raise RuntimeError(f"pruner {name!r} at block {block} got no attention from the block before")
        size = self._size
        if size is None or size.shape != pos.shape:
            size = torch.ones_like(pos, dtype=torch.float32)
        centre = self.centre if self.pipeline == "seq2frame" else None
        out = spec.fn(PruneInput(x, pos, keep, size, received if spec.attention else None, centre, block))
        if isinstance(out, Merged):
            x, pos, size = self._merged(name, block, out, x, keep)
        else:
            idx = self._indices(name, block, out, pos, keep)
            x, pos, size = gather_tokens(x, idx), gather_tokens(pos, idx), gather_tokens(size, idx)
        self._size = size
        return self.embed(block, x), pos

    def _indices(self, name: str, block: int, out: Any, pos: torch.Tensor, keep: int) -> torch.Tensor:
        """Sorted local indices (B, keep) from a pruner's scores (B, T) or indices (B, keep)."""
        b, t = pos.shape
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        if shape == (b, t) and out.is_floating_point():
            score: torch.Tensor | None = (
                out.masked_fill(pos == self.centre, float("inf")) if self.pipeline == "seq2frame" else out
            )
            idx = top_sorted(out, keep) if score is None else top_sorted(score, keep)
        elif shape == (b, keep) and not out.is_floating_point() and not out.is_complex():
            score, idx = None, out.long().sort(dim=1).values
        else:
            got = f"{out.dtype} tensor of shape {shape}" if shape is not None else type(out).__name__
            raise RuntimeError(
                f"pruner {name!r} at block {block} returned a {got}; expected float scores (B, T) = "
                f"({b}, {t}), integer indices (B, keep) = ({b}, {keep}) or backbones.Merged"
            )
        if self.pipeline == "seq2frame":
            idx = ensure_centre(idx, pos, self.centre, score)
        return idx

    def _merged(
        self, name: str, block: int, out: Merged, x: torch.Tensor, keep: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A merging pruner's tokens, checked and sorted by frame; sizes default to one each."""
        b = x.shape[0]
        want = (b, keep, *x.shape[2:])
        if tuple(out.x.shape) != want or tuple(out.pos.shape) != (b, keep):
            raise RuntimeError(
                f"pruner {name!r} at block {block} merged into tokens {tuple(out.x.shape)} at positions "
                f"{tuple(out.pos.shape)}; expected {want} and {(b, keep)}"
            )
        size = out.size if out.size is not None else torch.ones_like(out.pos, dtype=torch.float32)
        order = out.pos.argsort(dim=1)
        new_x, new_pos, size = gather_tokens(out.x, order), gather_tokens(out.pos, order), gather_tokens(size, order)
        if self.pipeline == "seq2frame" and not bool((new_pos == self.centre).any(dim=1).all()):
            raise RuntimeError(f"pruner {name!r} at block {block} lost the centre frame {self.centre} (seq2frame)")
        return new_x, new_pos, size

    def recover(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Back to all T frames (B, T, ...) from kept tokens (B, K, ...); identity if nothing was pruned."""
        if x.shape[1] == self.frames or self.recoverer is None:
            return x
        module: nn.Module = getattr(self, self.recoverer)
        return module(x, pos)

    def centre_token(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The token of the centre frame, x (B, K, ...) -> (B, 1, ...), for seq2frame outputs."""
        local = (pos == self.centre).float().argmax(dim=1, keepdim=True)
        return gather_tokens(x, local)
