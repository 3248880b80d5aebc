"""The per-keyframe pipeline of a long video, shared by server jobs and ``fbil-detect``.

One sequential decode (:func:`fbil.model.stream.stream_clips`) feeds the keyframes' clips, with
their boxes from a :class:`BoxSource`, to a ``submit`` coroutine (the service's batcher, or a
runtime in-process); at most ``in_flight`` clips are submitted and not yet answered, so a job
never fills the batcher's queue and interactive requests wait behind a few clips at most. Each
keyframe's result (the shape of a keyframe of ``/detect``'s response) goes to ``on_keyframe`` in
time order.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from fbil.model import LabelMap
from fbil.model.annotate import Overlay, render_video
from fbil.model.persons import PersonDetector
from fbil.model.preprocess import PreprocessSpec
from fbil.model.stream import stream_clips
from fbil.model.tracking import FramePlan, Tracker, plan_frames, track_people
from fbil.model.video import Clip, Frame, VideoLimits, read_frames
from fbil.service.boxes import normalize_boxes
from fbil.service.errors import NoPersonDetectorError
from fbil.service.jobs_schemas import JobRequest
from fbil.service.people import box_out

Submit = Callable[[Tensor, Tensor], Awaitable[Tensor]]
"""One clip ``(3, T, H, W)`` and its boxes ``(n, 4)`` normalised -> scores ``(n, C)``."""


@dataclass(frozen=True)
class Actor:
    """A box on a keyframe: its id, the box as reported, and normalised ``(4,)``."""

    id: str | int
    box: list[float]
    norm: Tensor
    shown: dict[str, Any] = field(default_factory=dict)  # more fields of the answer's actor


class BoxSource(Protocol):
    """Where a keyframe's actors come from (client boxes, or detected and tracked people).
    ``actors`` is called for the keyframes in order, off the event loop."""

    def actors(self, index: int, clip: Clip) -> list[Actor]: ...

    def checkpoint(self, index: int) -> dict[str, Any] | None:
        """What a resumed job needs to go on alike after keyframe ``index`` (once asked)."""
        ...


class ClientBoxes:
    """The boxes the job's request gave for each keyframe, validated up front."""

    def __init__(
        self, request: JobRequest, width: int, height: int, max_boxes: int | None = None
    ) -> None:
        assert request.keyframes is not None
        self._actors = []
        for keyframe in request.keyframes:
            norm = normalize_boxes(
                [b.box for b in keyframe.boxes],
                request.box_format,
                width,
                height,
                max_boxes=max_boxes,
            )
            self._actors.append(
                [
                    Actor(b.id if b.id is not None else j, list(b.box), norm[j])
                    for j, b in enumerate(keyframe.boxes)
                ]
            )

    def actors(self, index: int, clip: Clip) -> list[Actor]:
        return self._actors[index]

    def checkpoint(self, index: int) -> dict[str, Any] | None:
        return None


READ_AHEAD_KEYFRAMES = 8  # the side pass reads the frames of this many keyframes at a time


