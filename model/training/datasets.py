"""AVA keyframe datasets: which frames, which boxes and targets, and where the pixels come from.

A dataset is a list of :class:`KeyframeEntry` (boxes + model class indices per box) and a clip
reader:

* ``video``: one video file per ``video_id`` in ``root`` (``<video_id>.<ext>``), decoded on the
  fly with :func:`fbil.model.video.decode_clips`; the CSV timestamp is seconds from the video
  start minus ``time_offset``;
* ``frames``: extracted JPEG frames ``root/<video_id>/<pattern>`` (:class:`FrameLayout`);
* ``pickle``: the published annotation pickle; frames ``root/<video>/<format_str % index>``,
  temporally centre-cropped from the record's ``start_frame``/``n_frames`` as published.

CSV entries come from an annotation CSV (ground-truth boxes, train or val) or, for
validation, a person-proposal CSV (``proposals``, boxes with ``score >= min_score``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from fbil.model.labels import LabelMap
from fbil.model.preprocess import PreprocessSpec, frames_to_clip
from fbil.model.training.augment import TrainAugment, keyframe_offsets, sample_rng
from fbil.model.training.augment import temporal_center_crop as center_crop
from fbil.model.training.ava_data import (
    Box,
    FrameKey,
    FrameLayout,
    image_key,
    read_annotations_csv,
    read_exclusions,
    read_labelmap,
    read_proposals_csv,
    read_published_pickle,
)
from fbil.model.training.collate import Sample
from fbil.model.video import decode_clips

DataKind = Literal["video", "frames", "pickle"]
VIDEO_EXTENSIONS = ("mp4", "mkv", "webm", "avi", "mov")


@dataclass(frozen=True)
class DataSpec:
    """Where a split's clips and annotations are (paths relative to the working directory)."""

    kind: DataKind
    root: Path
    annotations: Path | None = None  # annotation CSV, or the published pickle
    labelmap: Path | None = None  # restricts CSV classes (else all 60 model classes)
    exclusions: Path | None = None
    proposals: Path | None = None  # person detections to evaluate on instead of GT boxes
    min_score: float = 0.0
    layout: FrameLayout = field(default_factory=FrameLayout)
    video_ext: tuple[str, ...] = VIDEO_EXTENSIONS
    time_offset: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("video", "frames", "pickle"):
            raise ValueError(f"data kind must be video, frames or pickle, got {self.kind!r}")
        if self.kind == "pickle" and self.annotations is None:
            raise ValueError("pickle data needs the annotation pickle")
        if self.annotations is None and self.proposals is None:
            raise ValueError("data needs annotations (CSV or pickle) or proposals")


@dataclass(frozen=True)
class KeyframeEntry:
    """One keyframe to load: boxes, their model class indices (empty without labels), the
    proposal scores (1.0 for ground truth) and, for pickle data, the frame file names."""

    key: FrameKey
    boxes: tuple[Box, ...]
    labels: tuple[tuple[int, ...], ...]
    box_scores: tuple[float, ...]
    frame_files: tuple[str, ...] = ()


# ------------------------------------------------------------------------------ entries


def _model_indices(ava_ids: Sequence[int], labels: LabelMap) -> tuple[int, ...]:
    known = set(labels.ids)
    return tuple(sorted(labels.index_of(a) for a in ava_ids if a in known))


def csv_entries(spec: DataSpec, labels: LabelMap, *, use_proposals: bool) -> list[KeyframeEntry]:
    """Entries of a CSV-annotated split (ground-truth boxes, or proposals when asked and given).

    Ids outside the model's classes (and outside ``spec.labelmap`` when given) are dropped, and
    so are ground-truth persons left without a class, and excluded timestamps.
    """
    excluded = read_exclusions(spec.exclusions) if spec.exclusions else set()
    if use_proposals and spec.proposals is not None:
        props = read_proposals_csv(spec.proposals, spec.min_score)
        return [
            KeyframeEntry(
                key, tuple(p.box for p in ps), tuple(() for _ in ps), tuple(p.score for p in ps)
            )
            for key, ps in sorted(props.items())
            if ps and image_key(*key) not in excluded
        ]
    if spec.annotations is None:
        raise ValueError("ground-truth entries need an annotation CSV")
    whitelist = set(labels.ids)
    if spec.labelmap is not None:
        whitelist &= {i for i, _ in read_labelmap(spec.labelmap)}
    entries = []
    for frame in read_annotations_csv(spec.annotations, whitelist):
        if image_key(*frame.key) in excluded or not frame.persons:
            continue
        entries.append(
            KeyframeEntry(
                frame.key,
                tuple(p.box for p in frame.persons),
                tuple(_model_indices(p.action_ids, labels) for p in frame.persons),
                tuple(1.0 for _ in frame.persons),
            )
        )
    return entries


def pickle_entries(
    spec: DataSpec,
    labels: LabelMap,
    spec_pre: PreprocessSpec,
) -> list[KeyframeEntry]:
    """Entries of the published annotation pickle (class indices mapped through its class list;
    frames centre-cropped to ``num_frames * frame_interval`` at step ``frame_interval``)."""
    assert spec.annotations is not None
    data = read_published_pickle(spec.annotations)
    class_ids = [cid for cid, _ in data.classes]
    size = spec_pre.num_frames * spec_pre.frame_interval
    entries = []
    for r in data.records:
        if not r.boxes:
            continue
        indices = center_crop(
            range(r.start_frame, r.start_frame + r.n_frames), size, spec_pre.frame_interval
        )
        entries.append(
            KeyframeEntry(
                FrameKey(r.video, r.time),
                tuple(b.box for b in r.boxes),
                tuple(_model_indices([class_ids[i] for i in b.labels], labels) for b in r.boxes),
                tuple(1.0 for _ in r.boxes),
                tuple(_frame_name(r.format_str, i) for i in indices),
            )
        )
    return entries


