"""``fbil-demo``: draw the actions the service finds onto the video (like the MMAction2 and
PySlowFast demos).

Usage::

    fbil-demo VIDEO --boxes BOXES.json --out OUT.mp4 [--contact-sheet OUT.png]
              [--url http://127.0.0.1:8000] [--api-key KEY] [--top-k 3]

``BOXES.json`` is the ``request`` document of ``POST /detect``. Detections come from a running
service (``--url``); without it, a private ``fbil-serve`` is started on a free loopback port
for the run (``--model``, default: the service's default model), so both paths are the same
HTTP API. Library users can pass any :data:`Detect` callable to :func:`run`. Frames within
0.5 s of a keyframe show that keyframe's boxes with their top-k actions and scores; the contact
sheet is a grid of the keyframes' frames with the same drawings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import time as clock
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "Detect",
    "DetectError",
    "Overlay",
    "http_detector",
    "local_service",
    "main",
    "overlays",
    "render_contact_sheet",
    "render_video",
    "run",
]

Detect = Callable[[bytes, dict[str, Any]], dict[str, Any]]
"""``detect(video_bytes, request) -> response``: the ``POST /detect`` documents."""

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


class DetectError(RuntimeError):
    """The service answered with an error, or could not be reached."""


# --------------------------------------------------------------------------- detections


def http_detector(url: str, api_key: str | None = None, timeout: float = 300.0) -> Detect:
    """A :data:`Detect` that posts to ``{url}/detect`` (multipart ``video`` and ``request``)."""

    def detect(video: bytes, request: dict[str, Any]) -> dict[str, Any]:
        boundary = uuid.uuid4().hex
        body = _multipart(boundary, video, json.dumps(request))
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        req = urllib.request.Request(
            url.rstrip("/") + "/detect", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise DetectError(f"{url} answered {e.code}: {_error_message(e.read())}") from None
        except urllib.error.URLError as e:
            raise DetectError(f"cannot reach {url}: {e.reason}") from None

    return detect


def _multipart(boundary: str, video: bytes, request: str) -> bytes:
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="request"\r\n\r\n'
        f"{request}\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="video"; filename="video"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + video + f"\r\n--{boundary}--\r\n".encode()


def _error_message(body: bytes) -> str:
    try:
        error = json.loads(body)["error"]
        return f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- overlays


@dataclass(frozen=True)
class Overlay:
    """What to draw for one keyframe: pixel boxes with their label lines."""

    time: float
    boxes: tuple[tuple[float, float, float, float], ...]
    labels: tuple[tuple[str, ...], ...]


def overlays(
    response: dict[str, Any], box_format: str, width: int, height: int, top_k: int = 3
) -> list[Overlay]:
    """Overlays of a ``/detect`` response; boxes were echoed in the request's ``box_format``."""
    scale = (width, height, width, height) if box_format == "normalized" else (1, 1, 1, 1)
    out = []
    for keyframe in response["keyframes"]:
        boxes, labels = [], []
        for actor in keyframe["actors"]:
            boxes.append(tuple(float(v) * s for v, s in zip(actor["box"], scale, strict=True)))
            lines = [f"{a['name']} {a['score']:.2f}" for a in actor["actions"][:top_k]]
            labels.append((f"#{actor['id']}", *lines))
        out.append(Overlay(float(keyframe["time"]), tuple(boxes), tuple(labels)))
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
        draw.rectangle(box, outline=PALETTE[i % len(PALETTE)], width=LINE)
    for i, (text, (left, top, _, _), (w, h), (x, y)) in enumerate(
        zip(texts, bboxes, sizes, places, strict=True)
    ):
        draw.rectangle((x, y, x + w, y + h), fill=PALETTE[i % len(PALETTE)])
        draw.multiline_text((x + 2 - left, y + 2 - top), text, fill=(0, 0, 0), font=font)


def _nearest(overlays_: Sequence[Overlay], time: float) -> Overlay | None:
    near = [o for o in overlays_ if abs(o.time - time) <= WINDOW_S + 1e-6]
    return min(near, key=lambda o: abs(o.time - time)) if near else None


# --------------------------------------------------------------------------- video


