"""Typed readers for the AVA v2.2 file formats and the published FBIL/ACAR annotation pickles.

Formats (all CSV files have no header row):

* label map ``.pbtxt``: ``item { name: "..." id: N }`` or
  ``label { name: "..." label_id: N ... }``, parsed line by line exactly like the official
  evaluator (see :func:`read_labelmap`).
* annotation CSV: ``video_id,timestamp,x1,y1,x2,y2,action_id[,person_id]``, boxes normalised
  to 0..1.
* excluded-timestamps CSV: ``video_id,timestamp``.
* person-proposal CSV: ``video_id,timestamp,x1,y1,x2,y2,action_id,score`` where ``action_id`` is
  usually empty (``...,0.912,,0.998``); with an action column a box repeats once per action.
* annotation pickle of the published code: ``(records, classes)``
  (see :func:`read_published_pickle`).

A frame is identified by ``(video_id, timestamp)``; the evaluator's string form is
:func:`image_key`.
"""

from __future__ import annotations

import csv
import io
import math
import pickle
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "LAYOUT_IMAGE_06D",
    "LAYOUT_IMG_05D",
    "AnnotatedFrame",
    "AvaFormatError",
    "Box",
    "CsvRow",
    "FrameKey",
    "FrameLayout",
    "PersonAnnotation",
    "Proposal",
    "PublishedAnnotations",
    "PublishedBox",
    "PublishedRecord",
    "image_key",
    "iter_box_csv",
    "read_annotations_csv",
    "read_exclusions",
    "read_labelmap",
    "read_proposals_csv",
    "read_published_pickle",
]

Box = tuple[float, float, float, float]
"""``(x1, y1, x2, y2)``, normalised to 0..1 by frame width and height."""


class AvaFormatError(ValueError):
    """A file does not follow the expected AVA / annotation-pickle format."""


class FrameKey(NamedTuple):
    """One keyframe: video id and integer timestamp in seconds (``"0902"`` is read as 902)."""

    video_id: str
    timestamp: int


def image_key(video_id: str, timestamp: str | int) -> str:
    """The official evaluator's frame key: ``video_id + "," + "%04d" % int(timestamp)``."""
    return f"{video_id},{int(timestamp):04d}"


# --------------------------------------------------------------------------------------------
# Frame layout


@dataclass(frozen=True)
class FrameLayout:
    """Where the extracted frames of a keyframe live.

    Frames of a video are in ``root/<video_id>/`` and named by ``pattern``, either a
    ``str.format`` pattern (``"img_{:05d}.jpg"``) or a printf pattern (``"image_%06d.jpg"``,
    the ``format_str`` of the published pickles). The 15-minute AVA clip starts at
    ``first_timestamp`` seconds (900) and was extracted at ``fps`` (30), so the keyframe of
    timestamp ``t`` is frame number ``(t - first_timestamp) * fps + index_base``; with the
    defaults ``(t - 900) * 30 + 1`` (t = 902 -> 61).
    """

    pattern: str = "img_{:05d}.jpg"
    fps: int = 30
    first_timestamp: int = 900
    index_base: int = 1

    def __post_init__(self) -> None:
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        try:
            name = self.file_name(self.index_base)
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            raise ValueError(f"invalid frame pattern {self.pattern!r}: {exc}") from exc
        if name == self.pattern or "/" in name:
            raise ValueError(f"frame pattern {self.pattern!r} must hold one integer field")

    def frame_index(self, timestamp: float) -> int:
        """Frame number of the keyframe at ``timestamp`` seconds: ``(t - first) * fps + base``."""
        offset = (timestamp - self.first_timestamp) * self.fps
        frames = round(offset)
        if abs(offset - frames) > 1e-6:
            raise ValueError(f"timestamp {timestamp} does not fall on a frame at {self.fps} fps")
        if frames < 0:
            raise ValueError(
                f"timestamp {timestamp} is before the first timestamp {self.first_timestamp}"
            )
        return frames + self.index_base

    def file_name(self, index: int) -> str:
        """File name of frame ``index`` (no directory)."""
        if "%" in self.pattern:
            return self.pattern % index
        return self.pattern.format(index)

    def frame_path(self, root: str | Path, video_id: str, index: int) -> Path:
        """``root/<video_id>/<file name of frame index>``."""
        return Path(root) / video_id / self.file_name(index)

    def keyframe_path(self, root: str | Path, video_id: str, timestamp: float) -> Path:
        """Path of the keyframe of ``timestamp``."""
        return self.frame_path(root, video_id, self.frame_index(timestamp))