def _frame_name(pattern: str, index: int) -> str:
    return pattern % index if "%" in pattern else pattern.format(index)


# ------------------------------------------------------------------------------ readers


class ClipReader(Protocol):
    def __call__(self, entry: KeyframeEntry) -> Tensor:
        """Normalised float32 clip ``(3, T, H, W)`` of the entry's keyframe."""
        ...


class VideoClipReader:
    """Decodes ``root/<video_id>.<ext>`` around ``timestamp - time_offset`` seconds."""

    def __init__(self, spec: DataSpec, pre: PreprocessSpec) -> None:
        self.root, self.ext, self.pre = spec.root, spec.video_ext, pre
        self.offset = spec.time_offset
        self._paths: dict[str, Path] = {}

    def video_path(self, video_id: str) -> Path:
        if video_id not in self._paths:
            for ext in self.ext:
                path = self.root / f"{video_id}.{ext}"
                if path.is_file():
                    self._paths[video_id] = path
                    break
            else:
                raise FileNotFoundError(
                    f"no video {video_id}.{{{','.join(self.ext)}}} in {self.root}"
                )
        return self._paths[video_id]

    def __call__(self, entry: KeyframeEntry) -> Tensor:
        time = entry.key.timestamp - self.offset
        _, [clip] = decode_clips(self.video_path(entry.key.video_id), [time], self.pre)
        return clip.clip


def read_rgb(path: Path) -> Tensor:
    """uint8 RGB ``(3, H, W)`` of an image file (JPEG, PNG)."""
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)


class FrameFolderReader:
    """Reads the sampled frames of ``root/<video_id>/`` around the keyframe.

    Sample ``k`` is frame ``keyframe + round(fps * spec.sample_offsets()[k])``;
    indices before the first frame take the first, missing frames after the keyframe repeat the
    last one read (video ends).
    """

    def __init__(self, spec: DataSpec, pre: PreprocessSpec) -> None:
        self.root, self.layout, self.pre = spec.root, spec.layout, pre
        self.offsets = keyframe_offsets(pre, spec.layout.fps)

    def frame_paths(self, key: FrameKey) -> list[Path]:
        center = self.layout.frame_index(key.timestamp)
        paths: list[Path] = []
        for off in self.offsets:
            path = self.layout.frame_path(
                self.root, key.video_id, max(center + off, self.layout.index_base)
            )
            if not path.is_file():
                if off <= 0 or not paths:
                    raise FileNotFoundError(f"frame {path} is missing")
                path = paths[-1]
            paths.append(path)
        return paths

    def __call__(self, entry: KeyframeEntry) -> Tensor:
        return load_frames(self.frame_paths(entry.key), self.pre)


class PublishedFrameReader:
    """Reads the frames listed in a published-pickle entry from ``root/<video>/``."""

    def __init__(self, spec: DataSpec, pre: PreprocessSpec) -> None:
        self.root, self.pre = spec.root, pre

    def __call__(self, entry: KeyframeEntry) -> Tensor:
        folder = self.root / entry.key.video_id
        return load_frames([folder / name for name in entry.frame_files], self.pre)


def load_frames(paths: Sequence[Path], pre: PreprocessSpec) -> Tensor:
    """Decode (each distinct file once), resize and normalise into a clip ``(3, T, H, W)``."""
    cache: dict[Path, Tensor] = {}
    for p in paths:
        if p not in cache:
            cache[p] = read_rgb(p)
    frames = [cache[p] for p in paths]
    return frames_to_clip(torch.stack(frames), pre)


def clip_reader(spec: DataSpec, pre: PreprocessSpec) -> ClipReader:
    readers: dict[str, Callable[[DataSpec, PreprocessSpec], ClipReader]] = {
        "video": VideoClipReader,
        "frames": FrameFolderReader,
        "pickle": PublishedFrameReader,
    }
    return readers[spec.kind](spec, pre)


# ------------------------------------------------------------------------------ dataset


class KeyframeDataset(Dataset[Sample]):
    """Keyframe samples; with ``augment`` the random choices are drawn per
    ``(seed, epoch, index)`` (call :meth:`set_epoch` each epoch)."""

    def __init__(
        self,
        entries: Sequence[KeyframeEntry],
        reader: ClipReader,
        num_classes: int,
        augment: TrainAugment | None = None,
        seed: int = 0,
    ) -> None:
        self.entries = list(entries)
        self.reader = reader
        self.num_classes = num_classes
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Sample:
        entry = self.entries[index]
        clip = self.reader(entry)
        boxes = torch.tensor(entry.boxes, dtype=torch.float32).reshape(-1, 4)
        targets = torch.zeros(len(entry.boxes), self.num_classes)
        for row, classes in enumerate(entry.labels):
            targets[row, list(classes)] = 1.0
        if self.augment is not None:
            clip, boxes = self.augment(clip, boxes, sample_rng(self.seed, self.epoch, index))
        scores = torch.tensor(entry.box_scores, dtype=torch.float32)
        return Sample(entry.key, clip, boxes, targets, scores)


def build_entries(
    spec: DataSpec, labels: LabelMap, pre: PreprocessSpec, *, use_proposals: bool
) -> list[KeyframeEntry]:
    if spec.kind == "pickle":
        return pickle_entries(spec, labels, pre)
    return csv_entries(spec, labels, use_proposals=use_proposals)
