"""The keyframe pipeline: what every entry point (``POST /detect``, jobs, ``fbil-detect``, and
what comes next) does with a video, written once.

1. :func:`plan_keyframes`: the keyframes (the request's, else every ``keyframe_interval``), in
   time order, each with its client boxes or none (then the person detector finds the people),
   and the frames the detector looks at to reach each (for tracking between keyframes).
2. One pass over the video (:func:`fbil.model.video.stream.stream_windows`) turns the plan into
   :class:`~fbil.model.video.stream.Window` s: a keyframe's clip and its detector frames.
3. :class:`ActorSource` turns a window into the keyframe's :class:`Actor` s: client boxes
   validated and normalised, or detected people followed by one tracker across the run.
4. :func:`run_keyframes` scores each keyframe's actors on the engine (its batcher), at most
   ``in_flight`` keyframes at once, and hands each answer (:func:`keyframe_answer`, the
   :class:`~fbil.service.schemas.KeyframeOut` of ``/detect``) on in time order.

Nothing here knows HTTP: options come as :class:`KeyframeOptions`, errors as
:class:`~fbil.service.errors.ServiceError` s and :class:`~fbil.model.video.VideoError` s.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time as clock
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fbil.model.labels import LabelMap
from fbil.model.persons import PersonBoxes, PersonDetector
from fbil.model.tracking import (
    REID_DISTANCE,
    DetectCancelledError,
    Tracker,
    plan_frames,
    tracker_for,
)
from fbil.model.video import KeyframeOutOfRangeError, Source, VideoInfo, VideoLimits
from fbil.model.video.stream import Window, stream_windows
from fbil.service.boxes import normalize_boxes
from fbil.service.errors import BoxesRequiredError, TooManyKeyframesError
from fbil.service.schemas import ActionOut, ActorOut, BoxIn, KeyframeOut, KeyframeRequest

if TYPE_CHECKING:
    from fbil.service.engine import Engine, Scored
    from fbil.service.settings import Settings

BoxFormat = Literal["pixels", "normalized"]
DETECT_CHUNK = 8  # frames per detector call (bounded memory for its tiles)


# --------------------------------------------------------------------------- options and plan


@dataclass(frozen=True)
class KeyframeOptions:
    """How keyframes are answered: the boxes' format, the actions listed per actor, and the
    person detector's threshold (resolved: a request's, else ``FBIL_PERSON_THRESHOLD``)."""

    person_threshold: float
    box_format: BoxFormat = "pixels"
    top_k: int = 5
    min_score: float = 0.0
    all_scores: bool = False


def keyframe_count(end: float, interval: float) -> int:
    """How many keyframes :func:`keyframe_times` makes, computed without making them."""
    if not (interval > 0 and math.isfinite(interval)) or not math.isfinite(end):
        raise ValueError(f"keyframe interval {interval} over {end} s")
    return max(math.ceil(end / interval - 1e-9), 1)


def keyframe_times(end: float, interval: float, max_keyframes: int | None = None) -> list[float]:
    """Keyframes every ``interval`` seconds over a segment ending at ``end``: the middle of each
    whole or final partial interval (a segment shorter than ``interval`` gets its middle). The
    one rule of ``/detect`` without keyframes, jobs and ``fbil-detect``. Beyond
    ``max_keyframes``: :class:`TooManyKeyframesError`, before any time is made."""
    count = keyframe_count(end, interval)
    if max_keyframes is not None and count > max_keyframes:
        raise TooManyKeyframesError(
            f"a {end:.2f} s video at keyframe_interval {interval:g} s has {count} keyframes, "
            f"the limit is {max_keyframes}: send a larger keyframe_interval (at least "
            f"{end / max_keyframes:.3g} s) or a shorter video",
            {"max_keyframes": max_keyframes, "keyframes": count},
        )
    # the final interval may be cut short by the segment's end
    return [(i * interval + min((i + 1) * interval, end)) / 2 for i in range(count)]


def needs_end(body: KeyframeRequest) -> bool:
    """Whether the keyframes of ``body`` depend on where the video ends (none given, or one
    given without a time: the middle of the segment)."""
    return body.keyframes is None or body.keyframes[0].time is None


def request_keyframes(
    body: KeyframeRequest, end: float | None, max_keyframes: int
) -> tuple[list[float], list[Sequence[BoxIn] | None]]:
    """The keyframe times of a request and each one's boxes (None: the people the detector
    finds): its ``keyframes`` (a time may be left out for a single keyframe: the middle of the
    segment ending at ``end``), else every ``keyframe_interval`` over it. More than
    ``max_keyframes``: :class:`TooManyKeyframesError`, counted before any time is made."""
    if body.keyframes is None:
        assert end is not None  # needs_end
        times = keyframe_times(end, body.keyframe_interval, max_keyframes)
        return times, [None] * len(times)
    if len(body.keyframes) > max_keyframes:
        raise TooManyKeyframesError(
            f"{len(body.keyframes)} keyframes requested, the limit is {max_keyframes}",
            {"max_keyframes": max_keyframes, "keyframes": len(body.keyframes)},
        )
    if any(k.time is None for k in body.keyframes):
        if len(body.keyframes) > 1:
            raise KeyframeOutOfRangeError(
                "a keyframe time may be omitted only for a single keyframe"
            )
        assert end is not None  # needs_end
        return [end / 2], [body.keyframes[0].boxes]
    return [float(k.time) for k in body.keyframes], [k.boxes for k in body.keyframes]  # type: ignore[arg-type]


@dataclass(frozen=True)
class KeyframePlan:
    """What a run does: keyframe ``times`` (ascending); each one's client boxes (None: the
    people the detector finds); the times the detector looks at to reach each (empty for a
    keyframe with boxes); and where each keyframe stood in the request (``order``)."""

    times: tuple[float, ...]
    given: tuple[tuple[BoxIn, ...] | None, ...]
    frames: tuple[tuple[float, ...], ...]
    order: tuple[int, ...]

    @property
    def detects(self) -> bool:
        return any(g is None for g in self.given)


def plan_keyframes(
    times: Sequence[float],
    given: Sequence[Sequence[BoxIn] | None],
    *,
    step_s: float,
    max_frames_per_gap: int,
    max_frames: int | None = None,
) -> KeyframePlan:
    """The plan of keyframes at ``times`` (any order) with boxes ``given`` (None: detect): in
    time order (ties keep the request's order), and the detector's frames between the
    keyframes it runs on (:func:`~fbil.model.tracking.plan_frames`: at most ``step_s``
    apart, ``max_frames_per_gap`` per keyframe, ``max_frames`` in all)."""
    order = sorted(range(len(times)), key=lambda i: times[i])
    ordered = [float(times[i]) for i in order]
    boxes = [None if given[i] is None else tuple(given[i]) for i in order]  # type: ignore[arg-type]
    detected = [k for k, b in enumerate(boxes) if b is None]
    planned = plan_frames(
        [ordered[k] for k in detected], step_s, max_frames_per_gap, max_total=max_frames
    )
    frames: list[tuple[float, ...]] = [()] * len(ordered)
    for k, looked_at in zip(detected, planned, strict=True):
        frames[k] = looked_at
    return KeyframePlan(tuple(ordered), tuple(boxes), tuple(frames), tuple(order))


def plan_from_settings(
    times: Sequence[float],
    given: Sequence[Sequence[BoxIn] | None],
    settings: Settings,
    *,
    whole_video: bool,
) -> KeyframePlan:
    """:func:`plan_keyframes` as the settings say: detector frames ``FBIL_TRACK_INTERVAL_S``
    apart, at most ``FBIL_MAX_DETECT_FRAMES`` per keyframe and, for a segment answered while
    the client waits (not a ``whole_video``), that many in all."""
    cap = settings.max_detect_frames
    return plan_keyframes(
        times,
        given,
        step_s=settings.track_interval_s,
        max_frames_per_gap=cap,
        max_frames=None if whole_video else cap,
    )


def job_plan(body: KeyframeRequest, times: Sequence[float], settings: Settings) -> KeyframePlan:
    """The plan of a whole video's keyframes at ``times`` (a job's, as stored) for ``body``."""
    given = [k.boxes for k in body.keyframes] if body.keyframes is not None else [None] * len(times)
    return plan_from_settings(times, given, settings, whole_video=True)


def require_detector(body: KeyframeRequest, detector: PersonDetector | None) -> None:
    """Keyframes without boxes need the person detector (off with ``FBIL_DETECTOR=none``):
    else :class:`BoxesRequiredError` pointing at what lacks boxes."""
    if detector is not None:
        return
    if body.keyframes is None:
        raise BoxesRequiredError(
            "the request has no keyframes and person detection is off (FBIL_DETECTOR=none): "
            "send keyframes with boxes",
            {"pointer": "/keyframes"},
        )
    for i, keyframe in enumerate(body.keyframes):
        if keyframe.boxes is None:
            raise BoxesRequiredError(
                f"keyframe {i} has no boxes and person detection is off (FBIL_DETECTOR=none)",
                {"pointer": f"/keyframes/{i}/boxes"},
            )


# --------------------------------------------------------------------------- actors


@dataclass(frozen=True)
class Actor:
    """A person on a keyframe: the answer's ``id`` and ``box`` (as sent, or a detected box in
    the request's format), the box ``norm`` alised for the model (float32 ``(4,)``), and
    where it came from."""

    id: str | int
    box: list[float]
    norm: np.ndarray
    source: Literal["client", "detector"] = "client"
    detection_score: float | None = None
    track_id: int | None = None


def client_actors(
    boxes: Sequence[BoxIn], box_format: BoxFormat, width: int, height: int, max_boxes: int
) -> list[Actor]:
    """A keyframe's client boxes as actors (400 ``bad_box``, 413 ``too_many_boxes``); an
    omitted ``id`` is the box's index."""
    norm = normalize_boxes([b.box for b in boxes], box_format, width, height, max_boxes=max_boxes)
    return [
        Actor(b.id if b.id is not None else j, list(b.box), norm[j]) for j, b in enumerate(boxes)
    ]