LAYOUT_IMG_05D = FrameLayout(pattern="img_{:05d}.jpg")
"""``img_00001.jpg`` ... at 30 fps (SlowFast / mmaction extraction)."""
LAYOUT_IMAGE_06D = FrameLayout(pattern="image_{:06d}.jpg")
"""``image_000001.jpg`` ... at 30 fps (ACAR / FBIL extraction)."""


# --------------------------------------------------------------------------------------------
# Label map and CSV readers


def read_labelmap(path: str | Path) -> list[tuple[int, str]]:
    """Read a ``.pbtxt`` label map into ``[(id, name), ...]`` in file order.

    Same rules as the official evaluator: a line starting with two spaces and ``name:`` sets the
    name (text between the first pair of double quotes); a line starting with two spaces and
    ``id:`` or ``label_id:`` ends an entry with that id and the last name seen. Both official
    layouts (``item { name id }``, ``label { name label_id label_type }``) parse. Other lines are
    ignored. Raises :class:`AvaFormatError` for a bad entry or when no entry is found.
    """
    entries: list[tuple[int, str]] = []
    name = ""
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
        if line.startswith("  name:"):
            parts = line.split('"')
            if len(parts) < 3:
                raise AvaFormatError(f"{path}:{lineno}: name is not in double quotes: {line!r}")
            name = parts[1]
        elif line.startswith(("  id:", "  label_id:")):
            value = line.strip().split(" ")[-1]
            try:
                class_id = int(value)
            except ValueError:
                raise AvaFormatError(f"{path}:{lineno}: bad class id {value!r}") from None
            if class_id < 1:
                raise AvaFormatError(f"{path}:{lineno}: class ids start at 1, got {class_id}")
            entries.append((class_id, name))
    if not entries:
        raise AvaFormatError(
            f"{path}: no label map entries (expected lines '  name: \"...\"' and '  id: N', "
            "indented by exactly two spaces)"
        )
    return entries


@dataclass(frozen=True)
class CsvRow:
    """One parsed row of an AVA box CSV (annotations, detections or proposals)."""

    video_id: str
    timestamp: int
    box: Box
    action_id: int | None
    last: str | None
    """The 8th column as text (person id in annotations, score in detections), if present."""
    lineno: int


def iter_box_csv(path: str | Path) -> Iterator[CsvRow]:
    """Parse an AVA box CSV with 7 or 8 columns; blank lines are skipped.

    ``action_id`` is ``None`` when the column is empty (proposal files).
    Raises :class:`AvaFormatError` with the line number for anything malformed.
    """
    for lineno, row in enumerate(csv.reader(io.StringIO(_read_text(path))), 1):
        if not row:
            continue
        if len(row) not in (7, 8):
            raise AvaFormatError(f"{path}:{lineno}: expected 7 or 8 columns, got {len(row)}")
        try:
            timestamp = int(row[1])
            x1, y1, x2, y2 = (float(v) for v in row[2:6])
            action_id = int(row[6]) if row[6].strip() else None
        except ValueError as exc:
            raise AvaFormatError(f"{path}:{lineno}: {exc} in row {row!r}") from None
        last = row[7] if len(row) == 8 else None
        yield CsvRow(row[0], timestamp, (x1, y1, x2, y2), action_id, last, lineno)


