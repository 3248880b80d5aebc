"""``fbil-detect``: the long-video job pipeline in-process on files, no server.

Usage::

    fbil-detect VIDEO... --out DIR [--model PATH] [--keyframe-interval 1.0]
                [--outputs json ava_csv video] [--top-k 5] [--min-score 0]
                [--person-threshold 0.5]

Each video goes through what a ``POST /v1/jobs`` job runs (:mod:`fbil.service.jobs_pipeline`:
one sequential decode, the person detector and tracker, the model on the same batcher), with
the same ``FBIL_*`` settings as ``fbil-serve`` (model, backend, threads, tracking, limits), and
writes ``DIR/<video name>.jsonl`` (the job's results lines), ``.csv`` (AVA) and ``.mp4`` (the
annotated video) as asked, with a progress bar per video on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

    from fbil.model.persons import PersonDetector
    from fbil.service.batching import Batcher
    from fbil.service.jobs_schemas import JobRequest
    from fbil.service.runtimes import Runtime
    from fbil.service.settings import Settings

OUTPUTS = ("json", "ava_csv", "video")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fbil-detect",
        description="Detect actions over whole videos in-process (the /v1/jobs pipeline).",
    )
    parser.add_argument("videos", type=Path, nargs="+", metavar="VIDEO")
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    parser.add_argument("--model", type=Path, help="model file (default: FBIL_MODEL_PATH's)")
    parser.add_argument("--keyframe-interval", type=float, default=1.0, help="seconds")
    parser.add_argument(
        "--outputs", nargs="+", choices=OUTPUTS, default=["json", "ava_csv"], help="files to write"
    )
    parser.add_argument("--top-k", type=int, default=5, help="actions listed per person")
    parser.add_argument("--min-score", type=float, default=0.0, help="actions below are left out")
    parser.add_argument(
        "--person-threshold", type=float, default=0.5, help="the person detector's minimum score"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """0 when every video is done, 1 when one failed, 2 for bad arguments."""
    args = build_parser().parse_args(argv)
    for video in args.videos:
        if not video.is_file():
            return _fail(f"{video} is not a file", 2)
    from fbil.service.settings import Settings  # torch and PyAV only past --help

    overrides: dict[str, Any] = {"model_path": args.model} if args.model else {}
    settings = Settings(**overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(_run_all(args, settings))
    except ValueError as e:
        return _fail(str(e), 2)


async def _run_all(args: argparse.Namespace, settings: Settings) -> int:
    from fbil.model.video import VideoError
    from fbil.service.batching import Batcher
    from fbil.service.errors import ServiceError
    from fbil.service.jobs_schemas import JobRequest
    from fbil.service.people import load_detector
    from fbil.service.runtimes import runtime_from_settings

    request = JobRequest.model_validate(
        {
            "keyframe_interval": args.keyframe_interval,
            "top_k": args.top_k,
            "min_score": args.min_score,
            "person_threshold": args.person_threshold,
            "outputs": args.outputs,
        }
    )
    s = settings
    runtime = runtime_from_settings(s)
    detector = load_detector(s)
    batcher = Batcher(
        runtime.predict,
        max_batch_size=s.max_batch_size,
        max_batch_delay_ms=s.max_batch_delay_ms,
        max_queue_size=s.max_queue_size,
    )
    batcher.start()
    failed = 0
    try:
        for video in args.videos:
            try:
                await detect_video(video, args.out, request, s, runtime, detector, batcher)
            except (VideoError, ServiceError) as e:
                failed += 1
                print(f"fbil-detect: {video}: {e}", file=sys.stderr)
    finally:
        await batcher.stop()
    return 1 if failed else 0


async def detect_video(
    video: Path,
    out_dir: Path,
    request: JobRequest,
    settings: Settings,
    runtime: Runtime,
    detector: PersonDetector | None,
    batcher: Batcher,
) -> None:
    """Run one video through the job pipeline and write its files into ``out_dir`` (named
    after the video; the CSV's ``video_id`` is its name too)."""
    from tqdm import tqdm

    from fbil.model.stream import keyframe_times
    from fbil.model.video import probe, segment_end
    from fbil.service.jobs_pipeline import (
        DetectedPeople,
        ava_csv,
        box_source,
        run_keyframes,
        write_annotated_video,
    )

    s = settings
    limits = s.job_video_limits()
    info = await asyncio.to_thread(probe, video, limits)
    duration = await asyncio.to_thread(segment_end, video, limits)
    times = keyframe_times(duration, request.keyframe_interval)
    people = None
    if detector is not None:

        def people() -> DetectedPeople:
            return DetectedPeople(
                video,
                times,
                0,
                detector,
                request=request,
                width=info.width,
                height=info.height,
                max_boxes=s.max_boxes_per_keyframe,
                step_s=s.track_interval_s,
                max_frames=s.max_detect_frames,
                limits=limits,
            )

    boxes = box_source(request, info.width, info.height, s.max_boxes_per_keyframe, people)
    lines_path = out_dir / f"{video.stem}.jsonl"

    async def submit(clip: Tensor, rois: Tensor) -> Tensor:
        (result,) = await batcher.submit([clip], [rois])
        return result.scores

    with (
        lines_path.open("wb") as lines,
        tqdm(total=len(times), desc=video.name, unit="keyframe", file=sys.stderr) as bar,
    ):

        async def on_keyframe(keyframe: dict[str, Any]) -> None:
            lines.write((json.dumps(keyframe, separators=(",", ":")) + "\n").encode())
            bar.update(1)

        await run_keyframes(
            video,
            times,
            0,
            runtime.metadata.preprocess,
            limits,
            boxes,
            submit,
            on_keyframe,
            labels=runtime.metadata.labels,
            request=request,
            in_flight=s.job_max_clips_in_flight,
        )
    if "ava_csv" in request.outputs:
        with lines_path.open("rb") as lines, (out_dir / f"{video.stem}.csv").open("w") as f:
            video_id = re.sub(r"[^A-Za-z0-9._-]", "_", video.stem)[:128] or "video"
            f.writelines(ava_csv(lines, video_id, request.box_format, info.width, info.height))
    if "video" in request.outputs:
        with lines_path.open("rb") as lines:
            await asyncio.to_thread(
                write_annotated_video,
                video,
                lines,
                request.box_format,
                info.width,
                info.height,
                out_dir / f"{video.stem}.mp4",
            )
    if "json" not in request.outputs:
        lines_path.unlink()


def _fail(message: str, code: int) -> int:
    print(f"fbil-detect: error: {' '.join(message.split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