def _frames(path: Path) -> Iterator[tuple[float, np.ndarray]]:
    """Decoded RGB frames with their time (seconds from the stream start)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        origin = stream.start_time
        for frame in container.decode(stream):
            pts = frame.pts if frame.pts is not None else 0
            origin = pts if origin is None else origin
            yield float((pts - origin) * stream.time_base), frame.to_ndarray(format="rgb24")


def _rate(path: Path) -> Any:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.average_rate or stream.guessed_rate or 30


def render_video(video: Path, overlays_: Sequence[Overlay], out: Path) -> int:
    """Write ``out`` (h264, else mpeg4): every frame of ``video``, drawn near keyframes.
    Returns the number of frames."""
    codec = _codec()
    count = 0
    with av.open(str(out), "w") as container:
        stream = container.add_stream(codec, rate=_rate(video))
        for time, rgb in _frames(video):
            if count == 0:
                stream.width, stream.height = rgb.shape[1] // 2 * 2, rgb.shape[0] // 2 * 2
                stream.pix_fmt = "yuv420p"
            img = Image.fromarray(rgb)
            overlay = _nearest(overlays_, time)
            if overlay is not None:
                _draw(img, overlay)
            frame = av.VideoFrame.from_image(img.crop((0, 0, stream.width, stream.height)))
            container.mux(stream.encode(frame))
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
    """A PNG grid (``columns`` wide) of each keyframe's nearest frame, drawn; returns its size."""
    best: list[tuple[float, np.ndarray] | None] = [None] * len(overlays_)
    for time, rgb in _frames(video):
        for i, o in enumerate(overlays_):
            if best[i] is None or abs(time - o.time) < abs(best[i][0] - o.time):  # type: ignore[index]
                best[i] = (time, rgb)
    tiles = []
    for o, found in zip(overlays_, best, strict=True):
        if found is None:
            continue
        img = Image.fromarray(found[1])
        _draw(img, o)
        ImageDraw.Draw(img).text((4, img.height - 14), f"t={o.time:g}s", fill=(255, 255, 255))
        tiles.append(img)
    if not tiles:
        raise ValueError("no keyframe to put on the contact sheet")
    cols = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    w, h = tiles[0].size
    sheet = Image.new("RGB", (cols * w, rows * h))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % cols) * w, (i // cols) * h))
    sheet.save(out, format="PNG")
    return sheet.size


@contextlib.contextmanager
def local_service(model: str | None = None, timeout_s: float = 180.0) -> Iterator[str]:
    """Run a private ``fbil-serve`` on a free loopback port until the block ends; yields its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, FBIL_HOST="127.0.0.1", FBIL_PORT=str(port), FBIL_LOG_LEVEL="warning")
    if model:
        env["FBIL_MODEL_PATH"] = model
    proc = subprocess.Popen([sys.executable, "-m", "fbil.service.cli"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = clock.monotonic() + timeout_s
        while not _ready(url):
            if proc.poll() is not None:
                raise DetectError(f"the local fbil-serve exited with code {proc.returncode}")
            if clock.monotonic() > deadline:
                raise DetectError(f"the local fbil-serve was not ready in {timeout_s:.0f} s")
            clock.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


# --------------------------------------------------------------------------- CLI


def run(
    video: Path,
    request: dict[str, Any],
    detect: Detect,
    out: Path,
    contact_sheet: Path | None = None,
    top_k: int = 3,
) -> dict[str, Any]:
    """Detect, then render the video (and the contact sheet); returns the response."""
    response = detect(video.read_bytes(), request)
    width, height = response["video"]["width"], response["video"]["height"]
    drawn = overlays(response, request.get("box_format", "pixels"), width, height, top_k)
    render_video(video, drawn, out)
    if contact_sheet is not None:
        render_contact_sheet(video, drawn, contact_sheet)
    return response


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fbil-demo", description="Draw the service's action detections onto a video."
    )
    parser.add_argument("video", type=Path)
    parser.add_argument("--boxes", type=Path, required=True, help="the /detect request JSON")
    parser.add_argument("--out", type=Path, required=True, help="annotated video (.mp4)")
    parser.add_argument("--contact-sheet", type=Path, help="PNG grid of the keyframes")
    parser.add_argument("--url", help="a running service, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model", help="without --url: model file for the private service")
    parser.add_argument("--api-key", help="sent as 'Authorization: Bearer KEY'")
    parser.add_argument("--top-k", type=int, default=3, help="actions shown per person")
    return parser


def main(argv: list[str] | None = None) -> int:
    """0 on success, 1 when detection fails, 2 for bad arguments or input files."""
    args = build_parser().parse_args(argv)
    try:
        request = json.loads(args.boxes.read_text())
        if not args.video.is_file():
            raise OSError(f"{args.video} is not a file")
    except (OSError, ValueError) as e:
        print(f"fbil-demo: error: {e}", file=sys.stderr)
        return 2
    try:
        with contextlib.ExitStack() as stack:
            url = args.url or stack.enter_context(local_service(args.model))
            run(args.video, request, http_detector(url, args.api_key), args.out,
                args.contact_sheet, args.top_k)  # fmt: skip
    except DetectError as e:
        print(f"fbil-demo: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}" + (f" and {args.contact_sheet}" if args.contact_sheet else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
