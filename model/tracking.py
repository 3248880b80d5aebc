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

Three things keep a person's id through a bad stretch (ByteTrack's ideas, in numpy):

- **A second association**: the detector also returns boxes scored between a low floor and the
  threshold; after the confident boxes have been matched, these may continue the tracks still
  unmatched (by overlap alone) but never start a track, so a person whose score dips for a frame
  keeps their track alive and their id.
- **A lost-track buffer** in seconds (``max_age_s``): a person missed at a keyframe and found
  again within it takes their old id back.
- **Shot cuts**: a frame whose colour layout jumps from the previous one's (2x2 regions' colour
  histograms, :func:`scene_distance`) starts a new scene, which inherits no track.

And one for people found again away from where their track expected them (behind another
walker, a sign): **re-identification by colour** — a confident box that continues no track takes
the id of a lost track (unseen this frame, still in the buffer) whose colours are close
(:func:`appearance_distance` under ``reid_distance``) and that could have walked there (centres
within ``reid_reach`` box heights per second).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fbil.model.persons import PersonBoxes

HIST_BINS = 8  # per colour channel, per half of the box
# mean Hellinger distance of the 2x2 regions' colour histograms between frames looked at: shot
# cuts in Megamind.avi measure 0.20-0.26, the most within a shot 0.12 (tree.avi's hand-held
# camera; vtest.avi 0.03), frames 0.25 s apart
CUT_DISTANCE = 0.18
# a lost track is taken back by a box whose colours are this close (Hellinger distance), from at
# most this many box heights away per second: on the labelled people (tests/data/
# people_labels.json) id switches 8 -> 6 at frames 0.25 s apart, 23 -> 7 at 0.5 s
REID_DISTANCE = 0.3
REID_REACH = 1.0
_EPS = 1e-9


class DetectCancelledError(Exception):
    """The caller's ``cancel`` event was set between two detector calls."""


# --------------------------------------------------------------------------- frames to look at


def plan_frames(
    keyframe_times: Sequence[float],
    step_s: float,
    max_per_gap: int,
    max_total: int | None = None,
) -> list[tuple[float, ...]]:
    """For each keyframe (times ascending), the times the detector looks at to reach it from
    the previous keyframe: frames between the two at most ``step_s`` apart (none when ``step_s``
    is 0), then the keyframe itself. At most ``max_per_gap`` times per keyframe; with
    ``max_total``, the gaps widen evenly by length so that no more are planned in all (never
    fewer than one per keyframe). A keyframe at the previous one's time gets no time (the same
    frame). Counts are computed before any time is made (:func:`count_planned`)."""
    between = _between(keyframe_times, step_s, max_per_gap, max_total)
    plan: list[tuple[float, ...]] = []
    for k, t in enumerate(keyframe_times):
        if k and t == keyframe_times[k - 1]:
            plan.append(())
            continue
        n = between[k]
        previous = keyframe_times[k - 1] if k else t
        gap = t - previous
        plan.append((*(previous + gap * (j + 1) / (n + 1) for j in range(n)), float(t)))
    return plan


def count_planned(
    keyframe_times: Sequence[float], step_s: float, max_per_gap: int, max_total: int | None = None
) -> int:
    """How many times :func:`plan_frames` plans, without making them."""
    between = _between(keyframe_times, step_s, max_per_gap, max_total)
    distinct = sum(1 for k, t in enumerate(keyframe_times) if not k or t != keyframe_times[k - 1])
    return distinct + sum(between)


def _between(
    times: Sequence[float], step_s: float, max_per_gap: int, max_total: int | None
) -> list[int]:
    """Frames planned strictly between each keyframe and the one before it (0 for the first)."""
    if any(b < a for a, b in zip(times, times[1:], strict=False)):
        raise ValueError("keyframe times must be ascending")
    gaps = [0.0, *(b - a for a, b in zip(times, times[1:], strict=False))]
    cap = max(max_per_gap - 1, 0)
    between = [
        min(math.ceil(g / step_s - 1e-9) - 1, cap) if step_s > 0 and g > 0 else 0 for g in gaps
    ]
    distinct = sum(1 for g in gaps[1:] if g > 0) + (1 if times else 0)
    if max_total is not None and distinct + sum(between) > max_total:
        spare, span = max(max_total - distinct, 0), sum(gaps)
        between = [
            min(math.floor(spare * g / span), b) if span > 0 else 0
            for g, b in zip(gaps, between, strict=True)
        ]
    return between