class DetectedPeople:
    """People the detector finds on each keyframe, followed through the whole video.

    For keyframe ``k`` the detector looks at its frame and at frames between keyframe ``k-1``
    and it (at most ``step_s`` apart, at most ``max_frames`` per gap:
    :func:`~fbil.model.tracking.plan_frames`, as ``/detect`` does), all in one detector call,
    and one :class:`~fbil.model.tracking.Tracker` joins them, so a person keeps its track id
    from the first keyframe to the last. The frames come from a side pass over the file
    (:func:`~fbil.model.video.read_frames`, the frames of ``READ_AHEAD_KEYFRAMES`` keyframes
    at a time: bounded memory). What happens for a keyframe depends only on the tracker's
    state before it (:meth:`checkpoint`), so a job resumed from ``start`` with the state
    checkpointed after keyframe ``start - 1`` gives the same boxes and track ids.
    """

    def __init__(
        self,
        video: Path,
        times: Sequence[float],
        start: int,
        detector: PersonDetector,
        *,
        request: JobRequest,
        width: int,
        height: int,
        max_boxes: int,
        step_s: float,
        max_frames: int,
        limits: VideoLimits,
        tracker: dict[str, Any] | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.detector, self.request = detector, request
        self.width, self.height, self.max_boxes = width, height, max_boxes
        self.cancel = cancel
        self._plans = [
            plan_frames([times[k - 1], times[k]], step_s, max_frames).times[1:] if k else (t,)
            for k, t in enumerate(times)
        ]
        if tracker is not None:
            self.tracker = Tracker.from_state(tracker)
        else:  # a track lives at least 1.5 gaps between the frames looked at
            widest = max(
                (b - a for p in self._plans for a, b in zip(p, p[1:], strict=False)), default=0.0
            )
            spans = [(p[0] - times[k - 1]) for k, p in enumerate(self._plans) if k]
            self.tracker = Tracker(max_age_s=max(1.0, 1.5 * max([widest, *spans])))
        self._frames = self._read(video, start, limits)
        self._next = start
        self._checkpoints: dict[int, dict[str, Any]] = {}

    def _read(self, video: Path, start: int, limits: VideoLimits) -> Iterator[list[Frame]]:
        for first in range(start, len(self._plans), READ_AHEAD_KEYFRAMES):
            plans = self._plans[first : first + READ_AHEAD_KEYFRAMES]
            _, frames = read_frames(
                video, [t for p in plans for t in p], limits, cancel=self.cancel
            )
            for plan in plans:
                yield frames[: len(plan)]
                frames = frames[len(plan) :]

    def actors(self, index: int, clip: Clip) -> list[Actor]:
        if index != self._next:
            raise ValueError(f"keyframe {index} asked for, {self._next} comes next")
        self._next += 1
        frames = next(self._frames)
        plan = FramePlan(tuple(f.time for f in frames), (len(frames) - 1,))
        (found,) = track_people(
            [(f.time, f.rgb) for f in frames],
            plan,
            self.detector,
            self.request.person_threshold,
            chunk=len(frames),
            cancel=self.cancel,
            tracker=self.tracker,
        )
        self._checkpoints[index] = self.tracker.state()
        keep = min(len(found.people), self.max_boxes)  # best first
        boxes = np.ascontiguousarray(found.people.boxes[:keep], dtype=np.float32)
        fmt = self.request.box_format
        return [
            Actor(
                track_id,
                box_out(box, fmt, self.width, self.height),
                torch.from_numpy(box.copy()),
                {
                    "source": "detector",
                    "detection_score": round(float(score), 4),
                    "track_id": track_id,
                },
            )
            for box, score, track_id in zip(
                boxes, found.people.scores[:keep], found.track_ids[:keep], strict=True
            )
        ]

    def checkpoint(self, index: int) -> dict[str, Any] | None:
        return self._checkpoints.pop(index, None)


def box_source(
    request: JobRequest,
    width: int,
    height: int,
    max_boxes: int,
    people: Callable[[], BoxSource] | None = None,
) -> BoxSource:
    """The job's boxes: the client's, else ``people()`` (automatic boxes and tracks;
    :class:`NoPersonDetectorError` while this service runs no person detector)."""
    if request.keyframes is not None:
        return ClientBoxes(request, width, height, max_boxes)
    if people is None:
        raise NoPersonDetectorError(
            "this service runs no person detector: send `keyframes` with the actors' boxes"
        )
    return people()


def job_times(request: JobRequest, duration: float, interval_times: Sequence[float]) -> list[float]:
    """The keyframe times of a job: the client's, else every ``keyframe_interval``."""
    if request.keyframes is not None:
        return [float(k.time) if k.time is not None else duration / 2 for k in request.keyframes]
    return list(interval_times)


def keyframe_result(
    time: float, actors: list[Actor], scores: Tensor | None, labels: LabelMap, request: JobRequest
) -> dict[str, Any]:
    """A keyframe as ``/detect`` answers it: actors with their best actions."""
    out = []
    for j, actor in enumerate(actors):
        assert scores is not None
        row = scores[j]
        order = torch.argsort(row, descending=True, stable=True)[: request.top_k].tolist()
        actions = [
            {"id": labels[c].id, "name": labels[c].name, "score": float(row[c])}
            for c in order
            if float(row[c]) >= request.min_score
        ]
        out.append({"id": actor.id, "box": actor.box, **actor.shown, "actions": actions})
    return {"time": time, "actors": out}


async def run_keyframes(
    video: Path,
    times: Sequence[float],
    start: int,
    spec: PreprocessSpec,
    limits: VideoLimits,
    boxes: BoxSource,
    submit: Submit,
    on_keyframe: Callable[[dict[str, Any]], Awaitable[None]],
    *,
    labels: LabelMap,
    request: JobRequest,
    in_flight: int = 4,
    cancel: threading.Event | None = None,
    executor: Executor | None = None,
) -> None:
    """Run keyframes ``start:`` of ``times`` and hand each result to ``on_keyframe`` in order
    (the boxes are found on ``executor``: the detector's threads, default asyncio's)."""
    clips = stream_clips(video, times[start:], spec, limits, cancel=cancel, ahead=in_flight)
    pending: deque[tuple[Clip, list[Actor], asyncio.Future[Tensor | None]]] = deque()

    async def score(clip: Clip, actors: list[Actor]) -> Tensor | None:
        if not actors:
            return None
        return await submit(clip.clip, torch.stack([a.norm for a in actors]))

    async def emit() -> None:
        clip, actors, future = pending.popleft()
        await on_keyframe(keyframe_result(clip.time, actors, await future, labels, request))

    index = start
    loop = asyncio.get_running_loop()
    try:
        while True:
            clip = await asyncio.to_thread(next, clips, None)
            if clip is None:
                break
            actors = await loop.run_in_executor(executor, boxes.actors, index, clip)
            index += 1
            pending.append((clip, actors, asyncio.ensure_future(score(clip, actors))))
            if len(pending) >= in_flight:
                await emit()
        while pending:
            await emit()
    finally:
        for _, _, future in pending:
            future.cancel()
        await asyncio.to_thread(clips.close)


# --------------------------------------------------------------------------- annotated video

DRAWN_ACTIONS = 3  # actions drawn per person (as fbil-demo's default --top-k)


def keyframe_overlays(
    lines: Iterable[bytes], box_format: str, width: int, height: int
) -> Iterator[Overlay]:
    """What the annotated video draws for each results line, in order: the actors' boxes in
    displayed pixels, ``#id`` and the top actions, a tracked person in its track's colour (as
    fbil-demo draws a ``/detect`` result)."""
    scale = (width, height, width, height) if box_format == "normalized" else (1, 1, 1, 1)
    for line in lines:
        keyframe = json.loads(line)
        boxes, labels, colours = [], [], []
        for i, actor in enumerate(keyframe["actors"]):
            boxes.append(tuple(float(v) * s for v, s in zip(actor["box"], scale, strict=True)))
            shown = [f"{a['name']} {a['score']:.2f}" for a in actor["actions"][:DRAWN_ACTIONS]]
            labels.append((f"#{actor['id']}", *shown))
            track = actor.get("track_id")
            colours.append(track - 1 if track is not None else i)
        yield Overlay(keyframe["time"], tuple(boxes), tuple(labels), tuple(colours))


def write_annotated_video(
    video: Path, lines: Iterable[bytes], box_format: str, width: int, height: int, out: Path
) -> int:
    """Render the annotated MP4 of ``video`` with the results ``lines`` to ``out`` (through a
    temporary file renamed at the end: a stopped render leaves no partial video); frames."""
    partial = out.with_name(out.name + ".partial.mp4")
    count = render_video(video, keyframe_overlays(lines, box_format, width, height), partial)
    partial.replace(out)
    return count


# --------------------------------------------------------------------------- AVA CSV

CSV_HEADER = ("video_id", "timestamp", "x1", "y1", "x2", "y2", "action_id", "score", "track_id")


def ava_csv(
    lines: Iterable[bytes],
    video_id: str,
    box_format: str,
    width: int,
    height: int,
    header: bool = False,
) -> Iterator[str]:
    """AVA detections rows (``video_id, timestamp, x1, y1, x2, y2, action_id, score``, boxes
    normalised, plus the track id) of the results' JSON lines, one row per reported action."""
    scale = (1.0, 1.0, 1.0, 1.0) if box_format == "normalized" else (width, height) * 2
    if header:
        yield _csv_row(CSV_HEADER)
    for line in lines:
        keyframe = json.loads(line)
        for actor in keyframe["actors"]:
            box = [min(max(v / s, 0.0), 1.0) for v, s in zip(actor["box"], scale, strict=True)]
            for action in actor["actions"]:
                yield _csv_row(
                    (
                        video_id,
                        f"{keyframe['time']:.3f}",
                        *(f"{v:.4f}" for v in box),
                        action["id"],
                        f"{action['score']:.6f}",
                        actor["id"],
                    )
                )


def _csv_row(values: Sequence[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()
