"""The hand-labelled people of ``tests/data/people_labels.json`` and how a person detector plus
tracker scores on them: recall and precision on clearly visible people, and identity switches
over consecutive keyframes. Used by the tests and by ``python -m benchmarks.detector``.

A keyframe's detections are matched to its labelled people greedily at IoU >= 0.5, best score
first; a detection on an 'ignore' person counts neither way. The tracker runs as the service
runs it: on every keyframe and on frames between keyframes at most ``step_s`` apart. A labelled
person whose matched track id differs from the id they were last matched with (in the same
shot) is an id switch; a track id found in two shots of a video is an id carried over a cut.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from fbil.model.persons import PersonBoxes, PersonDetector
from fbil.model.tracking import Tracker, iou, plan_frames, tracker_for

LABELS = Path(__file__).resolve().parents[1] / "data" / "people_labels.json"


def load_labels(path: Path = LABELS) -> list[dict]:
    """The labelled videos: ``video``, ``size``, optional ``cuts``, ``frames`` (``time``,
    ``people`` letter -> pixel box, ``ignore`` boxes)."""
    return json.loads(path.read_text())["videos"]


@dataclass
class Clip:
    """One labelled video's frames: every time the tracker looks at, RGB."""

    labels: dict
    frames: dict[float, np.ndarray]
    plan: list[tuple[float, ...]]

    @property
    def keyframes(self) -> list[float]:
        return [f["time"] for f in self.labels["frames"]]


def read_clip(labels: dict, videos: Path, step_s: float = 0.25) -> Clip:
    """Decode the keyframes of ``labels`` and the frames between them at most ``step_s``
    apart (the first frame at or after each time)."""
    times = [f["time"] for f in labels["frames"]]
    plan = plan_frames(times, step_s, max_per_gap=64)
    wanted = sorted({t for group in plan for t in group})
    frames: dict[float, np.ndarray] = {}
    with av.open(str(videos / labels["video"])) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base)
            while len(frames) < len(wanted) and t + 1e-6 >= wanted[len(frames)]:
                frames[wanted[len(frames)]] = frame.to_ndarray(format="rgb24")
            if len(frames) == len(wanted):
                break
    return Clip(labels, frames, plan)


@dataclass
class Score:
    """How a detector and tracker did on labelled keyframes."""

    people: int = 0
    hits: int = 0
    false_alarms: int = 0
    parts: int = 0  # false alarms that are a part of a labelled (or ignored) person
    switches: int = 0  # a labelled person matched with another track id than last time
    carried: int = 0  # track ids found in two shots
    keyframes: int = 0
    frames: int = 0  # frames the detector looked at
    detect_s: float = 0.0
    track_s: float = 0.0
    misses: list[tuple[str, float, str]] = field(default_factory=list)  # video, time, person
    switched: list[tuple[str, float, str]] = field(default_factory=list)  # video, time, person

    @property
    def recall(self) -> float:
        return self.hits / max(self.people, 1)

    @property
    def precision(self) -> float:
        return self.hits / max(self.hits + self.false_alarms, 1)

    def add(self, other: Score) -> Score:
        out = Score()
        for name in ("people", "hits", "false_alarms", "parts", "switches", "carried",
                     "keyframes", "frames", "detect_s", "track_s"):  # fmt: skip
            setattr(out, name, getattr(self, name) + getattr(other, name))
        out.misses = self.misses + other.misses
        out.switched = self.switched + other.switched
        return out


def match(
    people: dict[str, list[int]], ignore: list[list[int]], boxes: np.ndarray, scores: np.ndarray
) -> tuple[dict[str, int], int, int]:
    """Labelled person -> index of the detection matched to them, the false alarms, and how
    many of those are parts of a person (:func:`is_part`); ``boxes`` pixels ``(n, 4)``."""
    names = list(people)
    gt = np.asarray([people[n] for n in names], np.float64).reshape(-1, 4)
    ign = np.asarray(ignore, np.float64).reshape(-1, 4)
    free = np.ones(len(names), bool)
    matched, false_alarms, parts = {}, 0, 0
    for j in np.argsort(-scores, kind="stable"):
        box = boxes[j : j + 1].astype(np.float64)
        overlap = iou(box, gt)[0] * free
        if len(names) and overlap.max() >= 0.5:
            i = int(overlap.argmax())
            free[i] = False
            matched[names[i]] = int(j)
        elif not (len(ign) and iou(box, ign).max() >= 0.5):
            false_alarms += 1
            parts += is_part(box[0], np.concatenate([gt, ign]))
    return matched, false_alarms, parts


