"""Propagation plan: which frames each pass visits, in which order, and which results it gives. Torch-free.

The one place for the direction and frame-range rules of :meth:`rdevos.inference.session.VideoSession.propagate`;
run folders, the web app and progress bars read totals and expected outputs from here.

Rules (``F`` = first annotated frame, ``L`` = last annotated frame, ``B`` = the last frame on which some object is
*first* given; ``start`` replaces them where given):

* ``forward``: frames ``F .. end``; an annotation is applied when the pass reaches it.
* ``backward``: frames ``L .. 0``; likewise.
* ``both``: every frame gets a result. The forward pass ``F .. end`` carries each object forward from every frame
  where it is given; then the backward pass ``B .. 0`` carries each object backward from the frame where it is first
  given (and from every annotation it meets on the way). With ``start = s`` both passes begin at ``s``.
  Frames before ``F`` get the backward result. Frames ``F .. B``, reached by both passes, are fused by the
  **nearest-annotation rule** (as MiVOS fuses its propagations): each object's mask comes from the pass whose
  annotation of that object is nearer in time (the last one the forward pass applied at or before the frame, the
  next one the backward pass applied at or after it; ties: forward); where two objects so chosen claim a pixel, the
  one with the nearer annotation wins. Such a frame is given twice: first the forward result, then the fused one.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Direction", "PlannedPass", "PropagationPlan", "plan_propagation", "fuse_labels"]

_FAR = 1 << 40  # "no annotation" distance


class Direction(str, enum.Enum):
    FORWARD = "forward"
    BACKWARD = "backward"
    BOTH = "both"


@dataclass(frozen=True)
class PlannedPass:
    """One pass of the engine over consecutive frames.

    Attributes:
        direction: ``FORWARD`` or ``BACKWARD``.
        first: first frame visited (an annotated frame).
        end: frame after the last one visited (-1 for a backward pass; ``None``: until the stream ends).
        new_below: backward pass of ``both``: frames below this get their first result here; the others were given
            by the forward pass (``None``: every visited frame is new).
        fused: frames given again, fused with the forward pass's result (nearest-annotation rule).
    """

    direction: Direction
    first: int
    end: int | None
    new_below: int | None = None
    fused: frozenset[int] = frozenset()

    def frames(self) -> range:
        """Frames visited, in order (a forward pass on a stream of unknown length: up to 2**62)."""
        step = 1 if self.direction is Direction.FORWARD else -1
        return range(self.first, (1 << 62) if self.end is None else self.end, step)

    def gives(self, t: int) -> bool:
        """Whether the pass yields a result for frame ``t`` (it visits every frame of :meth:`frames`)."""
        return self.new_below is None or t < self.new_below or t in self.fused

    def num_results(self) -> int | None:
        fr = self.frames()
        if self.end is None:
            return None
        if self.new_below is None:
            return len(fr)
        return sum(1 for t in fr if self.gives(t))

    def results_through(self, t: int) -> int:
        """Results this pass yields up to and including frame ``t`` (``t`` in :meth:`frames`)."""
        fr = self.frames()
        upto = range(fr.start, t + fr.step, fr.step)
        if self.new_below is None:
            return len(upto)
        return sum(1 for u in upto if self.gives(u))


@dataclass(frozen=True)
class PropagationPlan:
    """The passes of one propagation and the annotations they apply.

    Attributes:
        direction: what was asked for.
        passes: in order (``both``: forward, then backward).
        annotations: frame -> object ids given there.
        num_frames: video length (``None``: a stream).
    """

    direction: Direction
    passes: tuple[PlannedPass, ...]
    annotations: Mapping[int, tuple[int, ...]]
    num_frames: int | None
    _by_object: dict[int, list[int]] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for f in sorted(self.annotations):
            for i in self.annotations[f]:
                self._by_object.setdefault(i, []).append(f)

    @property
    def total(self) -> int | None:
        """Results the whole propagation yields (``None`` on a stream)."""
        counts = [p.num_results() for p in self.passes]
        return None if any(c is None for c in counts) else sum(counts)  # type: ignore[misc]

    def outputs(self) -> list[int]:
        """Frames that get a result, ascending (a finished run has one output for each)."""
        out: set[int] = set()
        for p in self.passes:
            if p.end is None:
                raise ValueError("a forward pass over a stream has no known list of outputs")
            out.update(t for t in p.frames() if p.gives(t))
        return sorted(out)

    def pass_index(self, direction: Direction | str) -> int:
        d = Direction(direction)
        for k, p in enumerate(self.passes):
            if p.direction is d:
                return k
        raise ValueError(f"this plan has no {d.value} pass")

    def done_through(self, direction: Direction | str, frame: int) -> int:
        """Results yielded from the start up to and including ``frame`` of the ``direction`` pass."""
        k = self.pass_index(direction)
        before = sum(p.num_results() or 0 for p in self.passes[:k])
        return before + self.passes[k].results_through(frame)

    def is_final(self, direction: Direction | str, frame: int) -> bool:
        """Whether the result of ``frame`` from this pass is the last one the plan gives for it."""
        k = self.pass_index(direction)
        return not any(frame in p.fused for p in self.passes[k + 1:])

    def distances(self, t: int, forward: PlannedPass, backward: PlannedPass) -> tuple[dict[int, int], dict[int, int]]:
        """Per object: frames from ``t`` to the annotation each pass last applied (forward, backward)."""
        fwd: dict[int, int] = {}
        bwd: dict[int, int] = {}
        for i, frames in self._by_object.items():
            past = [f for f in frames if forward.first <= f <= t]
            if past:
                fwd[i] = t - past[-1]
            ahead = [f for f in frames if t <= f <= backward.first]
            if ahead:
                bwd[i] = ahead[0] - t
        return fwd, bwd

    def fuse(self, t: int, forward_labels: np.ndarray, backward_labels: np.ndarray) -> np.ndarray:
        """The result of a frame reached by both passes (nearest-annotation rule, see the module docstring).

        Args:
            t: the frame.
            forward_labels, backward_labels: (H, W) uint8 label maps of the two passes.
        Returns:
            (H, W) uint8 label map.
        """
        fwd_pass, bwd_pass = self.passes[0], self.passes[1]
        df, db = self.distances(t, fwd_pass, bwd_pass)
        return fuse_labels(forward_labels, backward_labels, df, db)


def fuse_labels(forward: np.ndarray, backward: np.ndarray, dist_forward: Mapping[int, int],
                dist_backward: Mapping[int, int]) -> np.ndarray:
    """Fuse two label maps object by object: each object from the pass with the nearer annotation (ties: forward).

    Idempotent: fusing the result again with the same ``backward`` gives the same map.

    Args:
        forward, backward: (H, W) uint8 label maps.
        dist_forward, dist_backward: object id -> frames to that pass's annotation (absent: the pass lacks it).
    Returns:
        (H, W) uint8 label map.
    """
    far_f = np.full(256, _FAR, np.int64)
    far_b = np.full(256, _FAR, np.int64)
    for i in set(dist_forward) | set(dist_backward):
        a, b = dist_forward.get(i, _FAR), dist_backward.get(i, _FAR)
        if a <= b:
            far_f[i] = a
        else:
            far_b[i] = b
    far_f[0] = far_b[0] = _FAR  # background is never a candidate
    cf, cb = far_f[forward], far_b[backward]
    out = np.zeros_like(forward)
    take_f = (cf < _FAR) & (cf <= cb)
    take_b = (cb < _FAR) & ~take_f
    out[take_f] = forward[take_f]
    out[take_b] = backward[take_b]
    return out


def plan_propagation(annotations: Mapping[int, Sequence[int]], num_frames: int | None,
                     direction: Direction | str = Direction.FORWARD, start: int | None = None) -> PropagationPlan:
    """Plan a propagation (see the module docstring for the rules).

    Args:
        annotations: frame index -> object ids given on it (at least one frame).
        num_frames: video length, ``None`` for a stream (forward only).
        direction: ``forward``, ``backward`` or ``both``.
        start: begin the passes here instead of at the annotations (an annotated frame, typically).
    Raises:
        ValueError: no annotation, a start outside the video, or a backward pass on a stream.
    """
    d = Direction(direction)
    ann = {int(f): tuple(int(i) for i in ids) for f, ids in annotations.items() if len(ids)}
    if not ann:
        raise ValueError("no annotation to propagate")
    n = num_frames
    if start is not None and (start < 0 or (n is not None and start >= n)):
        raise ValueError(f"start frame {start} is outside the video (0..{(n or 1) - 1})")
    if d is not Direction.FORWARD and n is None:
        raise ValueError(f"direction {d.value!r} needs a video of known length (a stream goes forward only)")
    frames = sorted(ann)
    first_given: dict[int, int] = {}
    for f in frames:
        for i in ann[f]:
            first_given.setdefault(i, f)
    passes: list[PlannedPass] = []
    fwd = bwd = None
    if d in (Direction.FORWARD, Direction.BOTH):
        s = frames[0] if start is None else start
        s = next((f for f in frames if f >= s), None)  # nothing to track before an annotation
        if s is not None and (n is None or s < n):
            fwd = PlannedPass(Direction.FORWARD, s, n)
            passes.append(fwd)
    if d is Direction.BACKWARD:
        s = frames[-1] if start is None else start
    else:
        s = max(first_given.values()) if start is None else start
    if d is not Direction.FORWARD:
        s = next((f for f in reversed(frames) if f <= s), None)
        if s is not None:
            if d is Direction.BOTH and fwd is not None:
                if s > fwd.first or fwd.first > 0:
                    probe = PlannedPass(Direction.BACKWARD, s, -1)
                    tmp = PropagationPlan(d, (fwd, probe), ann, n)
                    fused = set()
                    for t in range(fwd.first, s + 1):
                        df, db = tmp.distances(t, fwd, probe)
                        if any(b < df.get(i, _FAR) for i, b in db.items()):
                            fused.add(t)
                    bwd = PlannedPass(Direction.BACKWARD, s, -1, new_below=fwd.first, fused=frozenset(fused))
            else:
                bwd = PlannedPass(Direction.BACKWARD, s, -1)
            if bwd is not None:
                passes.append(bwd)
    if not passes:
        raise ValueError(f"no annotation on or {'after' if d is Direction.FORWARD else 'before'} frame {start}")
    return PropagationPlan(d, tuple(passes), ann, n)
