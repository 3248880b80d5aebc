"""``fbil-detect``: the long-video job pipeline in-process on files, no server.

Usage::

    fbil-detect VIDEO... --out DIR [--model PATH] [--request REQUEST.json]
                [--keyframe-interval 1.0]
                [--outputs json ava_csv video] [--top-k 5] [--min-score 0]
                [--person-threshold FBIL_PERSON_THRESHOLD]

Each video goes through what a ``POST /v1/jobs`` job runs (:mod:`fbil.service.batch` over
the one keyframe pipeline: one sequential decode, the person detector and tracker, the model
on the engine's batcher), with
the same ``FBIL_*`` settings as ``fbil-serve`` (model, backend, threads, tracking, limits), and
writes ``DIR/<video name>.jsonl`` (the job's results lines), ``.csv`` (AVA) and ``.mp4`` (the
annotated video) as asked, with a progress bar per video on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fbil.service.engine import Engine
    from fbil.service.jobs.schemas import JobRequest
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
    parser.add_argument(
        "--request",
        type=Path,
        help="a job's request document (JSON: keyframes with boxes, top_k, ...); the options "
        "below override its fields",
    )
    # unset options take the defaults of a job's request (one definition: JobRequest)
    parser.add_argument(
        "--keyframe-interval", type=float, help="seconds between keyframes (default 1.0)"
    )
    parser.add_argument(
        "--outputs", nargs="+", choices=OUTPUTS, help="files to write (default json ava_csv)"
    )
    parser.add_argument("--top-k", type=int, help="actions listed per person (default 5)")
    parser.add_argument("--min-score", type=float, help="actions below are left out (default 0)")
    parser.add_argument(
        "--person-threshold",
        type=float,
        help="the person detector's minimum score (default: FBIL_PERSON_THRESHOLD)",
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
    from fbil.service.engine import Engine
    from fbil.service.errors import ServiceError
    from fbil.service.jobs.schemas import JobRequest

    request = JobRequest.model_validate(_request_fields(args))
    engine = await asyncio.to_thread(Engine.load, settings)
    engine.start()
    failed = 0
    try:
        for video in args.videos:
            try:
                await _detect_one(engine, video, args.out, request)
            except (VideoError, ServiceError) as e:
                failed += 1
                print(f"fbil-detect: {video}: {e}", file=sys.stderr)
    finally:
        await engine.stop(wait_s=None)
    return 1 if failed else 0


async def _detect_one(engine: Engine, video: Path, out: Path, request: JobRequest) -> None:
    """One video with a progress bar on stderr."""
    from tqdm import tqdm

    from fbil.service.batch import detect_video

    with tqdm(desc=video.name, unit="keyframe", file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        await detect_video(engine, video, out, request, on_keyframe=progress)


def _request_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The job request's fields: ``--request``'s document, then the options given."""
    fields: dict[str, Any] = {"outputs": ["json", "ava_csv"]}
    if args.request is not None:
        try:
            document = json.loads(args.request.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"--request {args.request}: {e}") from e
        if not isinstance(document, dict):
            raise ValueError(f"--request {args.request}: not a JSON object")
        fields.update(document)
    given = {
        "keyframe_interval": args.keyframe_interval,
        "top_k": args.top_k,
        "min_score": args.min_score,
        "person_threshold": args.person_threshold,
        "outputs": args.outputs,
    }
    fields.update({k: v for k, v in given.items() if v is not None})
    return fields


def _fail(message: str, code: int) -> int:
    print(f"fbil-detect: error: {' '.join(message.split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