def shown_box(norm: np.ndarray, box_format: BoxFormat, width: int, height: int) -> list[float]:
    """A detected person's normalised box as the answer shows it (``box_format``)."""
    if box_format == "normalized":
        return [round(float(v), 5) for v in norm]
    scale = (width, height, width, height)
    return [round(float(v) * s, 1) for v, s in zip(norm, scale, strict=True)]


class ActorSource:
    """Each keyframe's actors: the boxes the request gave it, or the people the detector finds
    on the window's frames, followed by one :class:`~fbil.model.tracking.Tracker` through
    every keyframe of the run (a person keeps its track id). The detector also returns people
    scored from ``track_low_score`` up to the threshold: they may continue a track, and are
    never reported; a lost track keeps its id ``track_buffer_s`` (and is taken back by colour
    within ``track_reid_distance``). The best ``max_boxes``
    detected people are kept. What happens at a keyframe depends only on the tracker's state
    before it (:meth:`checkpoint`), so a run resumed after keyframe ``k`` with the state saved
    then gives the same boxes and track ids. Without a ``plan`` (a live source, keyframes
    without end) every keyframe's people are detected, and the tracker is ``tracker``'s."""

    def __init__(
        self,
        plan: KeyframePlan | None,
        options: KeyframeOptions,
        *,
        detector: PersonDetector | None,
        max_boxes: int,
        tracker: dict[str, Any] | None = None,
        cancel: threading.Event | None = None,
        track_low_score: float = 0.0,
        track_buffer_s: float = 1.0,
        track_reid_distance: float = REID_DISTANCE,
    ) -> None:
        if (plan is None or plan.detects) and detector is None:
            raise ValueError("the plan detects people, and there is no detector")
        self.plan, self.options = plan, options
        self.detector, self.max_boxes, self.cancel = detector, max_boxes, cancel
        self.low_score = track_low_score  # weak boxes down to it continue tracks
        frames = plan.frames if plan is not None else ()
        self.tracker = (
            Tracker.from_state(tracker)
            if tracker
            else tracker_for(frames, track_buffer_s, reid_distance=track_reid_distance)
        )
        self._last: list[Actor] = []  # the people of the last detected keyframe
        self._people, self._ids = PersonBoxes.none(), []  # of the last frame looked at
        self._states: dict[int, dict[str, Any]] = {}  # the tracker after keyframe k

    def detects(self, k: int) -> bool:
        """Whether keyframe ``k`` needs the detector (run it off the event loop)."""
        return self.plan is None or self.plan.given[k] is None

    def actors(self, k: int, window: Window) -> list[Actor]:
        """The actors of keyframe ``k`` of the plan, whose window is ``window``."""
        o, video = self.options, window.video
        given = None if self.plan is None else self.plan.given[k]
        if given is not None:
            return client_actors(given, o.box_format, video.width, video.height, self.max_boxes)
        if window.frames:
            self._last = self._detect(window)
        # else at the previous keyframe's time: the same frame, the same people
        self._states[k] = self.tracker.state()
        return self._last

    def _detect(self, window: Window) -> list[Actor]:
        o, video = self.options, window.video
        assert self.detector is not None  # require_detector
        # a frame at the time of the one looked at before is that frame (a video with fewer
        # frames than planned): looked at once
        frames = [f for f in window.frames if f.time != self.tracker.last_time]
        found: list[PersonBoxes] = []
        for start in range(0, len(frames), DETECT_CHUNK):
            if self.cancel is not None and self.cancel.is_set():
                raise DetectCancelledError("detection was cancelled")
            chunk = [f.rgb for f in frames[start : start + DETECT_CHUNK]]
            found.extend(self.detector.detect(chunk, min(self.low_score, o.person_threshold)))
        for frame, people in zip(frames, found, strict=True):
            ids = self.tracker.update(frame.time, people, frame.rgb, threshold=o.person_threshold)
            shown = int(np.count_nonzero(people.scores >= o.person_threshold))  # best first
            self._people = PersonBoxes(people.boxes[:shown], people.scores[:shown])
            self._ids = ids[:shown]
        people, ids = self._people, self._ids  # the keyframe's frame is the last looked at
        keep = min(len(people), self.max_boxes)  # best first
        return [
            Actor(
                track_id,
                shown_box(box, o.box_format, video.width, video.height),
                np.ascontiguousarray(box, dtype=np.float32),
                "detector",
                round(float(score), 4),
                track_id,
            )
            for box, score, track_id in zip(
                people.boxes[:keep], people.scores[:keep], ids[:keep], strict=True
            )
        ]

    def checkpoint(self, k: int) -> dict[str, Any] | None:
        """The tracker's state right after keyframe ``k`` (once; None when ``k`` detected
        nobody): what a run resumed at ``k + 1`` starts from."""
        return self._states.pop(k, None)


