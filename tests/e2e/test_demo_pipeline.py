"""End to end: a fresh synthetic set through a real ``fbil-serve`` process, scored by fbil-eval.

Every link of the chain (decode, frame sampling, resize, normalisation, box conversion, model,
export, scores, JSON) runs for real; a subtly wrong link drops the frame-mAP. The broken-pipeline
runs (transposed boxes, mirrored boxes) show that the bar means something. Channel order is not
among them: the synthetic people have random colours, so the demo model is colour-invariant by
design (a BGR run scored like RGB); RGB order is asserted exactly in tests/service.
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from pathlib import Path

import av
import pytest

from fbil.client import Client
from fbil.client.local import local_service
from fbil.model.training.ava_data import read_annotations_csv, read_labelmap
from fbil.model.training.eval_cli import main as eval_main
from fbil.model.training.synth import generate

# Issue 7's bar: frame-mAP >= 0.9 on the classes used; the broken pipelines must fall far below.
# The seed and size of the held-out set were fixed before any model was measured on it.
BAR = 0.9
HELD_OUT_SEED = 20261123  # not the training seed (2)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth_heldout")
    generate(root, seed=HELD_OUT_SEED, num_videos=22, seconds_per_video=6, val_fraction=0.0)
    return root


@pytest.fixture(scope="module")
def server():
    """A real fbil-serve process on loopback, serving its default (bundled demo) model."""
    # FBIL_E2E_MODEL: try another model
    with local_service(os.environ.get("FBIL_E2E_MODEL")) as served, served.client() as client:
        yield client


def _requests(root: Path, transpose_boxes: bool = False, mirror_boxes: bool = False):
    """One request a video: all its annotated keyframes, ground-truth boxes (normalised)."""
    frames = read_annotations_csv(root / "annotations" / "train.csv")
    by_video: dict[str, list] = defaultdict(list)
    for frame in frames:
        by_video[frame.key.video_id].append(frame)
    for video_id, video_frames in sorted(by_video.items()):
        keyframes = []
        for frame in video_frames:
            boxes = []
            for person in frame.persons:
                x1, y1, x2, y2 = person.box
                box = [x1, y1, x2, y2]
                if transpose_boxes:
                    box = [y1, x1, y2, x2]
                elif mirror_boxes:
                    box = [1 - x2, y1, 1 - x1, y2]
                boxes.append(
                    {"box": box, "id": json.dumps([frame.key.timestamp, list(person.box)])}
                )
            keyframes.append({"time": float(frame.key.timestamp), "boxes": boxes})
        yield video_id, {"keyframes": keyframes, "box_format": "normalized", "all_scores": True}


def _detect_and_score(
    client: Client, root: Path, out_dir: Path, *, transpose=False, mirror=False
) -> float:
    labelmap = root / "annotations" / "labelmap.pbtxt"
    used = {class_id for class_id, _ in read_labelmap(labelmap)}
    rows = []
    ids = [label.id for label in client.model_info().labels]
    for video_id, request in _requests(root, transpose, mirror):
        result = client.detect(root / "videos" / f"{video_id}.mp4", **request)
        for keyframe in result.keyframes:
            for actor in keyframe.actors:
                timestamp, box = json.loads(actor.id)
                for class_id, score in zip(ids, actor.scores, strict=True):
                    if class_id in used:
                        rows.append([video_id, timestamp, *box, class_id, score])
    detections = out_dir / "detections.csv"
    with open(detections, "w", newline="") as f:
        writer = csv.writer(f)
        for video_id, ts, x1, y1, x2, y2, class_id, score in rows:
            writer.writerow([video_id, f"{ts:04d}", f"{x1:.3f}", f"{y1:.3f}", f"{x2:.3f}",
                             f"{y2:.3f}", class_id, f"{score:.6f}"])  # fmt: skip
    metrics = out_dir / "metrics.json"
    code = eval_main(
        [
            "csv", "--labelmap", str(labelmap),
            "--groundtruth", str(root / "annotations" / "train.csv"),
            "--detections", str(detections),
            "--exclusions", str(root / "annotations" / "exclusions.csv"),
            "--json", str(metrics),
        ]
    )  # fmt: skip
    assert code == 0
    return json.loads(metrics.read_text())["mAP"]


def test_frame_map_on_held_out_synthetic_set(server, held_out, tmp_path):
    if not os.environ.get("FBIL_E2E_MODEL"):
        assert server.model_info().demo is True
    mean_ap = _detect_and_score(server, held_out, tmp_path)
    print(f"held-out synthetic frame-mAP@0.5 = {mean_ap:.4f}")
    assert mean_ap >= BAR


def test_transposed_boxes_fall_far_below_the_bar(server, held_out, tmp_path):
    mean_ap = _detect_and_score(server, held_out, tmp_path, transpose=True)
    print(f"transposed boxes: frame-mAP@0.5 = {mean_ap:.4f}")
    assert mean_ap < BAR - 0.3


def test_mirrored_boxes_fall_far_below_the_bar(server, held_out, tmp_path):
    """Boxes flipped left-right against the frames (a flip-augmentation style bug)."""
    mean_ap = _detect_and_score(server, held_out, tmp_path, mirror=True)
    print(f"mirrored boxes: frame-mAP@0.5 = {mean_ap:.4f}")
    assert mean_ap < BAR - 0.3


def test_fbil_demo_renders_with_a_private_service(held_out, tmp_path):
    """``fbil-demo`` without --url starts its own service (default model) and draws."""
    from fbil.client.demo import main as demo_main

    video_id, request = next(iter(_requests(held_out)))
    request_path = tmp_path / "request.json"
    request_path.write_text(json.dumps(request))
    out, sheet = tmp_path / "demo.mp4", tmp_path / "sheet.png"
    argv = [str(held_out / "videos" / f"{video_id}.mp4"), "--boxes", str(request_path)]
    if os.environ.get("FBIL_E2E_MODEL"):
        argv += ["--model", os.environ["FBIL_E2E_MODEL"]]
    assert demo_main([*argv, "--out", str(out), "--contact-sheet", str(sheet)]) == 0
    with av.open(str(out)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(str(held_out / "videos" / f"{video_id}.mp4")) as container:
        assert frames == sum(1 for _ in container.decode(video=0))
    assert sheet.stat().st_size > 1000
