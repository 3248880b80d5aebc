"""The files a whole video's results are offered as, besides its JSON lines (one keyframe of
``/detect``'s answer per line): the AVA CSV (:func:`ava_csv`) and the annotated MP4
(:func:`write_annotated_video`). Jobs and ``fbil-detect`` write the same files with these."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from fbil.model.annotate import Overlay, render_video

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
        boxes, labels, colours, tracks = [], [], [], []
        for i, actor in enumerate(keyframe["actors"]):
            boxes.append(tuple(float(v) * s for v, s in zip(actor["box"], scale, strict=True)))
            shown = [f"{a['name']} {a['score']:.2f}" for a in actor["actions"][:DRAWN_ACTIONS]]
            labels.append((f"#{actor['id']}", *shown))
            track = actor.get("track_id")
            colours.append(track - 1 if track is not None else i)
            tracks.append(track)
        yield Overlay(keyframe["time"], tuple(boxes), tuple(labels), tuple(colours), tuple(tracks))


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
    video_id = csv_text(video_id)
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
                        csv_text(actor["id"]),
                    )
                )


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets read as a formula


def csv_text(value: Any) -> Any:
    """A client's text made safe for a CSV cell (OWASP's CSV injection rule): a value starting
    with ``= + - @``, tab or CR gets a leading ``'`` (shown as text, never run as a formula),
    and line breaks are written as ``\\n`` / ``\\r`` so a line-based reader cannot be handed
    a forged row. Numbers pass unchanged; the JSON results keep the id as sent."""
    if not isinstance(value, str):
        return value
    text = value.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")
    return "'" + text if value.startswith(FORMULA_PREFIXES) else text


def _csv_row(values: Sequence[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()
