"""The synthetic AVA world: formats, determinism, boxes and motion measured on decoded video."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from fbil.model.labels import ava_v22
from fbil.model.preprocess import PreprocessSpec
from fbil.model.training.ava_data import (
    AnnotatedFrame,
    image_key,
    read_annotations_csv,
    read_exclusions,
    read_labelmap,
)
from fbil.model.training.synth import (
    CLASS_IDS,
    FPS,
    HEIGHT,
    WIDTH,
    SynthDataset,
    generate,
    keyframe_times,
    main,
)
from fbil.model.video import Clip, VideoInfo, decode_clips

POSES = {1, 5, 7, 10, 12, 14}
SPEC = PreprocessSpec(short_side=HEIGHT)  # no resize: clips keep the 320x240 frames
KEY = 16  # index of the keyframe in the 32-frame clip (offset 0)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> SynthDataset:
    """11 videos of 4 s: every featured class once, keyframe 2 each."""
    return generate(tmp_path_factory.mktemp("synth"), seed=7, num_videos=11, seconds_per_video=4)


@pytest.fixture(scope="module")
def plan(world: SynthDataset) -> dict:
    return json.loads(world.metadata.read_text())


@pytest.fixture(scope="module")
def decoded(world: SynthDataset) -> dict[str, tuple[VideoInfo, dict[int, Clip]]]:
    """Every video decoded by the shared decoder at all its annotated timestamps at once."""
    times = defaultdict(list)
    for frame in _frames(world):
        times[frame.key.video_id].append(frame.key.timestamp)
    out = {}
    for video_id, ts in times.items():
        info, keyframes = decode_clips(world.videos[video_id], ts, SPEC)
        out[video_id] = (info, dict(zip(ts, keyframes, strict=True)))
    return out


@pytest.fixture(scope="module")
def windows(decoded: dict) -> dict[tuple[str, int], np.ndarray]:
    """The window of every annotated keyframe as (T, H, W, 3) floats in 0..255."""
    mean, std = torch.tensor(SPEC.mean).view(3, 1, 1, 1), torch.tensor(SPEC.std).view(3, 1, 1, 1)
    return {
        (video_id, t): (k.clip * std + mean).permute(1, 2, 3, 0).numpy()
        for video_id, (_, keyframes) in decoded.items()
        for t, k in keyframes.items()
    }


def _frames(world: SynthDataset) -> list[AnnotatedFrame]:
    return [f for csv in world.annotations.values() for f in read_annotations_csv(csv)]


def _colour_mask(img: np.ndarray, rgb: list[int], tol: float = 40.0) -> np.ndarray:
    return np.linalg.norm(img - np.asarray(rgb, np.float32), axis=-1) < tol


def _pixel_box(box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    return round(x1 * WIDTH), round(y1 * HEIGHT), round(x2 * WIDTH), round(y2 * HEIGHT)


def _overlaps(a, b) -> bool:  # noqa: ANN001
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_same_seed_same_dataset(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", seed=3, num_videos=2, seconds_per_video=4)
    b = generate(tmp_path / "b", seed=3, num_videos=2, seconds_per_video=4)
    c = generate(tmp_path / "c", seed=4, num_videos=1, seconds_per_video=4)
    for name in ("annotations/train.csv", "annotations/val.csv", "annotations/labelmap.pbtxt",
                 "annotations/exclusions.csv", "dataset.json", "README"):  # fmt: skip
        assert (a.root / name).read_bytes() == (b.root / name).read_bytes(), name
    assert a.annotations["train"].read_bytes() != c.annotations["train"].read_bytes()
    for video_id, path in a.videos.items():
        with av.open(str(path)) as x, av.open(str(b.videos[video_id])) as y:
            fx = [f.to_ndarray(format="rgb24") for f in x.decode(video=0)]
            fy = [f.to_ndarray(format="rgb24") for f in y.decode(video=0)]
        assert len(fx) == 4 * FPS
        assert all(np.array_equal(p, q) for p, q in zip(fx, fy, strict=True))


def test_files_follow_the_ava_formats(world: SynthDataset, plan: dict) -> None:
    labels = ava_v22()
    assert read_labelmap(world.labelmap) == [
        (i, labels[labels.index_of(i)].name) for i in sorted(CLASS_IDS)
    ]
    assert read_exclusions(world.exclusions) == set()  # one keyframe per video: no change
    frames = _frames(world)
    assert {f.key.video_id for f in frames} == set(world.videos)
    assert set(world.annotations) == {"train", "val"}
    assert plan["seed"] == 7 and [c["id"] for c in plan["classes"]] == sorted(CLASS_IDS)
    for frame in frames:
        assert frame.key.timestamp in keyframe_times(4)
        assert [p.person_id for p in frame.persons] == list(range(len(frame.persons)))
        for person in frame.persons:
            assert len(POSES.intersection(person.action_ids)) == 1, person
            x1, y1, x2, y2 = person.box
            assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1


def test_every_class_appears(world: SynthDataset) -> None:
    seen = {a for f in _frames(world) for p in f.persons for a in p.action_ids}
    assert seen == set(CLASS_IDS)


def test_keyframe_windows_lie_inside_the_video() -> None:
    assert keyframe_times(6) == [2, 3, 4]
    offsets = SPEC.sample_offsets()
    last_frame = (6 * FPS - 1) / FPS
    assert 2 + offsets[0] >= 0 and 4 + offsets[-1] <= last_frame + 1e-9


def test_videos_decode_at_every_annotated_timestamp(world: SynthDataset, decoded: dict) -> None:
    assert set(decoded) == set(world.videos)
    for info, keyframes in decoded.values():
        assert (info.width, info.height) == (WIDTH, HEIGHT) and info.fps == FPS
        assert info.duration == pytest.approx(4.0, abs=0.05)
        for t, k in keyframes.items():
            assert k.frame_times[KEY] == pytest.approx(t)
            assert len(set(k.frame_times)) == SPEC.num_frames  # all distinct: inside the video


def test_boxes_are_the_drawn_people(world: SynthDataset, plan: dict, windows: dict) -> None:
    checked = 0
    for frame in _frames(world):
        people = plan["videos"][frame.key.video_id]["people"]
        img = windows[frame.key.video_id, frame.key.timestamp][KEY]
        boxes = [_pixel_box(p.box) for p in frame.persons]
        for person, box in zip(frame.persons, boxes, strict=True):
            if any(_overlaps(box, o) for o in boxes if o is not box):
                continue
            body = _colour_mask(img, people[person.person_id]["body_rgb"], tol=30)
            x1, y1, x2, y2 = box
            inside = body[y1:y2, x1:x2].sum()
            near = body[max(y1 - 2, 0) : y2 + 2, max(x1 - 2, 0) : x2 + 2].sum()
            assert inside >= 0.97 * near and near >= 0.97 * body.sum()  # the colour is in the box
            assert inside >= 0.12 * (x2 - x1) * (y2 - y1)  # and fills a good part of it
            rows, cols = np.flatnonzero(body.any(1)), np.flatnonzero(body.any(0))
            assert abs(rows[-1] + 1 - y2) <= 2  # feet at the bottom edge; head above the body
            assert rows[0] > y1 and cols[0] >= x1 - 1 and cols[-1] < x2 + 1
            checked += 1
    assert checked >= 8


def _motion(
    world: SynthDataset, plan: dict, windows: dict
) -> dict[int, list[tuple[float, float, float]]]:
    """Per pose class: (horizontal speed, vertical range, box height range), in heights, of
    people drawn alone, measured from their colour over the keyframe's 32-frame window."""
    out = defaultdict(list)
    for frame in _frames(world):
        people = plan["videos"][frame.key.video_id]["people"]
        clip = windows[frame.key.video_id, frame.key.timestamp]
        for person in frame.persons:
            rgb = people[person.person_id]["body_rgb"]
            height = people[person.person_id]["height_px"]
            xs, ys, extents = [], [], []
            for img in clip:
                mask = _colour_mask(img, rgb, tol=30)
                rows, cols = np.nonzero(mask)
                if len(rows) < 20:
                    break
                xs.append(np.median(cols))
                ys.append(np.median(rows))
                extents.append(rows.max() - rows.min())
            else:
                pose = next(a for a in person.action_ids if a in POSES)
                seconds = (len(xs) - 1) * SPEC.frame_interval / FPS
                speed = np.abs(np.diff(xs)).sum() / seconds / height
                out[pose].append(
                    (speed, np.ptp(ys) / height, (max(extents) - min(extents)) / height)
                )
    return out


