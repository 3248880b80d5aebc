"""Keyframe entries, clip readers (frame folders, published pickle, video files; the same clips
from all three) and the training config reader."""

from __future__ import annotations

import pickle
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import write_png

from fbil.model.labels import ava_v22
from fbil.model.preprocess import PreprocessSpec
from fbil.model.training.ava_data import FrameKey, FrameLayout
from fbil.model.training.datasets import (
    DataSpec,
    FrameFolderReader,
    KeyframeDataset,
    KeyframeEntry,
    PublishedFrameReader,
    VideoClipReader,
    build_entries,
    clip_reader,
    csv_entries,
    pickle_entries,
)
from fbil.model.training.train_config import load_train_config
from tests.support.synthetic_video import HEIGHT, WIDTH, colour_index_image, encode, read_indices

PUBLISHED = Path(__file__).resolve().parents[3] / "shared/reference/published_configs"
# mean 0, std 1: a normalised clip holds the raw 0-255 values
RAW = PreprocessSpec(num_frames=4, frame_interval=2, short_side=8, mean=(0, 0, 0), std=(1, 1, 1))


def write_index_frames(folder: Path, count: int, pattern: str = "img_{:05d}.jpg") -> None:
    """Lossless frames (PNG data under the pattern's name) whose pixels equal their index."""
    folder.mkdir(parents=True)
    for i in range(1, count + 1):
        img = torch.full((3, 8, 12), i, dtype=torch.uint8)
        write_png(img, str(folder / pattern.format(i)))


def frame_values(clip: torch.Tensor) -> list[int]:
    return [round(float(v)) for v in clip[0, :, 0, 0]]


def test_frame_folder_sampling_and_clamping(tmp_path: Path) -> None:
    write_index_frames(tmp_path / "v", 40, "img_{:05d}.png")
    layout = FrameLayout(pattern="img_{:05d}.png", fps=10, first_timestamp=0, index_base=1)
    spec = DataSpec(kind="frames", root=tmp_path, annotations=tmp_path / "x.csv", layout=layout)
    reader = FrameFolderReader(spec, RAW)
    # keyframe t=2 -> frame 21; offsets round(10 * (2k - 4) / 30) = -1, -1, 0, 1
    assert frame_values(reader_clip(reader, 2)) == [20, 20, 21, 22]
    spec8 = PreprocessSpec(
        num_frames=8, frame_interval=4, short_side=8, mean=(0, 0, 0), std=(1, 1, 1)
    )
    # 30 fps offsets -16, -12, ..., 12 (centred window of 32 frames) rounded to 10 fps
    wide = FrameFolderReader(spec, spec8)
    assert wide.offsets == [-5, -4, -3, -1, 0, 1, 3, 4]
    assert frame_values(reader_clip(wide, 0)) == [1, 1, 1, 1, 1, 2, 4, 5]  # clamped at frame 1
    assert frame_values(reader_clip(wide, 3.9)) == [35, 36, 37, 39, 40, 40, 40, 40]  # video end
    with pytest.raises(FileNotFoundError):
        reader_clip(reader, 9)


def reader_clip(reader: FrameFolderReader, t: float) -> torch.Tensor:
    return reader(KeyframeEntry(FrameKey("v", t), ((0, 0, 1, 1),), ((),), (1.0,)))  # type: ignore[arg-type]


