"""Person identities across the keyframes of one request: detections on the keyframes and on
frames between them, joined frame to frame.

Keyframes are usually a second apart: a walking person moves about a box width in that time,
so two people walking side by side swap identities when only the keyframes' boxes are compared.
:func:`plan_frames` therefore adds frames between keyframes (at most ``step_s`` apart) on which
the detector also runs; between two such frames a person moves a fraction of a box and its box
overlaps its own previous box most. :class:`Tracker` joins the boxes of consecutive frames by
overlap with a constant-velocity prediction, and uses the colours inside the box (upper and
lower half, as people differ by coat and trousers) to break near-ties; boxes are matched
greedily by cost (few people per frame: a greedy match on gated costs is what IoU trackers
use, and needs no solver). Only numpy.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fbil.model.persons import PersonBoxes, PersonDetector

HIST_BINS = 8  # per colour channel, per half of the box
_EPS = 1e-9


class DetectCancelledError(Exception):
    """The caller's ``cancel`` event was set between two detector calls."""


# --------------------------------------------------------------------------- frames to look at


@dataclass(frozen=True)
class FramePlan:
    """Times to run the detector on, in time order: ``times[keyframe_at[k]]`` is keyframe ``k``
    (in the caller's order); the rest lie between keyframes, for tracking."""

    times: tuple[float | None, ...]
    keyframe_at: tuple[int, ...]


def plan_frames(
    keyframe_times: Sequence[float | None], step_s: float, max_frames: int
) -> FramePlan:
    """The keyframes plus frames between consecutive ones at most ``step_s`` apart (none when
    ``step_s`` is 0), widened evenly so that no more than ``max_frames`` times are planned
    (never fewer than the keyframes). A time of ``None`` (the segment's middle, a single
    keyframe) is kept as it is."""
    if any(t is None for t in keyframe_times):
        return FramePlan(tuple(keyframe_times), tuple(range(len(keyframe_times))))
    times = [float(t) for t in keyframe_times]  # type: ignore[arg-type]
    unique = sorted(set(times))
    gaps = [b - a for a, b in zip(unique, unique[1:], strict=False)]
    between = [math.ceil(g / step_s - 1e-9) - 1 if step_s > 0 else 0 for g in gaps]
    spare = max(max_frames - len(unique), 0)
    if sum(between) > spare:  # too many: spread what fits over the gaps by length
        span = sum(gaps)
        between = [math.floor(spare * g / span) for g in gaps] if span > 0 else [0] * len(gaps)
    planned: list[float] = []
    for i, t in enumerate(unique):
        planned.append(t)
        if i < len(gaps):
            n = between[i]
            planned.extend(t + gaps[i] * (j + 1) / (n + 1) for j in range(n))
    position = {t: planned.index(t) for t in unique}
    return FramePlan(tuple(planned), tuple(position[t] for t in times))


# --------------------------------------------------------------------------- appearance


