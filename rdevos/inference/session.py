"""Video session: masks on any frame, lazy frames, forward/backward/both propagation on the streaming engine."""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from rdevos.config import InferenceConfig
from rdevos.errors import InputError
from rdevos.inference.engine import InferenceEngine
from rdevos.inference.pipelining import encode_ahead
from rdevos.inference.plan import Direction, PropagationPlan, plan_propagation
from rdevos.inference.runs import RunState
from rdevos.io.frames import FrameSource, open_frames
from rdevos.io.masks import validate_mask
from rdevos.model.network import RDEVOS

if TYPE_CHECKING:
    from rdevos.prompt import PromptPredictor

logger = logging.getLogger(__name__)

__all__ = ["VideoSession", "SegmentedFrame", "Direction"]



@dataclass
class SegmentedFrame:
    """One propagated frame."""

    index: int  #: frame index in the video
    name: str  #: frame name (file stem or zero-padded index)
    labels: np.ndarray  #: (H, W) uint8 label map with the user's object ids
    prob: torch.Tensor | None  #: (K+1, H, W) float32 probabilities if requested, channel i+1 = object_ids[i]
    object_ids: list[int]  #: ids of the channels of ``prob``
    direction: Direction  #: pass that produced it
    fused: bool = False  #: a frame reached by both passes of ``both``: labels fused by the nearest-annotation rule
    final: bool = True  #: the last result for this frame (``False``: a fused result follows in the backward pass)


@dataclass
class _Annotation:
    labels: np.ndarray  # (H, W) int32 user ids
    ids: list[int] = field(default_factory=list)