def tracker_for(plan: Sequence[Sequence[float]], buffer_s: float = 1.0, **options: Any) -> Tracker:
    """A :class:`Tracker` for the frames of ``plan``: a lost track is kept ``buffer_s``
    seconds, and at least 1.5 times the widest gap between two frames looked at (else a person
    is lost between keyframes looked at alone); ``options`` are the tracker's other settings."""
    looked_at = [t for group in plan for t in group]
    widest = max((b - a for a, b in zip(looked_at, looked_at[1:], strict=False)), default=0.0)
    return Tracker(max_age_s=max(buffer_s, 1.5 * widest), **options)


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


def scene_signature(frame: np.ndarray) -> np.ndarray:
    """Colour histograms (``HIST_BINS`` per RGB channel) of the frame's 2x2 regions, every
    4th pixel: ``(4, 3, HIST_BINS)``, each channel summing to 1."""
    small = frame[::4, ::4].astype(np.int64) * HIST_BINS // 256
    h, w = small.shape[:2]
    out = []
    for r in range(2):
        for q in range(2):
            part = small[r * h // 2 : max((r + 1) * h // 2, r * h // 2 + 1),
                         q * w // 2 : max((q + 1) * w // 2, q * w // 2 + 1)]  # fmt: skip
            hist = np.stack([np.bincount(part[..., c].ravel(), minlength=HIST_BINS)
                             for c in range(3)]).astype(np.float64)  # fmt: skip
            out.append(hist / np.maximum(hist.sum(axis=1, keepdims=True), _EPS))
    return np.stack(out)


def scene_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over the 2x2 regions of the Hellinger distance of two :func:`scene_signature`:
    0 the same colours in the same places, 1 disjoint."""
    overlap = np.sqrt(a * b).sum(axis=2).mean(axis=1)
    return float(np.sqrt(np.clip(1.0 - overlap, 0.0, None)).mean())


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

    A box scored ``threshold`` or more (see :meth:`update`) continues a track when its IoU with
    the track's predicted box is at least ``min_iou``; among those, cost is ``1 - IoU`` plus
    ``appearance_weight`` times the colour distance (:func:`appearance_distance`). Boxes scored
    below the threshold then continue the tracks left unmatched where their IoU is at least
    ``low_min_iou`` (cost ``1 - IoU``), and start none. A track unseen for longer than
    ``max_age_s`` ends; unmatched confident boxes start new tracks (ids 1, 2, ... in order of
    appearance). A frame at ``cut_distance`` or more (:func:`scene_distance`) from the previous
    one is a shot cut: every track ends there (0 never cuts). A confident box that continues no
    track first takes a lost track's id by colour (see the module's re-identification; a
    ``reid_distance`` of 0 turns it off). Without ``motion`` a track is
    looked for where it was last seen, not where its velocity takes it (for measuring what the
    motion model gains: ``benchmarks/detector.py``).
    """

    def __init__(
        self,
        *,
        min_iou: float = 0.2,
        appearance_weight: float = 0.5,
        max_age_s: float = 1.0,
        low_min_iou: float = 0.4,
        cut_distance: float = CUT_DISTANCE,
        motion: bool = True,
        reid_distance: float = REID_DISTANCE,
        reid_reach: float = REID_REACH,
    ) -> None:
        self.min_iou, self.appearance_weight, self.max_age_s = min_iou, appearance_weight, max_age_s
        self.low_min_iou, self.cut_distance, self.motion = low_min_iou, cut_distance, motion
        self.reid_distance, self.reid_reach = reid_distance, reid_reach
        self.tracks: list[_Track] = []
        self._next_id = 1
        self.last_time: float | None = None  # of the last update
        self.scene: np.ndarray | None = None  # of the last frame given
        self.cuts = 0  # shot cuts seen

    def update(
        self,
        time: float,
        people: PersonBoxes,
        frame: np.ndarray | None = None,
        *,
        threshold: float = 0.0,
    ) -> list[int]:
        """Track ids of ``people`` (in their order) on the frame at ``time`` seconds; a box
        scored below ``threshold`` that continues no track gets 0."""
        self.last_time = time
        if frame is not None:
            scene = scene_signature(frame)
            cut = self.scene is not None and self.cut_distance > 0
            if cut and scene_distance(self.scene, scene) >= self.cut_distance:
                self.tracks = []
                self.cuts += 1
            self.scene = scene
        self.tracks = [t for t in self.tracks if time - t.time <= self.max_age_s]
        looks = [appearance(frame, b) for b in people.boxes] if frame is not None else None
        ids = [0] * len(people)
        confident = people.scores >= threshold
        if self.tracks and len(people):
            predicted = np.stack([t.predicted(time) if self.motion else t.box for t in self.tracks])
            overlap = iou(predicted, people.boxes.astype(np.float64))
            cost = 1.0 - overlap
            if looks is not None:
                for i, track in enumerate(self.tracks):
                    if track.look is None:
                        continue
                    for j, look in enumerate(looks):
                        if confident[j]:
                            distance = appearance_distance(track.look, look)
                            cost[i, j] += self.appearance_weight * distance
            matched = set()
            for i, j in greedy_match(cost, (overlap >= self.min_iou) & confident[None, :]):
                matched.add(i)
                ids[j] = self.tracks[i].id
                self._follow(self.tracks[i], time, people.boxes[j], looks[j] if looks else None)
            free = np.array([i not in matched for i in range(len(self.tracks))])
            second = (overlap >= self.low_min_iou) & free[:, None] & ~confident[None, :]
            for i, j in greedy_match(1.0 - overlap, second):
                ids[j] = self.tracks[i].id
                self._follow(self.tracks[i], time, people.boxes[j], None)
        lost = [t for t in self.tracks if t.time < time and t.look is not None]
        for j in np.argsort(-people.scores, kind="stable"):
            if ids[j] or not confident[j]:
                continue
            look = looks[j] if looks else None
            track = self._reidentify(lost, time, people.boxes[j], look)
            if track is not None:
                lost.remove(track)
                self._follow(track, time, people.boxes[j], look)
                track.velocity = np.zeros(4)  # a jump, not a walk
                ids[j] = track.id
                continue
            box = people.boxes[j].astype(np.float64)
            self.tracks.append(_Track(self._next_id, box, time, look=look))
            ids[j] = self._next_id
            self._next_id += 1
        return ids

    def _reidentify(
        self, lost: list[_Track], time: float, box: np.ndarray, look: np.ndarray | None
    ) -> _Track | None:
        """The lost track whose colours are closest to ``look``, if under ``reid_distance``
        and near enough: centres at most ``reid_reach`` box heights apart per second (at least
        one second's worth)."""
        if look is None or self.reid_distance <= 0:
            return None
        best, best_distance = None, self.reid_distance
        centre = (box[:2] + box[2:]).astype(np.float64) / 2
        for track in lost:
            height = track.box[3] - track.box[1]
            reach = self.reid_reach * height * max(1.0, time - track.time)
            if np.abs((track.box[:2] + track.box[2:]) / 2 - centre).max() > reach:
                continue
            assert track.look is not None
            distance = appearance_distance(track.look, look)
            if distance < best_distance:
                best, best_distance = track, distance
        return best

    def state(self) -> dict[str, object]:
        """Everything :meth:`update` depends on, as JSON-able values (floats round-trip
        exactly through JSON): :meth:`from_state` rebuilds a tracker that continues alike."""
        return {
            "min_iou": self.min_iou,
            "appearance_weight": self.appearance_weight,
            "max_age_s": self.max_age_s,
            "low_min_iou": self.low_min_iou,
            "cut_distance": self.cut_distance,
            "motion": self.motion,
            "reid_distance": self.reid_distance,
            "reid_reach": self.reid_reach,
            "next_id": self._next_id,
            "last_time": self.last_time,
            "scene": None if self.scene is None else self.scene.tolist(),
            "cuts": self.cuts,
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
            # absent from states saved by earlier versions: they had no second pass or cuts
            low_min_iou=state.get("low_min_iou", 1.0),
            cut_distance=state.get("cut_distance", 0.0),
            motion=state.get("motion", True),
            reid_distance=state.get("reid_distance", 0.0),
            reid_reach=state.get("reid_reach", REID_REACH),
        )
        tracker._next_id = state["next_id"]
        scene = state.get("scene")
        tracker.scene = None if scene is None else np.asarray(scene, np.float64)
        tracker.cuts = state.get("cuts", 0)
        tracker.last_time = state.get("last_time")  # absent from states saved by earlier versions
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
