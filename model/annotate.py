"""Drawing detections onto video frames: a keyframe's boxes with their track colour and top
actions, and the annotated video of a whole file (every displayed frame, drawn near keyframes).

Shared by ``fbil-demo`` (:mod:`fbil.client.demo`), the jobs' ``video`` output and
``fbil-detect``. :func:`render_video` takes the overlays in time order as an iterable and keeps
only those near the current frame, and reads the frames a bounded batch at a time: its memory
does not grow with the video.
"""

from __future__ import annotations

import colorsys
import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from fbil.model.video import Frame

WINDOW_S = 0.5  # a keyframe's drawings show on frames this close to it
TWEEN_GAP_S = 2.0  # tracked boxes move between keyframes at most this far apart
PALETTE = (
    (255, 64, 64),
    (64, 200, 255),
    (255, 220, 0),
    (80, 255, 80),
    (255, 96, 255),
    (255, 160, 32),
)
LINE = 2  # box outline width (pixels)
# annotated video: file suffix -> PyAV (FFmpeg) muxer; each takes VP9 (AVI: FFmpeg's mpeg4)
OUTPUT_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}
SHEET_SUFFIX = ".png"
DEFAULT_FPS = 30  # when the video states no frame rate
READ_BYTES = 128 * 1024 * 1024  # decoded RGB held at a time while rendering


@dataclass(frozen=True)
class Overlay:
    """What to draw for one keyframe: pixel boxes with their label lines."""

    time: float
    boxes: tuple[tuple[float, float, float, float], ...]
    labels: tuple[tuple[str, ...], ...]
    colours: tuple[int, ...] = ()  # PALETTE index per box (default: the box's index)
    tracks: tuple[int | None, ...] = ()  # track id per box (None: not tracked), for tweening

    def colour(self, i: int) -> tuple[int, int, int]:
        return track_colour(self.colours[i] if self.colours else i)


def track_colour(index: int) -> tuple[int, int, int]:
    """The colour of palette index ``index`` (a track id - 1): :data:`PALETTE` first, then hues
    a golden-ratio turn apart in three saturation/brightness steps, so that no two indices share
    a colour (with 6 colours, tracks 1 and 7 in one frame looked alike). The first 24 lie at
    least 56 apart in RGB."""
    if 0 <= index < len(PALETTE):
        return PALETTE[index]
    hue = (0.5 + index * 0.6180339887) % 1.0
    saturation, value = ((0.55, 1.0), (1.0, 0.8), (0.8, 0.6))[index % 3]
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
    return round(r * 255), round(g * 255), round(b * 255)


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


def draw(img: Image.Image, overlay: Overlay) -> None:
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


class Nearest:
    """The overlay nearest a frame's time (within ``WINDOW_S``; the first of equally near
    ones), for frames in time order, over ``overlays_`` in time order, read as needed. A
    tracked person's box moves between keyframes: on a frame between two keyframes at most
    ``TWEEN_GAP_S`` apart that both hold its track, the box is interpolated linearly between
    the two (labels stay the nearest keyframe's); other boxes are the nearest keyframe's."""

    def __init__(self, overlays_: Iterable[Overlay]) -> None:
        self._rest = iter(overlays_)
        self._near: deque[Overlay] = deque()
        self._ahead: Overlay | None = next(self._rest, None)

    def __call__(self, time: float) -> Overlay | None:
        reach = max(WINDOW_S, TWEEN_GAP_S) + 1e-6
        while self._ahead is not None and self._ahead.time <= time + reach:
            self._near.append(self._ahead)
            self._ahead = next(self._rest, None)
        while self._near and self._near[0].time < time - reach:
            self._near.popleft()
        near = [o for o in self._near if abs(o.time - time) <= WINDOW_S + 1e-6]
        if not near:
            return None
        nearest = min(near, key=lambda o: abs(o.time - time))
        before = [o for o in self._near if o.time <= time]
        after = [o for o in self._near if o.time > time]
        if not before or not after or after[0].time - before[-1].time > TWEEN_GAP_S + 1e-6:
            return nearest
        return tweened(nearest, before[-1], after[0], time)