# --------------------------------------------------------------------------- answers


def keyframe_answer(
    time: float,
    actors: Sequence[Actor],
    scores: np.ndarray | None,
    labels: LabelMap,
    options: KeyframeOptions,
) -> KeyframeOut:
    """A keyframe as ``/detect`` answers it: each actor with its best ``top_k`` actions scored
    ``min_score`` or more (and every score with ``all_scores``); ``scores`` ``(n, C)``."""
    out = []
    for j, actor in enumerate(actors):
        assert scores is not None  # a keyframe with actors was scored
        row = scores[j]
        order = np.argsort(-row, kind="stable")[: options.top_k].tolist()
        actions = [
            ActionOut(id=labels[c].id, name=labels[c].name, score=float(row[c]))
            for c in order
            if float(row[c]) >= options.min_score
        ]
        out.append(
            ActorOut(
                id=actor.id,
                box=actor.box,
                source=actor.source,
                detection_score=actor.detection_score,
                track_id=actor.track_id,
                actions=actions,
                scores=row.tolist() if options.all_scores else None,
            )
        )
    return KeyframeOut(time=time, actors=out)


# --------------------------------------------------------------------------- the run


@dataclass
class RunReport:
    """What a run saw (``video``: from its first window) and what its keyframes cost, in
    seconds: waiting for decoded windows, detecting and tracking people (``detect``) and
    waiting for the detector's thread (``detect_wait``), the longest queue wait and the
    inference of the batches they ran in."""

    video: VideoInfo | None = None
    decode: float = 0.0
    detect: float = 0.0
    detect_wait: float = 0.0
    queue: float = 0.0
    batches: dict[int, float] = field(default_factory=dict)  # batch id -> inference seconds

    @property
    def inference(self) -> float:
        return sum(self.batches.values())