def read_exclusions(path: str | Path) -> set[str]:
    """Read an excluded-timestamps CSV (``video_id,timestamp``) into a set of :func:`image_key`."""
    keys: set[str] = set()
    for lineno, row in enumerate(csv.reader(io.StringIO(_read_text(path))), 1):
        if not row:
            continue
        if len(row) != 2:
            raise AvaFormatError(f"{path}:{lineno}: expected 2 columns, got {len(row)}")
        try:
            keys.add(image_key(row[0], row[1]))
        except ValueError:
            raise AvaFormatError(f"{path}:{lineno}: bad timestamp {row[1]!r}") from None
    return keys


@dataclass(frozen=True)
class PersonAnnotation:
    """One person in a keyframe: box, action ids (sorted, unique) and person id if given."""

    box: Box
    action_ids: tuple[int, ...]
    person_id: int | None


@dataclass(frozen=True)
class AnnotatedFrame:
    """All annotated persons of one keyframe."""

    key: FrameKey
    persons: tuple[PersonAnnotation, ...]


def read_annotations_csv(
    path: str | Path, class_whitelist: Collection[int] | None = None
) -> list[AnnotatedFrame]:
    """Read an AVA annotation CSV and group it into keyframes.

    Rows of one frame with the same box and person id form one person, whose action ids are
    collected. Rows whose action is not in ``class_whitelist`` (when given) are dropped; a person
    left without actions is dropped too. Frames are sorted by ``(video_id, timestamp)``,
    persons keep their first-appearance order.
    """
    frames: dict[FrameKey, dict[tuple[Box, int | None], set[int]]] = {}
    for row in iter_box_csv(path):
        if row.action_id is None:
            raise AvaFormatError(f"{path}:{row.lineno}: missing action id")
        if class_whitelist is not None and row.action_id not in class_whitelist:
            continue
        person_id = _parse_int(row.last, path, row.lineno) if row.last is not None else None
        persons = frames.setdefault(FrameKey(row.video_id, row.timestamp), {})
        persons.setdefault((row.box, person_id), set()).add(row.action_id)
    return [
        AnnotatedFrame(
            key,
            tuple(
                PersonAnnotation(box, tuple(sorted(actions)), person_id)
                for (box, person_id), actions in persons.items()
            ),
        )
        for key, persons in sorted(frames.items())
    ]


class Proposal(NamedTuple):
    """A person-detector box with its score."""

    box: Box
    score: float


def read_proposals_csv(path: str | Path, min_score: float = 0.0) -> dict[FrameKey, list[Proposal]]:
    """Read a person-proposal CSV: ``video_id,timestamp,x1,y1,x2,y2,action_id,score``.

    The action column may be empty (the usual layout, ``...,y2,,0.998``) or hold an action id;
    a box listed several times in a frame is kept once with its highest score. Boxes with
    ``score < min_score`` are dropped (the detector threshold). Frames are returned in file
    order, boxes per frame by descending score.
    """
    frames: dict[FrameKey, dict[Box, float]] = {}
    for row in iter_box_csv(path):
        if row.last is None:
            raise AvaFormatError(f"{path}:{row.lineno}: proposals need a score in column 8")
        score = _parse_float(row.last, path, row.lineno)
        if score < min_score:
            continue
        boxes = frames.setdefault(FrameKey(row.video_id, row.timestamp), {})
        boxes[row.box] = max(score, boxes.get(row.box, -math.inf))
    return {
        key: sorted((Proposal(b, s) for b, s in boxes.items()), key=lambda p: -p.score)
        for key, boxes in frames.items()
    }


# --------------------------------------------------------------------------------------------
# Published annotation pickle


@dataclass(frozen=True)
class PublishedBox:
    """One person of a published record: box, 0-based class indices, person ids (maybe empty)."""

    box: Box
    labels: tuple[int, ...]
    person_ids: tuple[int, ...]


@dataclass(frozen=True)
class PublishedRecord:
    """One keyframe clip of the published annotation pickle."""

    video: str
    time: int
    start_frame: int
    n_frames: int
    format_str: str
    boxes: tuple[PublishedBox, ...]


