"""``fbil-demo``: draw the actions the service finds onto the video (like the MMAction2 and
PySlowFast demos).

Usage::

    fbil-demo VIDEO [--boxes BOXES.json] --out OUT.mp4 [--contact-sheet OUT.png]
              [--url http://127.0.0.1:8000] [--api-key KEY] [--top-k 3]
              [--keyframe-interval 1.0] [--person-threshold T]

``BOXES.json`` is the ``request`` document of ``POST /detect``; without it, the service's
person detector finds the people on keyframes every ``--keyframe-interval`` seconds and each is
drawn as ``#track_id`` in its track's colour, the same person alike on every keyframe.
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
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
from PIL import Image, ImageDraw, ImageFont

from fbil.client.client import Client
from fbil.client.errors import FBILError
from fbil.client.local import LocalServiceError, local_service
from fbil.client.schemas import DETECT_FIELDS, BoxFormat, DetectResult

if TYPE_CHECKING:
    from fbil.model.video import Frame

__all__ = [
    "OUTPUT_FORMATS",
    "Overlay",
    "check_outputs",
    "label_positions",
    "main",
    "overlays",
    "render_contact_sheet",
    "render_video",
    "run",
]

WINDOW_S = 0.5  # a keyframe's drawings show on frames this close to it
PALETTE = (
    (255, 64, 64),
    (64, 200, 255),
    (255, 220, 0),
    (80, 255, 80),
    (255, 96, 255),
    (255, 160, 32),
)
LINE = 2  # box outline width (pixels)
# annotated video: file suffix -> PyAV (FFmpeg) muxer; each takes h264 and mpeg4
OUTPUT_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}
SHEET_SUFFIX = ".png"
DEFAULT_FPS = 30  # when the video states no frame rate
READ_BYTES = 128 * 1024 * 1024  # decoded RGB held at a time while rendering


# --------------------------------------------------------------------------- overlays


@dataclass(frozen=True)
class Overlay:
    """What to draw for one keyframe: pixel boxes with their label lines."""

    time: float
    boxes: tuple[tuple[float, float, float, float], ...]
    labels: tuple[tuple[str, ...], ...]
    colours: tuple[int, ...] = ()  # PALETTE index per box (default: the box's index)

    def colour(self, i: int) -> tuple[int, int, int]:
        return PALETTE[(self.colours[i] if self.colours else i) % len(PALETTE)]


def overlays(
    response: DetectResult, box_format: BoxFormat, width: int, height: int, top_k: int = 3
) -> list[Overlay]:
    """Overlays of a ``/detect`` result; boxes came in the request's ``box_format``
    (normalised ones are scaled to the displayed ``width`` x ``height``). A tracked person is
    coloured by its track id, so it looks the same on every keyframe."""
    scale = (width, height, width, height) if box_format == "normalized" else (1, 1, 1, 1)
    out = []
    for keyframe in response.keyframes:
        boxes, labels, colours = [], [], []
        for i, actor in enumerate(keyframe.actors):
            boxes.append(tuple(float(v) * s for v, s in zip(actor.box, scale, strict=True)))
            lines = [f"{a.name} {a.score:.2f}" for a in actor.actions[:top_k]]
            labels.append((f"#{actor.id}", *lines))
            colours.append(actor.track_id - 1 if actor.track_id is not None else i)
        out.append(Overlay(keyframe.time, tuple(boxes), tuple(labels), tuple(colours)))
    return out


Rect = tuple[float, float, float, float]


def _overlap(a: Rect, b: Rect) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _covered(rect: Rect, rects: Sequence[Rect]) -> float:
    """Area of ``rect`` under ``rects`` (overlaps among ``rects`` counted twice)."""
    return sum(_overlap(rect, other) for other in rects)


def label_positions(
    boxes: Sequence[Rect], sizes: Sequence[tuple[float, float]], width: int, height: int
) -> list[tuple[float, float]]:
    """Top-left corners of the label boxes ``sizes[i] = (w, h)`` of ``boxes``, in order: each
    goes above its box, else below, right, left or inside the top, shifted into the image;
    the first place that covers no earlier label (nor another person's box) wins, else the one
    covering least."""
    placed: list[Rect] = []
    for i, ((x1, y1, x2, y2), (w, h)) in enumerate(zip(boxes, sizes, strict=True)):
        others = [b for j, b in enumerate(boxes) if j != i]
        candidates = []
        for cx, cy in ((x1, y1 - h), (x1, y2), (x2, y1), (x1 - w, y1), (x1, y1)):
            x = min(max(cx, 0.0), max(width - w, 0.0))
            y = min(max(cy, 0.0), max(height - h, 0.0))
            candidates.append((x, y, x + w, y + h))
        covering = [4 * _covered(r, placed) + _covered(r, others) for r in candidates]
        placed.append(candidates[covering.index(min(covering))])  # first of the least covering
    return [(rect[0], rect[1]) for rect in placed]


def _draw(img: Image.Image, overlay: Overlay) -> None:
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    texts = ["\n".join(lines) for lines in overlay.labels]
    bboxes = [draw.multiline_textbbox((0, 0), text, font=font) for text in texts]
    sizes = [(r - l + 4, b - t + 4) for l, t, r, b in bboxes]  # noqa: E741
    places = label_positions(overlay.boxes, sizes, img.width, img.height)
    for i, box in enumerate(overlay.boxes):
        draw.rectangle(box, outline=overlay.colour(i), width=LINE)
    for i, (text, (left, top, _, _), (w, h), (x, y)) in enumerate(
        zip(texts, bboxes, sizes, places, strict=True)
    ):
        draw.rectangle((x, y, x + w, y + h), fill=overlay.colour(i))
        draw.multiline_text((x + 2 - left, y + 2 - top), text, fill=(0, 0, 0), font=font)


def _nearest(overlays_: Sequence[Overlay], time: float) -> Overlay | None:
    near = [o for o in overlays_ if abs(o.time - time) <= WINDOW_S + 1e-6]
    return min(near, key=lambda o: abs(o.time - time)) if near else None


# --------------------------------------------------------------------------- video


def displayed_frames(video: Path) -> tuple[int, int, Fraction, Iterator[Frame]]:
    """``(width, height, rate, frames)``: every frame of ``video`` as displayed, read at the
    nominal frame times (``i / fps``, the nearest decoded frame each) a bounded batch at a time."""
    from fbil.model.video import read_frames  # PyAV and the model's video layer, on demand

    info, _ = read_frames(video, [0.0])
    if info.duration is None:
        raise ValueError(f"{video}: the video does not state its duration")
    fps = info.fps or DEFAULT_FPS
    count = max(1, round(info.duration * fps))
    batch = max(1, READ_BYTES // (info.width * info.height * 3))

    def frames() -> Iterator[Frame]:
        for start in range(0, count, batch):
            times = [i / fps for i in range(start, min(start + batch, count))]
            yield from read_frames(video, times)[1]

    return info.width, info.height, Fraction(fps).limit_denominator(1001), frames()


def render_video(video: Path, overlays_: Sequence[Overlay], out: Path) -> int:
    """Write ``out`` (h264, else mpeg4; the container from its suffix, see
    :data:`OUTPUT_FORMATS`): every displayed frame of ``video``, drawn near keyframes.
    Returns the number of frames."""
    width, height, rate, frames = displayed_frames(video)
    count = 0
    with av.open(str(out), "w", format=output_format(out)) as container:
        stream = container.add_stream(_codec(), rate=rate)
        stream.width, stream.height = width // 2 * 2, height // 2 * 2
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            img = Image.fromarray(frame.rgb)
            overlay = _nearest(overlays_, frame.time)
            if overlay is not None:
                _draw(img, overlay)
            picture = av.VideoFrame.from_image(img.crop((0, 0, stream.width, stream.height)))
            container.mux(stream.encode(picture))
            count += 1
        container.mux(stream.encode())
    return count


def _codec() -> str:
    try:
        av.codec.Codec("libx264", "w")
    except (av.FFmpegError, ValueError):
        return "mpeg4"
    return "libx264"


def render_contact_sheet(
    video: Path, overlays_: Sequence[Overlay], out: Path, columns: int = 4
) -> tuple[int, int]:
    """A PNG grid (``columns`` wide) of each keyframe's displayed frame, drawn; returns its
    size."""
    from fbil.model.video import read_frames  # PyAV and the model's video layer, on demand

    if not overlays_:
        raise ValueError("no keyframe to put on the contact sheet")
    _, frames = read_frames(video, [o.time for o in overlays_])
    tiles = []
    for o, frame in zip(overlays_, frames, strict=True):
        img = Image.fromarray(frame.rgb)
        _draw(img, o)
        ImageDraw.Draw(img).text((4, img.height - 14), f"t={o.time:g}s", fill=(255, 255, 255))
        tiles.append(img)
    cols = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    w, h = tiles[0].size
    sheet = Image.new("RGB", (cols * w, rows * h))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % cols) * w, (i // cols) * h))
    sheet.save(out, format="PNG")
    return sheet.size


# --------------------------------------------------------------------------- outputs


def output_format(path: Path) -> str:
    """The muxer of the annotated video ``path`` (by suffix); ValueError if unsupported."""
    try:
        return OUTPUT_FORMATS[path.suffix.lower()]
    except KeyError:
        raise ValueError(
            f"{path}: unsupported video format {path.suffix or '(no suffix)'!r}; "
            f"use {', '.join(OUTPUT_FORMATS)}"
        ) from None


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
    video (and the contact sheet); returns the result."""
    result = client.detect(video, **request)
    meta = result.video
    drawn = overlays(result, request.get("box_format", "pixels"), meta.width, meta.height, top_k)
    render_video(video, drawn, out)
    if contact_sheet is not None:
        render_contact_sheet(video, drawn, contact_sheet)
    return result


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