def test_motion_tells_the_poses_apart(world: SynthDataset, plan: dict, windows: dict) -> None:
    motion = _motion(world, plan, windows)
    assert set(motion) >= POSES
    speed = {pose: np.median([m[0] for m in ms]) for pose, ms in motion.items()}
    vertical = {pose: np.median([m[1] for m in ms]) for pose, ms in motion.items()}
    extent = {pose: np.median([m[2] for m in ms]) for pose, ms in motion.items()}
    assert speed[12] < 0.1 and vertical[12] < 0.05 and extent[12] < 0.05  # stand: still
    assert 0.3 < speed[14] < 1.0  # walk: ~0.5-0.8 heights/s
    assert speed[10] > 1.5 and speed[10] > 2 * speed[14]  # run: much faster
    assert vertical[7] > 0.3 and speed[7] < 0.5  # jump: up and down, not across
    assert extent[5] > 0.35 and extent[1] > 0.12  # fall tips over, bend bows: height changes
    assert extent[5] > extent[1]  # falling flattens the body more than bowing


def test_cli_writes_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--seed", "1", "--videos", "1", "--seconds", "4"]) == 0
    assert (tmp_path / "videos" / "synth1_0000.mp4").is_file()
    assert read_annotations_csv(tmp_path / "annotations" / "train.csv")
    assert "1 videos" in capsys.readouterr().out
    assert main(["--out", str(tmp_path), "--seconds", "3"]) == 2