def appearance(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Colour histograms of a box's upper and lower half (``HIST_BINS`` per RGB channel each),
    each half summing to 1; ``box`` normalised ``x1, y1, x2, y2``. The middle 60% of the
    width is used (less background)."""
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = box.astype(np.float64)
    inset = (x2 - x1) * 0.2
    xa, xb = int(round((x1 + inset) * w)), int(round((x2 - inset) * w))
    ya, yb = int(round(y1 * h)), int(round(y2 * h))
    xb, yb = max(xb, xa + 1), max(yb, ya + 2)
    crop = frame[max(ya, 0) : min(yb, h), max(xa, 0) : min(xb, w)]
    halves = np.array_split(crop, 2, axis=0) if len(crop) >= 2 else [crop, crop]
    out = []
    for half in halves:
        pixels = half.reshape(-1, 3).astype(np.int64) * HIST_BINS // 256
        hist = np.stack([np.bincount(pixels[:, c], minlength=HIST_BINS) for c in range(3)])
        hist = hist.astype(np.float64)
        out.append((hist / max(hist.sum(), _EPS)).ravel())
    return np.concatenate(out)


def appearance_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Hellinger distance of two :func:`appearance` histograms: 0 the same, 1 disjoint."""
    overlap = float(np.sqrt(a * b).sum()) / 2  # two halves, each summing to 1
    return math.sqrt(max(1.0 - overlap, 0.0))


# --------------------------------------------------------------------------- association


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a`` ``(n, 4)`` and ``b`` ``(m, 4)``: ``(n, m)``."""
    a, b = a[:, None, :], b[None, :, :]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, _EPS)


def greedy_match(cost: np.ndarray, allowed: np.ndarray) -> list[tuple[int, int]]:
    """Pairs ``(row, column)``, cheapest first, each row and column used once, only where
    ``allowed``."""
    rows, cols = np.nonzero(allowed)
    order = np.argsort(cost[rows, cols], kind="stable")
    used_r, used_c, pairs = set(), set(), []
    for i in order:
        r, c = int(rows[i]), int(cols[i])
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            pairs.append((r, c))
    return pairs


@dataclass
class _Track:
    id: int
    box: np.ndarray  # normalised, as last seen
    time: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))  # per second
    look: np.ndarray | None = None

    def predicted(self, time: float) -> np.ndarray:
        return self.box + self.velocity * (time - self.time)


class Tracker:
    """Gives every box of consecutive frames a track id; the same person keeps its id.

    A box continues a track when its IoU with the track's predicted box is at least
    ``min_iou``; among those, cost is ``1 - IoU`` plus ``appearance_weight`` times the
    colour distance (:func:`appearance_distance`). A track unseen for longer than
    ``max_age_s`` ends; unmatched boxes start new tracks (ids 1, 2, ... in order of
    appearance).
    """

    def __init__(
        self, *, min_iou: float = 0.2, appearance_weight: float = 0.5, max_age_s: float = 1.0
    ) -> None:
        self.min_iou, self.appearance_weight, self.max_age_s = min_iou, appearance_weight, max_age_s
        self.tracks: list[_Track] = []
        self._next_id = 1

    def update(
        self, time: float, people: PersonBoxes, frame: np.ndarray | None = None
    ) -> list[int]:
        """Track ids of ``people`` (in their order) on the frame at ``time`` seconds."""
        self.tracks = [t for t in self.tracks if time - t.time <= self.max_age_s]
        looks = [appearance(frame, b) for b in people.boxes] if frame is not None else None
        ids = [0] * len(people)
        if self.tracks and len(people):
            predicted = np.stack([t.predicted(time) for t in self.tracks])
            overlap = iou(predicted, people.boxes.astype(np.float64))
            cost = 1.0 - overlap
            if looks is not None:
                for i, track in enumerate(self.tracks):
                    if track.look is None:
                        continue
                    for j, look in enumerate(looks):
                        distance = appearance_distance(track.look, look)
                        cost[i, j] += self.appearance_weight * distance
            for i, j in greedy_match(cost, overlap >= self.min_iou):
                track = self.tracks[i]
                ids[j] = track.id
                self._follow(track, time, people.boxes[j], looks[j] if looks else None)
        for j, box in enumerate(people.boxes):
            if not ids[j]:
                look = looks[j] if looks else None
                self.tracks.append(_Track(self._next_id, box.astype(np.float64), time, look=look))
                ids[j] = self._next_id
                self._next_id += 1
        return ids

    def state(self) -> dict[str, object]:
        """Everything :meth:`update` depends on, as JSON-able values (floats round-trip
        exactly through JSON): :meth:`from_state` rebuilds a tracker that continues alike."""
        return {
            "min_iou": self.min_iou,
            "appearance_weight": self.appearance_weight,
            "max_age_s": self.max_age_s,
            "next_id": self._next_id,
            "tracks": [
                {
                    "id": t.id,
                    "box": t.box.tolist(),
                    "time": t.time,
                    "velocity": t.velocity.tolist(),
                    "look": None if t.look is None else t.look.tolist(),
                }
                for t in self.tracks
            ],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Tracker:
        """The tracker whose :meth:`state` was ``state``."""
        tracker = cls(
            min_iou=state["min_iou"],
            appearance_weight=state["appearance_weight"],
            max_age_s=state["max_age_s"],
        )
        tracker._next_id = state["next_id"]
        tracker.tracks = [
            _Track(
                t["id"],
                np.asarray(t["box"], np.float64),
                t["time"],
                np.asarray(t["velocity"], np.float64),
                None if t["look"] is None else np.asarray(t["look"], np.float64),
            )
            for t in state["tracks"]
        ]
        return tracker

    @staticmethod
    def _follow(track: _Track, time: float, box: np.ndarray, look: np.ndarray | None) -> None:
        dt = time - track.time
        box = box.astype(np.float64)
        if dt > 0:
            seen = (box - track.box) / dt
            track.velocity = seen if not track.velocity.any() else 0.5 * track.velocity + 0.5 * seen
        track.box, track.time = box, time
        if look is not None:
            track.look = look if track.look is None else 0.7 * track.look + 0.3 * look


# --------------------------------------------------------------------------- the pipeline


@dataclass(frozen=True)
class TrackedPeople:
    """The people on one keyframe: boxes and scores (as the detector gave them, best first)
    and each one's track id."""

    people: PersonBoxes
    track_ids: tuple[int, ...]


def track_people(
    frames: Sequence[tuple[float, np.ndarray]],
    plan: FramePlan,
    detector: PersonDetector,
    threshold: float,
    *,
    chunk: int = 8,
    cancel: threading.Event | None = None,
    tracker: Tracker | None = None,
) -> list[TrackedPeople]:
    """Detect people on ``frames`` (``(time, rgb)`` as read for ``plan.times``) and follow
    them; the people of each keyframe of ``plan``, in its order.

    The detector sees ``chunk`` frames per call (bounded memory for its tiles); ``cancel``
    stops between calls (:class:`DetectCancelledError`); ``tracker`` (default: a new
    :class:`Tracker`) joins the frames. Frames that repeat the previous
    frame's time (a video with fewer frames than planned) are looked at once.
    """
    # a frame that repeats the previous one's time is the same frame: looked at once
    source = [0] * len(frames)
    distinct: list[int] = []
    for i, (time, _) in enumerate(frames):
        if distinct and frames[distinct[-1]][0] == time:
            source[i] = len(distinct) - 1
        else:
            source[i] = len(distinct)
            distinct.append(i)
    found: list[PersonBoxes] = []
    for start in range(0, len(distinct), chunk):
        if cancel is not None and cancel.is_set():
            raise DetectCancelledError("detection was cancelled")
        batch = [frames[i][1] for i in distinct[start : start + chunk]]
        found.extend(detector.detect(batch, threshold))
    follow = tracker or Tracker()
    ids = [
        follow.update(frames[i][0], people, frames[i][1])
        for i, people in zip(distinct, found, strict=True)
    ]
    return [TrackedPeople(found[source[k]], tuple(ids[source[k]])) for k in plan.keyframe_at]
