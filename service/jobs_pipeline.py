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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from fbil.model import LabelMap
from fbil.model.preprocess import PreprocessSpec
from fbil.model.stream import stream_clips
from fbil.model.video import Clip, VideoLimits
from fbil.service.boxes import normalize_boxes
from fbil.service.errors import NoPersonDetectorError
from fbil.service.jobs_schemas import JobRequest

Submit = Callable[[Tensor, Tensor], Awaitable[Tensor]]
"""One clip ``(3, T, H, W)`` and its boxes ``(n, 4)`` normalised -> scores ``(n, C)``."""


@dataclass(frozen=True)
class Actor:
    """A box on a keyframe: its id, the box as reported, and normalised ``(4,)``."""

    id: str | int
    box: list[float]
    norm: Tensor


class BoxSource(Protocol):
    """Where a keyframe's actors come from (client boxes, or detected and tracked people)."""

    def actors(self, index: int, clip: Clip) -> list[Actor]: ...


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


def box_source(request: JobRequest, width: int, height: int, max_boxes: int) -> BoxSource:
    """The job's boxes: the client's, else automatic ones (:class:`NoPersonDetectorError`
    while this service runs no person detector)."""
    if request.keyframes is not None:
        return ClientBoxes(request, width, height, max_boxes)
    raise NoPersonDetectorError(
        "this service runs no person detector: send `keyframes` with the actors' boxes"
    )


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
        out.append({"id": actor.id, "box": actor.box, "actions": actions})
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
) -> None:
    """Run keyframes ``start:`` of ``times`` and hand each result to ``on_keyframe`` in order."""
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
    try:
        while True:
            clip = await asyncio.to_thread(next, clips, None)
            if clip is None:
                break
            actors = boxes.actors(index, clip)
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