@dataclass(frozen=True)
class PublishedAnnotations:
    """Records plus the class list: ``classes[i] = (AVA action id, name)`` for label index i."""

    records: tuple[PublishedRecord, ...]
    classes: tuple[tuple[int, str], ...]


_SAFE_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("__builtin__", "set"),
        ("__builtin__", "frozenset"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # bytes in protocol 0-2 pickles
        # numpy arrays and scalars (their contents still go through this unpickler)
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol 5 arrays
        ("numpy._core.numeric", "_frombuffer"),
    }
)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in :data:`_SAFE_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only builtin containers, scalars "
                "and numpy arrays are allowed in an annotation pickle"
            )
        return super().find_class(module, name)


def read_published_pickle(path: str | Path) -> PublishedAnnotations:
    """Read a published FBIL/ACAR annotation pickle safely.

    The file holds ``(records, classes)``: each record is a dict with ``video``, ``time``,
    ``start_frame``, ``n_frames``, ``format_str`` and ``labels`` = list of
    ``{"bounding_box": [x1, y1, x2, y2], "label": [class index, ...], "person_id": ...}``
    (``person_id`` may be an int, a list or absent); ``classes[i]`` is ``{"id": ..., "name": ...}``
    for class index i (a list, or a dict keyed by index). Unpickling uses an allow-list, so a file
    that references any other global (code) raises :class:`AvaFormatError` without running it.
    """
    data = Path(path).read_bytes()
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as exc:
        raise AvaFormatError(f"{path}: {exc}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise AvaFormatError(f"{path}: not a valid pickle: {exc}") from None
    if not (isinstance(obj, tuple | list) and len(obj) == 2):
        raise AvaFormatError(f"{path}: expected a pair (records, classes)")
    try:
        records = tuple(_parse_record(r) for r in obj[0])
        classes = _parse_classes(obj[1])
    except (KeyError, TypeError, ValueError) as exc:
        raise AvaFormatError(f"{path}: malformed annotation pickle: {exc!r}") from None
    return PublishedAnnotations(records, classes)


def _parse_record(record: dict[str, Any]) -> PublishedRecord:
    return PublishedRecord(
        video=str(record["video"]),
        time=int(record["time"]),
        start_frame=int(record["start_frame"]),
        n_frames=int(record["n_frames"]),
        format_str=str(record["format_str"]),
        boxes=tuple(_parse_published_box(label) for label in record["labels"]),
    )


def _parse_published_box(label: dict[str, Any]) -> PublishedBox:
    box = tuple(float(v) for v in label["bounding_box"])
    if len(box) != 4:
        raise ValueError(f"bounding_box needs 4 values, got {len(box)}")
    return PublishedBox(
        box=box,  # type: ignore[arg-type]
        labels=tuple(int(v) for v in _as_list(label["label"])),
        person_ids=tuple(int(v) for v in _as_list(label.get("person_id", []))),
    )


def _parse_classes(classes: Any) -> tuple[tuple[int, str], ...]:
    items = [classes[i] for i in sorted(classes)] if isinstance(classes, dict) else list(classes)
    return tuple((int(c["id"]), str(c.get("name", ""))) for c in items)


def _as_list(value: Any) -> list[Any]:
    if hasattr(value, "tolist"):  # numpy array or scalar
        value = value.tolist()
    return list(value) if isinstance(value, list | tuple) else [value]


# --------------------------------------------------------------------------------------------
# helpers


def _read_text(path: str | Path) -> str:
    """Read a text file (universal newlines); ``OSError`` propagates to the caller."""
    with open(path, encoding="utf-8", newline=None) as f:
        return f.read()


def _parse_int(text: str, path: str | Path, lineno: int) -> int:
    try:
        return int(text)
    except ValueError:
        raise AvaFormatError(f"{path}:{lineno}: expected an integer, got {text!r}") from None


def _parse_float(text: str, path: str | Path, lineno: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise AvaFormatError(f"{path}:{lineno}: expected a number, got {text!r}") from None