def test_changes_are_excluded_keyframes(tmp_path: Path) -> None:
    data = generate(tmp_path, seed=3, num_videos=1, seconds_per_video=5, val_fraction=0)
    plan = json.loads(data.metadata.read_text())
    excluded = read_exclusions(data.exclusions)
    assert excluded  # seed 3: a person of the first video changes pose at a keyframe
    annotated = {image_key(f.key.video_id, f.key.timestamp) for f in _frames(data)}
    assert not excluded & annotated
    for video_id, video in plan["videos"].items():
        for t in video["keyframes"]:
            changes = any(p["poses_per_second"][t - 1] != p["poses_per_second"][t]
                          for p in video["people"])  # fmt: skip
            assert changes == (image_key(video_id, t) in excluded)


def test_contact_pairs_are_labelled_consistently(tmp_path: Path) -> None:
    """Both partners carry the contact class at every keyframe; hugging partners (bodies
    0.24 heights apart) do not count as watching each other, hand-shake and fight partners
    (facing each other, >= 0.56 apart) always do: no label flips with the pump or punch."""
    data = generate(tmp_path, seed=11, num_videos=33, seconds_per_video=5, val_fraction=0)
    plan = json.loads(data.metadata.read_text())
    labels = {
        (f.key.video_id, f.key.timestamp, p.person_id): set(p.action_ids)
        for f in _frames(data)
        for p in f.persons
    }
    seen = defaultdict(int)
    for video_id, video in plan["videos"].items():
        for person_id, person in enumerate(video["people"]):
            kind = person["interaction"]
            if kind is None:
                continue
            for t in set(video["keyframes"]) - set(video["excluded"]):
                actions = labels[(video_id, t, person_id)]
                assert kind in actions and 12 in actions
                if kind != 70:
                    assert 80 in actions, (video_id, t, person_id, actions)
                elif len(video["people"]) == 2:  # nobody else to watch
                    assert 80 not in actions, (video_id, t, person_id, actions)
                    seen["hug alone"] += 1
                seen[kind] += 1
    assert set(seen) == {64, 68, 70, "hug alone"}