class VideoSession:
    """Segment one video with masks given on any frames.

    Frames are read lazily from a :class:`~rdevos.io.frames.FrameSource` (a folder, a video file or stream, or a
    list of images); :meth:`propagate` is a generator and keeps only the engine's constant-size memory.

    Args:
        model: a loaded :class:`RDEVOS`.
        frames: folder / video path / URL / list of frames / FrameSource.
        config: inference settings (default: ModelScope's).
        device: ``None``/``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``.
    """

    def __init__(self, model: RDEVOS, frames: FrameSource | str | os.PathLike[str] | list[object],
                 config: InferenceConfig | None = None, *, device: torch.device | str | None = None) -> None:
        self.model = model
        self.config = config or InferenceConfig()
        self.device = device
        self.source = frames if isinstance(frames, FrameSource) else open_frames(frames)
        self._ann: dict[int, _Annotation] = {}
        self._removed: set[int] = set()
        self._predictor: PromptPredictor | None = None

    # ----------------------------------------------------------------- annotations
    @property
    def num_frames(self) -> int | None:
        return self.source.num_frames

    @property
    def annotated_frames(self) -> list[int]:
        return sorted(self._ann)

    @property
    def object_ids(self) -> list[int]:
        """All object ids given so far, in order of first annotation."""
        ids: list[int] = []
        for f in self.annotated_frames:
            ids += [i for i in self._ann[f].ids if i not in ids and i not in self._removed]
        return ids

    def add_mask(self, frame_idx: int, mask: object, obj_ids: Iterable[int] | None = None, *,
                 absent: Iterable[int] = ()) -> None:
        """Annotate objects on a frame.

        Args:
            frame_idx: frame index (0-based).
            mask: (H, W) label map with object ids (PIL image or path in any mode :func:`~rdevos.io.masks.read_mask`
                reads, colour masks included, or an array), or a binary mask (values 0/1 or bool) together with
                exactly one id in ``obj_ids``. Checked and fitted to the frame size by
                :func:`~rdevos.io.masks.validate_mask`, the rule of ``rdevos segment --mask``: a mask a few pixels
                off the frame size (same aspect ratio) is resized, with a warning.
            obj_ids: the objects this mask annotates (default: all its non-zero labels); each must be a label of
                the mask, except that a binary mask (0/1, bool, black/white) with one id is that object. Several
                calls on the same frame merge; a later call overrides the pixels of the objects it names.
            absent: objects known *not* to be on this frame (they left the view, or an editor removed them there):
                annotated here with an empty mask. None of them may be a label of the mask.

        Raises:
            InputError: a frame outside the video, a mask that does not fit the frames, no object (and none
                ``absent``), an id in ``obj_ids`` that is not a label of the mask, or an ``absent`` id the mask holds.
        """
        n = self.source.num_frames
        if frame_idx < 0 or (n is not None and frame_idx >= n):
            raise InputError(f"frame index {frame_idx} is outside the video (0..{(n or 1) - 1})")
        lm = validate_mask(mask, self.source.size, allow_empty=True, name=f"mask for frame {frame_idx}")
        labels = lm.labels.astype(np.int32)
        present = lm.object_ids
        ids = None if obj_ids is None else [int(i) for i in obj_ids]
        gone = list(dict.fromkeys(int(i) for i in absent))
        if ids is not None and len(ids) == 1 and present == [1]:
            labels = labels * ids[0]  # a binary mask of one object
            present = ids
        if ids is None:
            ids = present
        if not ids and not gone:
            raise InputError(f"the mask for frame {frame_idx} has no object")
        missing = [i for i in ids if i not in present]
        if missing:
            raise InputError(
                f"obj_ids {missing} are not labels of the mask for frame {frame_idx} (its labels: {present}); pass "
                "the ids the mask holds, or a binary (0/1) mask with one id (objects not on the frame: absent=)")
        held = [i for i in gone if i in present or i in ids]
        if held:
            raise InputError(f"absent {held}: the mask for frame {frame_idx} holds these objects")
        known = set(self.object_ids)
        for i in ids:
            if i not in known and self._ann and frame_idx > min(self._ann):
                logger.info("object %d first appears on frame %d: it gets its own memory from there", i, frame_idx)
            self._removed.discard(i)
        for i in gone:
            self._removed.discard(i)
        named = ids + gone
        ann = self._ann.get(frame_idx)
        if ann is None:
            self._ann[frame_idx] = _Annotation(np.where(np.isin(labels, ids), labels, 0), named)
        else:
            for i in named:
                ann.labels[ann.labels == i] = 0
            sel = np.isin(labels, ids)
            ann.labels[sel] = labels[sel]
            ann.ids += [i for i in named if i not in ann.ids]

    def add_prompt(self, frame_idx: int, *, box: Sequence[float] | None = None,
                   points: Sequence[Sequence[float | bool]] = (), obj_id: int | None = None,
                   predictor: PromptPredictor | None = None) -> np.ndarray:
        """Annotate one object from a box and/or clicks instead of a painted mask.

        The prompt model (:mod:`rdevos.prompt`, the embedded default unless ``predictor`` is given) turns the prompt
        into a mask, which is added as with :meth:`add_mask`. Clicks without a box on an object already annotated on
        this frame refine its mask there.

        Args:
            frame_idx: frame index (0-based).
            box: ``(x0, y0, x1, y1)`` in pixels of the original frame (x1, y1 exclusive).
            points: clicks ``(x, y)`` or ``(x, y, positive)``; x/y are the pixel's column/row.
            obj_id: the object's id (default: a new id, one above the largest so far).
        Returns:
            the object's mask on that frame, (H, W) bool.
        """
        n = self.source.num_frames
        if frame_idx < 0 or (n is not None and frame_idx >= n):
            raise InputError(f"frame index {frame_idx} is outside the video (0..{(n or 1) - 1})")
        if predictor is None:
            if self._predictor is None:
                from rdevos.prompt import load_prompt_predictor  # noqa: PLC0415 - optional feature

                self._predictor = load_prompt_predictor(device=self.device)
            predictor = self._predictor
        if obj_id is None:
            obj_id = max(self.object_ids, default=0) + 1
        ann = self._ann.get(frame_idx)
        prev = ann.labels == obj_id if ann is not None and box is None and obj_id in ann.ids else None
        image = self.source.get(frame_idx).image
        mask = predictor.predict(image, box, points, prev)
        if not mask.any():
            raise InputError(f"the prompt on frame {frame_idx} gave an empty mask for object {obj_id}; "
                             "draw the box around the object or click on it")
        self.add_mask(frame_idx, mask, [obj_id])
        return mask

    def remove_object(self, obj_id: int) -> None:
        """Stop tracking an object in later :meth:`propagate` calls."""
        if obj_id not in self.object_ids:
            raise KeyError(f"unknown object id {obj_id}; known: {self.object_ids}")
        self._removed.add(int(obj_id))

    def clear(self) -> None:
        """Drop all annotations."""
        self._ann.clear()
        self._removed.clear()

    # ----------------------------------------------------------------- propagation
    def _mask_for(self, idx: int) -> tuple[np.ndarray, list[int]] | None:
        ann = self._ann.get(idx)
        if ann is None:
            return None
        ids = [i for i in ann.ids if i not in self._removed]
        if not ids:
            return None
        return np.where(np.isin(ann.labels, ids), ann.labels, 0), ids

    def annotations(self) -> dict[int, np.ndarray]:
        """Frame index -> (H, W) int32 label map of the objects given there (removed objects left out)."""
        out = {}
        for f in self.annotated_frames:
            m = self._mask_for(f)
            if m is not None:
                out[f] = m[0]
        return out

    def plan(self, direction: Direction | str = Direction.FORWARD, start: int | None = None) -> PropagationPlan:
        """The frames :meth:`propagate` visits and yields with these annotations (see :mod:`rdevos.inference.plan`).

        Raises:
            InputError: no mask was added, or nothing to propagate from ``start`` in that direction.
        """
        ann = {f: m[1] for f in self.annotated_frames if (m := self._mask_for(f)) is not None}
        if not ann:
            raise InputError("no mask has been added: call add_mask(frame_idx, mask) first")
        try:
            return plan_propagation(ann, self.source.num_frames, direction, start)
        except ValueError as e:
            raise InputError(str(e)) from None

    def _frames(self, indices: range) -> Iterator[tuple[int, str, np.ndarray]]:
        if indices.step > 0:
            for fr in self.source:
                if fr.index >= indices.stop:
                    break
                if fr.index >= indices.start:
                    yield fr.index, fr.name, fr.image
        else:
            for i in indices:
                fr = self.source.get(i)
                yield fr.index, fr.name, fr.image

    def propagate(self, *, direction: Direction | str = Direction.FORWARD, start: int | None = None,
                  return_probs: bool = False, checkpoint: Callable[[RunState], None] | None = None,
                  resume: RunState | tuple[Direction | str, int, dict] | None = None,
                  earlier: Callable[[int], np.ndarray | None] | None = None) -> Iterator[SegmentedFrame]:
        """Propagate the annotations through the video, one frame at a time.

        The passes follow :func:`~rdevos.inference.plan.plan_propagation`: ``forward`` from the first annotated
        frame to the end; ``backward`` from the last annotated frame to frame 0; ``both``: every frame gets a
        result, each object is carried forward from every frame it is given on and backward from the frame it is
        first given on; frames reached by both passes are fused by the nearest-annotation rule and yielded twice
        (the forward result, then the fused one, with ``final=True``). Annotations inside a pass are applied when
        it reaches them.

        Args:
            direction: ``forward``, ``backward`` or ``both``.
            start: begin the passes at this frame instead of at the annotations.
            return_probs: also return the (K+1, H, W) probabilities (``None`` on fused frames).
            checkpoint: called with a :class:`~rdevos.inference.runs.RunState` after each frame that updated the
                memory (a few MB); resuming from it continues the run with identical results.
            resume: a :class:`RunState` from ``checkpoint``: continue after its frame (same annotations,
                direction and start).
            earlier: ``frame -> (H, W) uint8 labels`` the forward pass gave (or ``None``), for fused frames of a
                resumed ``both`` run; otherwise they are kept in memory, compressed, during the forward pass.
        Yields:
            :class:`SegmentedFrame` in processing order.
        """
        plan = self.plan(direction, start)
        if resume is not None and not isinstance(resume, RunState):
            resume = RunState(Direction(resume[0]), int(resume[1]), resume[2])
        k0 = 0
        if resume is not None:
            try:
                k0 = plan.pass_index(resume.direction)
            except ValueError:
                raise InputError(f"cannot resume a {resume.direction.value} pass: this run has none") from None
            if resume.frame not in plan.passes[k0].frames():
                raise InputError(f"cannot resume after frame {resume.frame}: the {resume.direction.value} pass "
                                 "does not visit it")
        to_fuse = frozenset().union(*(p.fused for p in plan.passes))
        stash: dict[int, tuple[bytes, tuple[int, ...]]] = {}
        for k in range(k0, len(plan.passes)):
            p = plan.passes[k]
            frames = p.frames()
            state = None
            if resume is not None and k == k0:
                frames = range(resume.frame + frames.step, frames.stop, frames.step)
                state = resume.engine
            eng = InferenceEngine(self.model, self.config, device=self.device)
            if state is not None:
                eng.load_state_dict(state)
            last = p.frames()[-1] if p.end is not None else None
            for idx, name, image in encode_ahead(eng, self._frames(frames)):  # a thread ahead: see pipelining
                m = self._mask_for(idx)
                prob = eng.step(image, m[0] if m else None, objects=m[1] if m else None, is_last=idx == last)
                if p.gives(idx):
                    labels = eng.probs_to_labels(prob).to(torch.uint8).cpu().numpy()
                    ids = list(eng.object_ids)
                    out_prob = prob if return_probs else None
                    if idx in p.fused:
                        fwd = self._earlier(idx, stash, earlier)
                        labels = plan.fuse(idx, fwd, labels)
                        ids = [i for i in self.object_ids if i in set(ids) | {int(v) for v in np.unique(fwd)}]
                        out_prob = None
                    elif idx in to_fuse and p.direction is Direction.FORWARD:
                        stash[idx] = (zlib.compress(labels.tobytes(), 1), labels.shape)
                    yield SegmentedFrame(idx, name, labels, out_prob, ids, p.direction, fused=idx in p.fused,
                                         final=plan.is_final(p.direction, idx))
                if checkpoint is not None and eng.memory_updated:
                    # Memory changes only here, so this state resumes at idx + step with identical results.
                    checkpoint(RunState(p.direction, idx, eng.state_dict()))

    @staticmethod
    def _earlier(idx: int, stash: dict[int, tuple[bytes, tuple[int, ...]]],
                 earlier: Callable[[int], np.ndarray | None] | None) -> np.ndarray:
        labels = earlier(idx) if earlier is not None else None
        if idx in stash:
            data, shape = stash.pop(idx)
            if labels is None:
                labels = np.frombuffer(zlib.decompress(data), np.uint8).reshape(shape)
        if labels is None:
            raise InputError(f"frame {idx} is fused with the forward pass's result, which is not available (a "
                             "resumed 'both' run needs earlier=...: e.g. segment_to_folder)")
        return labels