def test_csv_entries_targets_exclusions_and_proposals(tmp_path: Path) -> None:
    (tmp_path / "gt.csv").write_text(
        "v,0902,0.1,0.1,0.5,0.9,12,0\n"
        "v,0902,0.1,0.1,0.5,0.9,80,0\n"
        "v,0902,0.6,0.1,0.9,0.9,99,1\n"  # not an AVA v2.2 class: person dropped
        "v,0903,0.2,0.2,0.4,0.4,17,0\n"
        "w,0902,0.2,0.2,0.4,0.4,11,0\n"
    )
    (tmp_path / "ex.csv").write_text("w,0902\n")
    (tmp_path / "props.csv").write_text(
        "v,0902,0.1,0.1,0.5,0.9,,0.9\nv,0902,0.6,0.1,0.9,0.9,,0.3\nw,0902,0.2,0.2,0.4,0.4,,0.99\n"
    )
    labels = ava_v22()
    spec = DataSpec(
        kind="video",
        root=tmp_path,
        annotations=tmp_path / "gt.csv",
        exclusions=tmp_path / "ex.csv",
        proposals=tmp_path / "props.csv",
        min_score=0.5,
    )
    gt = csv_entries(spec, labels, use_proposals=False)
    assert [e.key for e in gt] == [FrameKey("v", 902), FrameKey("v", 903)]
    assert gt[0].boxes == ((0.1, 0.1, 0.5, 0.9),)
    assert gt[0].labels == ((labels.index_of(12), labels.index_of(80)),)
    props = csv_entries(spec, labels, use_proposals=True)
    assert [(e.key, e.boxes, e.box_scores) for e in props] == [
        (FrameKey("v", 902), ((0.1, 0.1, 0.5, 0.9),), (0.9,))
    ]
    ds = KeyframeDataset(gt, lambda e: torch.zeros(3, 4, 8, 8), len(labels))
    sample = ds[0]
    assert sample.targets.shape == (1, 60) and sample.targets.sum() == 2
    assert sample.targets[0, labels.index_of(80)] == 1


def test_published_pickle_entries_and_frames(tmp_path: Path) -> None:
    classes = [{"id": 12, "name": "stand"}, {"id": 80, "name": "watch (a person)"}]
    record = {
        "video": "vid",
        "time": 902,
        "start_frame": 1,
        "n_frames": 21,
        "format_str": "image_%06d.png",
        "labels": [{"bounding_box": [0.1, 0.2, 0.3, 0.4], "label": [0, 1], "person_id": [3]}],
    }
    (tmp_path / "ann.pkl").write_bytes(pickle.dumps(([record], classes)))
    write_index_frames(tmp_path / "frames" / "vid", 21, "image_{:06d}.png")
    spec = DataSpec(kind="pickle", root=tmp_path / "frames", annotations=tmp_path / "ann.pkl")
    entries = pickle_entries(spec, ava_v22(), RAW)
    assert len(entries) == 1
    e = entries[0]
    # centre crop of 8 frames at step 2 around the middle frame 11: 7, 9, 11, 13
    assert e.frame_files == (
        "image_000007.png",
        "image_000009.png",
        "image_000011.png",
        "image_000013.png",
    )
    assert e.labels == ((ava_v22().index_of(12), ava_v22().index_of(80)),)
    assert frame_values(PublishedFrameReader(spec, RAW)(e)) == [7, 9, 11, 13]


def test_video_reader_decodes_around_the_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 30)
        stream.options = {"qp": "0"}
        for i in range(60):
            img = np.full((48, 64, 3), 4 * i, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    spec = DataSpec(kind="video", root=tmp_path, annotations=tmp_path / "x.csv", time_offset=900)
    reader = VideoClipReader(spec, RAW)
    entry = KeyframeEntry(FrameKey("clip", 901), ((0, 0, 1, 1),), ((),), (1.0,))
    clip = reader(entry)
    assert clip.shape == (3, 4, 8, 10)
    # t = 1 s -> frame 30; offsets (2k - 4) / 30 s -> frames 26, 28, 30, 32 (values 4 * index)
    assert [round(v / 4) for v in frame_values(clip)] == [26, 28, 30, 32]


@pytest.fixture(scope="module")
def three_kinds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DataSpec]:
    """One 30 fps video of 100 frames that show their index (bars) and RGB stripes, as a
    lossless video file, as its frames in PNG files and as a published-pickle record of the
    keyframe at 902 s (AVA timestamps: the clip starts at 900 s, frame files count from 1)."""
    root = tmp_path_factory.mktemp("three_kinds")
    images = [colour_index_image(i, WIDTH, HEIGHT) for i in range(100)]
    (root / "videos").mkdir()
    pts = [round(i * 1000 / 30) for i in range(100)]
    video = encode(pts, "ffv1", "matroska", images=images, pix_fmt="bgr0")
    (root / "videos" / "v.mkv").write_bytes(video)
    (root / "frames" / "v").mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(root / "frames" / "v" / f"{i + 1:05d}.png")
    # published records span the keyframe +- 1.5 s: frames 16..106, the middle one 61
    box = {"bounding_box": [0.1, 0.2, 0.3, 0.4], "label": [0], "person_id": [1]}
    record = {"video": "v", "time": 902, "start_frame": 16, "n_frames": 91}
    record |= {"format_str": "%05d.png", "labels": [box]}
    (root / "ann.pkl").write_bytes(pickle.dumps(([record], [{"id": 12, "name": "stand"}])))
    csv = root / "ann.csv"
    csv.write_text("v,0902,0.1,0.2,0.3,0.4,12,1\n")
    layout = FrameLayout(pattern="{:05d}.png", fps=30, first_timestamp=900, index_base=1)
    return {
        "video": DataSpec(kind="video", root=root / "videos", annotations=csv, time_offset=900),
        "frames": DataSpec(kind="frames", root=root / "frames", annotations=csv, layout=layout),
        "pickle": DataSpec(kind="pickle", root=root / "frames", annotations=root / "ann.pkl"),
    }


