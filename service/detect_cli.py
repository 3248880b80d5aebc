"""``fbil-detect``: the long-video job pipeline in-process on files, no server.

Usage::

    fbil-detect VIDEO... --out DIR [--model PATH] [--request REQUEST.json]
                [--keyframe-interval 1.0]
                [--outputs json ava_csv video] [--top-k 5] [--min-score 0]
                [--person-threshold FBIL_PERSON_THRESHOLD]
                [--ray [ADDRESS] [--workers 1] [--cpus-per-worker 1] [--gpus-per-worker 0]
                 [--retries 2]]

A VIDEO is a file, a glob (quoted: ``'archive/**/*.mp4'``), a ``.txt`` list with one path or
``http(s)`` URL a line, or a URL (:mod:`fbil.service.archive`).

Each video goes through what a ``POST /v1/jobs`` job runs (:mod:`fbil.service.batch` over
the one keyframe pipeline: one sequential decode, the person detector and tracker, the model
on the engine's batcher), with
the same ``FBIL_*`` settings as ``fbil-serve`` (model, backend, threads, tracking, limits), and
writes ``DIR/<video name>.jsonl`` (the job's results lines), ``.csv`` (AVA) and ``.mp4`` (the
annotated video) as asked, with a progress bar per video on stderr, and ``DIR/manifest.json``
(per video: status, keyframes, seconds, error code). A video that fails is recorded there and
the others go on; a rerun skips the videos the manifest has complete. ``--ray`` runs the videos
on a Ray cluster's workers instead (:mod:`fbil.service.cluster`, the ``fbil[ray]`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fbil.service.archive import VideoInput, VideoRecord
    from fbil.service.engine import Engine
    from fbil.service.jobs.schemas import JobRequest
    from fbil.service.settings import Settings

OUTPUTS = ("json", "ava_csv", "video")
LOCAL_RAY = "local"  # --ray without an address


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fbil-detect",
        description="Detect actions over whole videos in-process (the /v1/jobs pipeline).",
    )
    parser.add_argument(
        "videos", nargs="+", metavar="VIDEO", help="a file, glob, .txt list or http(s) URL"
    )
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
    ray = parser.add_argument_group("Ray cluster (pip install 'fbil[ray]')")
    ray.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL_RAY,
        metavar="ADDRESS",
        help="run the videos on Ray workers: no ADDRESS starts a local Ray, 'auto' joins the "
        "cluster this machine belongs to",
    )
    ray.add_argument("--workers", type=int, default=1, help="workers (actors), default 1")
    ray.add_argument(
        "--cpus-per-worker", type=float, default=1.0, help="CPUs each worker holds, default 1"
    )
    ray.add_argument(
        "--gpus-per-worker",
        type=float,
        default=0.0,
        help="GPUs each worker holds (0.5: two share one), default 0",
    )
    ray.add_argument(
        "--retries",
        type=int,
        default=2,
        help="tries again of a video whose worker died (killed, out of memory), default 2",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """0 when every video is done, 1 when one failed, 2 for bad arguments."""
    args = build_parser().parse_args(argv)
    from fbil.service.archive import InputError, expand_inputs

    try:
        videos = expand_inputs(args.videos)
    except InputError as e:
        return _fail(str(e), 2)
    if args.ray is not None:
        return _run_on_ray(args)
    from fbil.service.settings import Settings  # torch and PyAV only past --help

    overrides: dict[str, Any] = {"model_path": args.model} if args.model else {}
    settings = Settings(**overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(_run_all(args, videos, settings))
    except ValueError as e:
        return _fail(str(e), 2)


def _run_on_ray(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from fbil.service.cluster import RayMissingError, detect_archive, import_ray
    from fbil.service.jobs.schemas import JobRequest

    try:
        import_ray()
        request = JobRequest.model_validate(_request_fields(args))
    except RayMissingError as e:
        return _fail(str(e), 2)
    except (ValueError, ValidationError) as e:
        return _fail(str(e), 2)
    if args.workers < 1 or args.cpus_per_worker <= 0 or args.gpus_per_worker < 0:
        return _fail("--workers and --cpus-per-worker must be positive", 2)
    if args.retries < 0:
        return _fail("--retries must be 0 or more", 2)
    result = detect_archive(
        args.videos,
        args.out,
        request=request,
        model=args.model,
        address=None if args.ray == LOCAL_RAY else args.ray,
        workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
        retries=args.retries,
    )
    return _report(result)


def _report(result: dict[str, Any]) -> int:
    """One line on stderr: videos done, skipped, failed (with their codes); 1 if one failed."""
    failed = result["failed"]
    codes = ", ".join(f"{stem}: {code}" for stem, code in sorted(failed.items()))
    print(
        f"fbil-detect: {result['done']} of {result['videos']} videos done "
        f"({result['skipped']} complete before), {len(failed)} failed"
        + (f" ({codes})" if codes else ""),
        file=sys.stderr,
    )
    return 1 if failed else 0


async def _run_all(args: argparse.Namespace, videos: list[VideoInput], settings: Settings) -> int:
    from fbil.service.archive import Manifest, summary
    from fbil.service.engine import Engine
    from fbil.service.jobs.schemas import JobRequest

    request = JobRequest.model_validate(_request_fields(args))
    manifest = Manifest.load(args.out)
    todo = manifest.pending(videos, request)
    if todo:
        engine = await asyncio.to_thread(Engine.load, settings)
        engine.start()
        try:
            for video in todo:
                record = await _detect_one(engine, video, args.out, request)
                manifest.record(video.stem, record)
                if record.status != "done":
                    print(f"fbil-detect: {video.source}: {record.message}", file=sys.stderr)
        finally:
            await engine.stop(wait_s=None)
    return _report({**summary(manifest, videos), "skipped": len(videos) - len(todo)})


async def _detect_one(
    engine: Engine, video: VideoInput, out: Path, request: JobRequest
) -> VideoRecord:
    """One video with a progress bar on stderr."""
    from tqdm import tqdm

    from fbil.service.archive import process_video

    with tqdm(desc=video.stem, unit="keyframe", file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        return await process_video(engine, video, out, request, on_keyframe=progress)


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
