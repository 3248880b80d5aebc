"""``fbil-demo``: draw the actions the service finds onto the video (like the MMAction2 and
PySlowFast demos).

Usage::

    fbil-demo VIDEO [--boxes BOXES.json] --out OUT.mp4 [--contact-sheet OUT.png]
              [--url http://127.0.0.1:8000] [--api-key KEY] [--top-k 3]
              [--keyframe-interval 1.0] [--person-threshold T]

``BOXES.json`` is the ``request`` document of ``POST /detect``; without it, the service's
person detector finds the people on keyframes every ``--keyframe-interval`` seconds and each is
drawn as ``#track_id`` in its track's colour, the same person alike on every keyframe. A video
longer than one ``/detect`` request takes goes to the service as a job (``/v1/jobs``).
Detections come from a running service (``--url``); without it, a private ``fbil-serve`` is
started on a free loopback port for the run (``--model``, default: the service's default
model), so both paths are the same HTTP API, spoken by :class:`~fbil.client.Client`. Frames
within 0.5 s of a keyframe show that keyframe's boxes with their top-k actions and scores; the
contact sheet is a grid of the keyframes' frames with the same drawings.

Boxes are in coordinates of the displayed picture, so the drawing is on displayed frames (the
video's display rotation applied, :func:`fbil.model.video.read_frames`); the annotated video
holds those frames upright and carries no rotation of its own. The output paths are checked
before anything is sent.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from fbil.client.client import Client
from fbil.client.errors import FBILError
from fbil.client.local import LocalServiceError, local_service
from fbil.client.schemas import DETECT_FIELDS, BoxFormat, DetectResult
from fbil.model.annotate import (
    OUTPUT_FORMATS,
    PALETTE,
    SHEET_SUFFIX,
    Overlay,
    label_positions,
    output_format,
    render_contact_sheet,
    render_video,
)

__all__ = [
    "OUTPUT_FORMATS",
    "PALETTE",
    "Overlay",
    "check_outputs",
    "label_positions",
    "main",
    "overlays",
    "render_contact_sheet",
    "render_video",
    "run",
]


def overlays(
    response: DetectResult, box_format: BoxFormat, width: int, height: int, top_k: int = 3
) -> list[Overlay]:
    """Overlays of a ``/detect`` result; boxes came in the request's ``box_format``
    (normalised ones are scaled to the displayed ``width`` x ``height``). A tracked person is
    coloured by its track id, so it looks the same on every keyframe."""
    scale = (width, height, width, height) if box_format == "normalized" else (1, 1, 1, 1)
    out = []
    for keyframe in response.keyframes:
        boxes, labels, colours, tracks = [], [], [], []
        for i, actor in enumerate(keyframe.actors):
            boxes.append(tuple(float(v) * s for v, s in zip(actor.box, scale, strict=True)))
            lines = [f"{a.name} {a.score:.2f}" for a in actor.actions[:top_k]]
            labels.append((f"#{actor.id}", *lines))
            colours.append(actor.track_id - 1 if actor.track_id is not None else i)
            tracks.append(actor.track_id)
        out.append(
            Overlay(keyframe.time, tuple(boxes), tuple(labels), tuple(colours), tuple(tracks))
        )
    return out


# --------------------------------------------------------------------------- outputs


def check_outputs(out: Path, contact_sheet: Path | None = None) -> None:
    """Fail now, before any detection, when an output has an unsupported format or cannot be
    written (ValueError, OSError with a one-line message)."""
    output_format(out)
    if contact_sheet is not None and contact_sheet.suffix.lower() != SHEET_SUFFIX:
        raise ValueError(f"{contact_sheet}: the contact sheet is a PNG, name it *{SHEET_SUFFIX}")
    for path in (out, contact_sheet):
        if path is not None:
            _check_writable(path)


def _check_writable(path: Path) -> None:
    existed = path.exists()
    try:
        with path.open("ab"):
            pass
    except OSError as e:
        raise OSError(f"cannot write {path}: {e.strerror or e}") from None
    if not existed:
        path.unlink()


# --------------------------------------------------------------------------- CLI


def run(
    video: Path,
    request: dict[str, Any],
    client: Client,
    out: Path,
    contact_sheet: Path | None = None,
    top_k: int = 3,
) -> DetectResult:
    """Detect (``request``: the fields of the ``/detect`` request document), then render the
    video (and the contact sheet); returns the result. A video longer than one ``/detect``
    request takes (413 ``too_many_keyframes`` or ``video_too_large``) goes through the jobs
    API instead (:func:`detect_as_job`)."""
    try:
        result = client.detect(video, **request)
    except FBILError as e:
        if e.code not in LONG_VIDEO_CODES:
            raise
        result = detect_as_job(client, video, request)
    meta = result.video
    drawn = overlays(result, request.get("box_format", "pixels"), meta.width, meta.height, top_k)
    render_video(video, drawn, out)
    if contact_sheet is not None:
        render_contact_sheet(video, drawn, contact_sheet)
    return result


LONG_VIDEO_CODES = ("too_many_keyframes", "video_too_large")  # /detect's "too long for me"
JOB_POLL_S = 0.5


def detect_as_job(client: Client, video: Path, request: dict[str, Any]) -> DetectResult:
    """The ``/detect`` result of ``request`` over the whole ``video``, made by a job
    (``POST /v1/jobs``: the long-video path), which is deleted once its results are read."""
    job = client.submit_job(video, {**request, "outputs": ["json"]})
    try:
        done = client.wait_job(job["id"], poll_s=JOB_POLL_S)
        if done["state"] != "succeeded":
            error = done.get("error") or {}
            raise FBILError(
                None,
                error.get("code", done["state"]),
                f"job {job['id']} {done['state']}: {error.get('message', '')}".strip(),
            )
        keyframes = client.job_results(job["id"])
    finally:
        with contextlib.suppress(FBILError):
            client.delete_job(job["id"])
    model = client.model_info()
    zero = dict.fromkeys(("decode", "detect", "queue", "inference", "total"), 0.0)
    return DetectResult.from_json(
        {
            "model": {"name": model.name, "version": model.version, "backend": model.backend},
            "video": {**done["video"], "fps": None, "duration": None},
            "keyframes": keyframes,
            "timing_ms": zero,
        }
    )


def read_request(path: Path) -> dict[str, Any]:
    """The ``/detect`` request document in ``path`` (JSON); ValueError for unknown fields."""
    request = json.loads(path.read_text())
    if not isinstance(request, dict):
        raise ValueError(f"{path}: not a /detect request (a JSON object)")
    unknown = sorted(set(request) - set(DETECT_FIELDS))
    if unknown:
        raise ValueError(f"{path}: unknown request fields {unknown}; known: {DETECT_FIELDS}")
    return request


def detect_request(args: argparse.Namespace) -> dict[str, Any]:
    """The request without ``--boxes``: keyframes every ``--keyframe-interval`` seconds, the
    people on them found by the service."""
    if not args.keyframe_interval > 0:
        raise ValueError(f"--keyframe-interval must be > 0, got {args.keyframe_interval}")
    request: dict[str, Any] = {"keyframe_interval": args.keyframe_interval}
    if args.person_threshold is not None:
        request["person_threshold"] = args.person_threshold
    return request


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fbil-demo", description="Draw the service's action detections onto a video."
    )
    parser.add_argument("video", type=Path)
    parser.add_argument(
        "--boxes",
        type=Path,
        help="the /detect request JSON (default: the people the service detects, tracked)",
    )
    parser.add_argument(
        "--keyframe-interval",
        type=float,
        default=1.0,
        help="without --boxes: seconds between keyframes",
    )
    parser.add_argument(
        "--person-threshold", type=float, help="without --boxes: the detector's score threshold"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help=f"annotated video ({', '.join(OUTPUT_FORMATS)})"
    )
    parser.add_argument("--contact-sheet", type=Path, help="PNG grid of the keyframes")
    parser.add_argument("--url", help="a running service, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model", help="without --url: model file for the private service")
    parser.add_argument("--api-key", help="sent as 'Authorization: Bearer KEY'")
    parser.add_argument("--top-k", type=int, default=3, help="actions shown per person")
    return parser


def main(argv: list[str] | None = None) -> int:
    """0 on success, 1 when detection fails, 2 for bad arguments, inputs or outputs (checked
    before anything is sent). Errors are one line on stderr."""
    args = build_parser().parse_args(argv)
    try:
        request = read_request(args.boxes) if args.boxes else detect_request(args)
        if not args.video.is_file():
            raise OSError(f"{args.video} is not a file")
        check_outputs(args.out, args.contact_sheet)
    except (OSError, ValueError) as e:
        return _fail(e, 2)
    try:
        with contextlib.ExitStack() as stack:
            url = args.url or stack.enter_context(local_service(args.model)).url
            client = stack.enter_context(Client(url, args.api_key))
            run(args.video, request, client, args.out, args.contact_sheet, args.top_k)
    except (FBILError, LocalServiceError) as e:
        return _fail(e, 1)
    print(f"wrote {args.out}" + (f" and {args.contact_sheet}" if args.contact_sheet else ""))
    return 0


def _fail(error: Exception, code: int) -> int:
    message = " ".join(str(error).split())  # one line
    print(f"fbil-demo: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