@pytest.mark.parametrize(("num_frames", "interval"), [(32, 2), (16, 4), (8, 8)])
def test_the_three_data_kinds_give_the_same_clips(three_kinds, num_frames, interval) -> None:
    """A video file (decoded), its frame folder and its published-pickle entry: the same frames
    sampled around the keyframe, and bit for bit the same clip."""
    spec = PreprocessSpec(num_frames=num_frames, frame_interval=interval, short_side=64)
    labels = ava_v22()
    clips = {}
    for kind, data in three_kinds.items():
        [entry] = build_entries(data, labels, spec, use_proposals=False)
        assert entry.key == FrameKey("v", 902)
        clips[kind] = clip_reader(data, spec)(entry)
    # 902 s is 2.0 s into the video: frame 60 (file 61); samples every `interval` frames from
    # half the window before it
    expected = [60 + off for off in spec.sample_frame_offsets()]
    assert expected[0] == 60 - num_frames * interval // 2 and len(expected) == num_frames
    assert clips["video"].shape == (3, num_frames, 64, 64 * WIDTH // HEIGHT)
    for kind, clip in clips.items():
        assert read_indices(clip, spec, rows=slice(0, 64 * 2 // 5)) == expected, kind
    assert torch.equal(clips["frames"], clips["video"])
    assert torch.equal(clips["pickle"], clips["video"])


def test_published_config_reads_as_published() -> None:
    cfg = load_train_config(PUBLISHED / "SLOWFAST_R101_FBIL.yaml")
    assert cfg.train.data.kind == "pickle"
    assert cfg.train.data.annotations == Path("annotations/ava_train_v2.2_with_fair_0.9.pkl")
    assert (cfg.train.batch_size, cfg.train.workers, cfg.n_epochs) == (2, 4, 8)
    assert cfg.optimizer == {"momentum": 0.9, "weight_decay": 1e-7, "nesterov": True}
    s = cfg.schedule
    assert (s.base_lr, s.warmup_lr, s.warmup_epochs) == (0.0015, 0.012, 1.0)
    assert (s.milestone_epochs, s.lr_mults) == ((4.0, 6.0), (0.1, 0.1))
    assert cfg.freeze_bn and cfg.backbone_learnable and cfg.box_jitter == 0.075
    assert cfg.pretrain == Path("pretrained/SLOWFAST_R101_K700.pth.tar")
    assert cfg.loss == "pose_softmax" and cfg.model.pose_softmax
    assert cfg.train.flip and cfg.val is not None and not cfg.val.flip
    assert (cfg.train.preprocess.num_frames, cfg.train.preprocess.frame_interval) == (32, 2)
    assert cfg.val.eval_files is not None
    assert cfg.val.eval_files.groundtruth == Path("annotations/ava_val_v2.2.csv")
    assert (cfg.grad_accum, cfg.amp, cfg.seed, cfg.evaluate_only) == (1, False, 1, False)