@dataclass(frozen=True)
class Answered:
    """A keyframe done: its ``index`` in the plan, its ``answer``, its ``actors`` and the
    tracker's state right after it (``tracker``: what a run resumed after it starts from;
    None when it detected nobody)."""

    index: int
    answer: KeyframeOut
    actors: Sequence[Actor]
    tracker: dict[str, Any] | None


OnKeyframe = Callable[[Answered], Awaitable[None]]
"""Called with each keyframe done, in time order."""


async def run_keyframes(
    engine: Engine,
    windows: Iterator[Window],
    source: ActorSource,
    options: KeyframeOptions,
    on_keyframe: OnKeyframe,
    *,
    start: int = 0,
    in_flight: int = 4,
    wait_if_full: bool = False,
) -> RunReport:
    """Answer the keyframes ``start:`` of ``source``'s plan from ``windows`` (theirs, in
    order): actors from ``source`` (on the engine's detector thread when it detects), scores
    from the engine, at most ``in_flight`` keyframes decoded and not yet answered. A full
    queue fails the run (:class:`~fbil.service.errors.OverloadedError`) unless
    ``wait_if_full`` (background work gives way to requests)."""
    timing = RunReport()
    labels = engine.metadata.labels
    pending: deque[tuple[int, Window, list[Actor], asyncio.Future[Scored | None]]] = deque()
    loop = asyncio.get_running_loop()

    async def score(window: Window, actors: list[Actor]) -> Scored | None:
        if not actors:
            return None
        boxes = np.stack([a.norm for a in actors])
        return await engine.score(window.clip.clip, boxes, wait_if_full=wait_if_full)

    async def find(k: int, window: Window) -> list[Actor]:
        if not source.detects(k):
            return source.actors(k, window)
        asked = clock.perf_counter()
        began: list[float] = []

        def work() -> list[Actor]:
            began.append(clock.perf_counter())
            return source.actors(k, window)

        actors = await loop.run_in_executor(engine.detect_pool, work)
        timing.detect_wait += began[0] - asked
        timing.detect += clock.perf_counter() - began[0]
        return actors

    async def emit() -> None:
        k, window, actors, future = pending.popleft()
        scored = await future
        if scored is not None:
            timing.queue = max(timing.queue, scored.queue_s)
            timing.batches[scored.batch_id] = scored.inference_s
        answer = keyframe_answer(
            window.clip.time, actors, None if scored is None else scored.scores, labels, options
        )
        await on_keyframe(Answered(k, answer, actors, source.checkpoint(k)))

    k = start
    try:
        while True:
            waited = clock.perf_counter()
            window = await asyncio.to_thread(next, windows, None)
            timing.decode += clock.perf_counter() - waited
            if window is None:
                break
            timing.video = timing.video or window.video
            actors = await find(k, window)
            pending.append((k, window, actors, asyncio.ensure_future(score(window, actors))))
            k += 1
            if len(pending) >= in_flight:
                await emit()
        while pending:
            await emit()
    finally:
        for *_, future in pending:
            future.cancel()
        close = getattr(windows, "close", None)
        if close is not None:
            await asyncio.to_thread(close)
    return timing


