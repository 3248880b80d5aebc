"""Whole videos to files, no server: what ``fbil-detect`` (and a cluster worker) runs per video.

:func:`detect_video` plans the video's keyframes as a job does (:mod:`fbil.service.keyframes`),
runs them through the one pipeline on an :class:`~fbil.service.engine.Engine`, and writes the
job's files: ``<name>.jsonl`` (one ``/detect`` keyframe per line), ``<name>.csv`` (AVA) and
``<name>.mp4`` (annotated), as asked. Each file is written beside its place and renamed into it
when complete, so a stopped run never leaves a partial file under a final name.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fbil.model.video import segment_end
from fbil.service.engine import Engine
from fbil.service.jobs.schemas import JobRequest
from fbil.service.keyframes import (
    Answered,
    job_plan,
    request_keyframes,
    request_options,
    require_detector,
    run_video,
)
from fbil.service.outputs import ava_csv, write_annotated_video

OUTPUT_SUFFIXES = {"json": ".jsonl", "ava_csv": ".csv", "video": ".mp4"}


@dataclass(frozen=True)
class VideoResult:
    """What :func:`detect_video` did with one video: its keyframes, seconds and files."""

    video: Path
    keyframes: int
    seconds: float
    files: tuple[Path, ...]


def output_paths(video: Path, out_dir: Path, outputs: Sequence[str]) -> list[Path]:
    """The files :func:`detect_video` writes for ``video`` into ``out_dir`` (named after it)."""
    return [out_dir / f"{video.stem}{OUTPUT_SUFFIXES[o]}" for o in outputs]


def csv_video_id(video: Path) -> str:
    """The AVA CSV's ``video_id`` of a file: its name, in the characters a job's allows."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", video.stem)[:128] or "video"


async def detect_video(
    engine: Engine,
    video: Path,
    out_dir: Path,
    request: JobRequest,
    *,
    on_keyframe: Callable[[int, int], None] | None = None,
) -> VideoResult:
    """Run ``video`` as a job with ``request`` would and write its files into ``out_dir``;
    ``on_keyframe(done, total)`` after each keyframe (progress)."""
    s = engine.settings
    require_detector(request, engine.detector)
    loop = asyncio.get_running_loop()
    started = loop.time()
    limits = s.job_video_limits()
    duration = await asyncio.to_thread(segment_end, video, limits)
    times, _ = request_keyframes(request, duration, s.job_max_keyframes)
    plan = job_plan(request, times, s)
    options = request_options(request, s)
    lines_path = out_dir / f"{video.stem}.jsonl"
    partial = _partial(lines_path)
    with partial.open("wb") as lines:

        async def write(done: Answered) -> None:
            line = json.dumps(done.answer.model_dump(mode="json"), separators=(",", ":"))
            lines.write(line.encode() + b"\n")
            if on_keyframe is not None:
                on_keyframe(done.index + 1, len(plan.times))

        report = await run_video(
            engine,
            video,
            plan,
            options,
            write,
            limits=limits,
            in_flight=s.job_max_clips_in_flight,
            wait_if_full=True,
        )
    info = report.video
    assert info is not None  # a video has at least one keyframe
    written = []
    if "ava_csv" in request.outputs:
        csv_path = out_dir / f"{video.stem}.csv"
        with partial.open("rb") as lines, _partial(csv_path).open("w") as f:
            f.writelines(
                ava_csv(lines, csv_video_id(video), options.box_format, info.width, info.height)
            )
        _partial(csv_path).replace(csv_path)
        written.append(csv_path)
    if "video" in request.outputs:
        mp4 = out_dir / f"{video.stem}.mp4"
        with partial.open("rb") as lines:
            await asyncio.to_thread(
                write_annotated_video,
                video,
                lines,
                options.box_format,
                info.width,
                info.height,
                mp4,
            )
        written.append(mp4)
    if "json" in request.outputs:
        partial.replace(lines_path)
        written.insert(0, lines_path)
    else:
        partial.unlink()
    return VideoResult(video, len(plan.times), loop.time() - started, tuple(written))


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")