def is_part(box: np.ndarray, people: np.ndarray) -> bool:
    """Whether a pixel box lies at least 0.7 of its area within one of ``people`` ``(k, 4)``
    while smaller than 0.6 of them: a head, arm, torso or legs boxed as a person."""
    w = (np.minimum(box[2], people[:, 2]) - np.maximum(box[0], people[:, 0])).clip(min=0)
    h = (np.minimum(box[3], people[:, 3]) - np.maximum(box[1], people[:, 1])).clip(min=0)
    area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)
    areas = (people[:, 2] - people[:, 0]) * (people[:, 3] - people[:, 1])
    return bool(((w * h / area >= 0.7) & (area < 0.6 * areas)).any())


def detect_clip(
    clip: Clip, detector: PersonDetector, floor: float, chunk: int = 8
) -> tuple[list[PersonBoxes], float]:
    """The people ``detector`` finds (scored ``floor`` or more) on every frame of the clip, in
    time order, and the seconds it took."""
    times = sorted(clip.frames)
    t0 = time.perf_counter()
    found = []
    for start in range(0, len(times), chunk):
        found.extend(detector.detect([clip.frames[t] for t in times[start : start + chunk]], floor))
    return found, time.perf_counter() - t0


def old_tracker(plan: list[tuple[float, ...]]) -> Tracker:
    """The tracker before the second association, the lost-track buffer, shot cuts and
    re-identification by colour: every box scored the threshold or more, tracks kept 1 s (1.5
    widest gaps), no cuts."""
    # no IoU reaches 2: no second pass
    return tracker_for(plan, buffer_s=1.0, low_min_iou=2.0, cut_distance=0.0, reid_distance=0.0)


def score_clip(
    clip: Clip,
    found: list[PersonBoxes],
    threshold: float,
    make_tracker: Callable[[list[tuple[float, ...]]], Tracker] = tracker_for,
) -> Score:
    """Track the people ``found`` on the clip's frames (:func:`detect_clip`, scored down to a
    floor; boxes below ``threshold`` only continue tracks) with ``make_tracker(plan)`` as the
    service does, and score the keyframes' people scored ``threshold`` or more."""
    labels, score = clip.labels, Score()
    w, h = labels["size"]
    scale = np.array([w, h, w, h], np.float32)
    times = sorted(clip.frames)
    score.frames = len(times)
    tracker = make_tracker(clip.plan)
    cuts = labels.get("cuts", [])
    keyframes = {f["time"]: f for f in labels["frames"]}
    last_id: dict[str, int] = {}
    shot_of_id: dict[int, int] = {}
    t0 = time.perf_counter()
    for t, people in zip(times, found, strict=True):
        ids = tracker.update(t, people, clip.frames[t], threshold=threshold)
        if t not in keyframes:
            continue
        frame = keyframes[t]
        shown = people.scores >= threshold
        boxes, scores = people.boxes[shown] * scale, people.scores[shown]
        shown_ids = [i for i, s in zip(ids, shown, strict=True) if s]
        matched, false_alarms, parts = match(frame["people"], frame["ignore"], boxes, scores)
        shot = sum(1 for c in cuts if c < t)
        score.keyframes += 1
        score.people += len(frame["people"])
        score.hits += len(matched)
        score.false_alarms += false_alarms
        score.parts += parts
        score.misses += [(labels["video"], t, n) for n in frame["people"] if n not in matched]
        for name, j in matched.items():
            track = shown_ids[j]
            key = f"{shot}:{name}"
            if key in last_id and last_id[key] != track:
                score.switches += 1
                score.switched.append((labels["video"], t, name))
            last_id[key] = track
        for track in shown_ids:
            if shot_of_id.setdefault(track, shot) != shot:
                score.carried += 1
                shot_of_id[track] = shot
    score.track_s = time.perf_counter() - t0
    return score