def tweened(nearest: Overlay, before: Overlay, after: Overlay, time: float) -> Overlay:
    """``nearest`` with each tracked box that ``before`` and ``after`` both hold placed
    linearly between their boxes at ``time``."""
    if not nearest.tracks:
        return nearest
    start = {t: b for t, b in zip(before.tracks, before.boxes, strict=False) if t is not None}
    end = {t: b for t, b in zip(after.tracks, after.boxes, strict=False) if t is not None}
    f = (time - before.time) / (after.time - before.time)
    boxes = []
    for track, box in zip(nearest.tracks, nearest.boxes, strict=True):
        if track in start and track in end:
            a, b = start[track], end[track]
            box = tuple(a[i] + f * (b[i] - a[i]) for i in range(4))  # type: ignore[assignment]
        boxes.append(box)
    return Overlay(nearest.time, tuple(boxes), nearest.labels, nearest.colours, nearest.tracks)


# --------------------------------------------------------------------------- video


def displayed_frames(video: Path) -> tuple[int, int, Fraction, Iterator[Frame]]:
    """``(width, height, rate, frames)``: every frame of ``video`` as displayed, read at the
    nominal frame times (``i / fps``, the nearest decoded frame each) a bounded batch at a time."""
    from fbil.model.video import read_frames  # torch and the model's video layer, on demand

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


def render_video(video: Path, overlays_: Iterable[Overlay], out: Path) -> int:
    """Write ``out`` (VP9 by libvpx, BSD-licensed; in AVI FFmpeg's own mpeg4; never x264/x265,
    which are GPL; the container from its suffix, see
    :data:`OUTPUT_FORMATS`): every displayed frame of ``video``, drawn near keyframes
    (``overlays_`` in time order). Returns the number of frames."""
    width, height, rate, frames = displayed_frames(video)
    nearest = Nearest(overlays_)
    count = 0
    with av.open(str(out), "w", format=output_format(out)) as container:
        codec, options = video_codec(out)
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height = width // 2 * 2, height // 2 * 2
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            img = Image.fromarray(frame.rgb)
            overlay = nearest(frame.time)
            if overlay is not None:
                draw(img, overlay)
            picture = av.VideoFrame.from_image(img.crop((0, 0, stream.width, stream.height)))
            container.mux(stream.encode(picture))
            count += 1
        container.mux(stream.encode())
    return count


# VP9 plays in MP4, MOV and Matroska/WebM in every current browser; realtime settings keep
# encoding near decoding speed (the default "good" deadline is ~10x slower)
VP9_OPTIONS = {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "crf": "30", "b": "0"}


def video_codec(out: Path) -> tuple[str, dict[str, str]]:
    """The encoder (and its options) for the annotated video ``out``: ``libvpx-vp9`` (BSD), or
    FFmpeg's own ``mpeg4`` (LGPL) in AVI or where libvpx is missing; never libx264/libx265."""
    if output_format(out) != "avi":
        try:
            av.codec.Codec("libvpx-vp9", "w")
            return "libvpx-vp9", dict(VP9_OPTIONS)
        except (av.FFmpegError, ValueError):
            pass
    return "mpeg4", {}


def render_contact_sheet(
    video: Path, overlays_: Sequence[Overlay], out: Path, columns: int = 4
) -> tuple[int, int]:
    """A PNG grid (``columns`` wide) of each keyframe's displayed frame, drawn; returns its
    size."""
    from fbil.model.video import read_frames  # torch and the model's video layer, on demand

    if not overlays_:
        raise ValueError("no keyframe to put on the contact sheet")
    _, frames = read_frames(video, [o.time for o in overlays_])
    tiles = []
    for o, frame in zip(overlays_, frames, strict=True):
        img = Image.fromarray(frame.rgb)
        draw(img, o)
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


def output_format(path: Path) -> str:
    """The muxer of the annotated video ``path`` (by suffix); ValueError if unsupported."""
    try:
        return OUTPUT_FORMATS[path.suffix.lower()]
    except KeyError:
        raise ValueError(
            f"{path}: unsupported video format {path.suffix or '(no suffix)'!r}; "
            f"use {', '.join(OUTPUT_FORMATS)}"
        ) from None