async def run_video(
    engine: Engine,
    video: Source,
    plan: KeyframePlan,
    options: KeyframeOptions,
    on_keyframe: OnKeyframe,
    *,
    limits: VideoLimits,
    in_flight: int,
    wait_if_full: bool,
    start: int = 0,
    tracker: dict[str, Any] | None = None,
    cancel: threading.Event | None = None,
    executor: Executor | None = None,
) -> RunReport:
    """Run the keyframes ``start:`` of ``plan`` over the file or bytes ``video``: one pass
    (:func:`~fbil.model.video.stream.stream_windows`, on ``executor`` or a thread of its own),
    an :class:`ActorSource` (its tracker from the state ``tracker`` when resuming) and
    :func:`run_keyframes`. What ``/detect``, a job and ``fbil-detect`` each run."""
    source = ActorSource(
        plan,
        options,
        detector=engine.detector,
        max_boxes=engine.settings.max_boxes_per_keyframe,
        tracker=tracker,
        cancel=cancel,
        track_low_score=engine.settings.track_low_score,
        track_buffer_s=engine.settings.track_buffer_s,
        track_reid_distance=engine.settings.track_reid_distance,
    )
    windows = stream_windows(
        video,
        plan.times[start:],
        engine.metadata.preprocess,
        limits,
        frame_times=plan.frames[start:],
        cancel=cancel,
        ahead=in_flight,
        executor=executor,
        # frames held for the detector at the size it needs, not the video's (a 4K request
        # would hold FBIL_MAX_DETECT_FRAMES full frames)
        frame_fit=getattr(engine.detector, "needed_size", None) if plan.detects else None,
    )
    return await run_keyframes(
        engine,
        windows,
        source,
        options,
        on_keyframe,
        start=start,
        in_flight=in_flight,
        wait_if_full=wait_if_full,
    )


def request_options(body: KeyframeRequest, settings: Settings) -> KeyframeOptions:
    """The :class:`KeyframeOptions` of a request document (``/detect``'s or a job's): an
    unset ``person_threshold`` is ``FBIL_PERSON_THRESHOLD``."""
    threshold = body.person_threshold
    return KeyframeOptions(
        person_threshold=settings.person_threshold if threshold is None else threshold,
        box_format=body.box_format,
        top_k=body.top_k,
        min_score=body.min_score,
        all_scores=body.all_scores,
    )
