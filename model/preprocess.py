"""The preprocessing contract a model was trained with (carried in its metadata), and the code
that applies it to RGB frames: :func:`scaled_size`, :func:`resize`, :func:`normalize`.

The video decoder (:mod:`fbil.model.video`) and the training frame readers both use these, so a
clip is the same whichever way its frames were read.

Two array kinds, one filter: torch tensors (a torch runtime or training runs in the process:
:func:`torch_available`) are resized by torch's antialiased bilinear uint8 kernel; numpy arrays
(ONNX Runtime serving, no torch installed) by Pillow's (:func:`resize_hwc`), the same filter
(torch's kernel is a port of Pillow's), equal within one grey level on real frames.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the spec alone is read by configs and CLIs that must not load torch
    from torch import Tensor

AVA_MEAN = (110.63666788, 103.16065604, 96.29023126)
AVA_STD = (38.7568578, 37.88248729, 40.02898126)


@dataclass(frozen=True)
class PreprocessSpec:
    """How a keyframe becomes a clip tensor ``(3, T, H, W)``.

    ``num_frames`` frames spaced ``frame_interval`` frames of a ``base_fps`` timeline, centred
    on the keyframe as published (``TemporalCenterCrop``): the window of
    ``num_frames * frame_interval`` frames starts ``num_frames * frame_interval // 2`` frames
    before the keyframe (:meth:`sample_frame_offsets`; 32x2: -32, -30, ..., 30);
    short side resized to ``short_side``; RGB; ``(x - mean) / std`` with mean/std in 0-255 units.
    """

    num_frames: int = 32
    frame_interval: int = 2
    base_fps: float = 30.0
    short_side: int = 256
    mean: tuple[float, float, float] = field(default=AVA_MEAN)
    std: tuple[float, float, float] = field(default=AVA_STD)
    channel_order: str = "RGB"

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.frame_interval < 1 or self.short_side < 1:
            raise ValueError(f"invalid preprocessing spec: {self}")
        if self.base_fps <= 0:
            raise ValueError(f"base_fps must be > 0, got {self.base_fps}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need 3 values, std > 0")
        if self.channel_order != "RGB":
            raise ValueError(f"only RGB channel order is supported, got {self.channel_order!r}")

    def sample_frame_offsets(self) -> list[int]:
        """Sample positions relative to the keyframe, in frames of the ``base_fps`` timeline."""
        start = self.num_frames * self.frame_interval // 2
        return [self.frame_interval * k - start for k in range(self.num_frames)]

    def sample_offsets(self) -> list[float]:
        """Sample times relative to the keyframe, in seconds (length ``num_frames``)."""
        return [offset / self.base_fps for offset in self.sample_frame_offsets()]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSpec:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k in ("mean", "std"):
            if k in known:
                known[k] = tuple(float(v) for v in known[k])
        return cls(**known)


def scaled_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """``(H, W)`` of a ``height`` x ``width`` frame resized to ``short_side``: the short side
    to ``short_side``, the long side ``floor(short_side * long / short)`` (the published
    ``Scale``)."""
    if width <= height:
        return short_side * height // width, short_side
    return short_side, short_side * width // height


def resize(rgb: Tensor, size: tuple[int, int]) -> Tensor:
    """uint8 RGB ``(3, H, W)`` or ``(N, 3, H, W)`` resized to ``size`` = ``(H', W')``: bilinear,
    antialiased (torch's uint8 kernel); returned as is when it already has that size."""
    if tuple(rgb.shape[-2:]) == tuple(size):
        return rgb
    from torch.nn.functional import interpolate

    batch = rgb if rgb.dim() == 4 else rgb.unsqueeze(0)
    out = interpolate(batch, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out if rgb.dim() == 4 else out[0]


def torch_available() -> bool:
    """Whether torch is installed (and not blocked in ``sys.modules``): clips and detector tiles
    are then made with torch, exactly as the published preprocessing (and the parity tests)
    make them; else with numpy and Pillow (within 0.002 of the scores: tests/packaging), and
    nothing here imports torch. A slim install serves without it; an install with torch serves
    the published numbers whatever else it has loaded."""
    if "torch" in sys.modules:
        return sys.modules["torch"] is not None
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def resize_hwc(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB ``(H, W, 3)`` resized to ``size`` = ``(H', W')`` by Pillow's antialiased
    bilinear filter (the one :func:`resize` runs in torch); returned as is when it already has
    that size."""
    if tuple(rgb.shape[:2]) == tuple(size):
        return rgb
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    return np.asarray(image.resize((size[1], size[0]), Image.Resampling.BILINEAR))


def normalize(rgb: Tensor | np.ndarray, spec: PreprocessSpec) -> Tensor | np.ndarray:
    """RGB in 0-255 with channels at dim -3 -> float32 ``(x - mean) / std``, same shape (a
    numpy array stays one)."""
    if isinstance(rgb, np.ndarray):
        mean = np.asarray(spec.mean, np.float32).reshape(3, 1, 1)
        std = np.asarray(spec.std, np.float32).reshape(3, 1, 1)
        return (rgb.astype(np.float32) - mean) / std
    pixels = rgb.float()
    mean = pixels.new_tensor(spec.mean).view(3, 1, 1)
    std = pixels.new_tensor(spec.std).view(3, 1, 1)
    return (pixels - mean) / std


def frames_to_clip(frames: Tensor, spec: PreprocessSpec) -> Tensor:
    """uint8 RGB frames ``(T, 3, H, W)`` -> normalised float32 clip ``(3, T, H', W')`` at the
    spec's short side."""
    size = scaled_size(frames.shape[-2], frames.shape[-1], spec.short_side)
    return normalize(resize(frames, size), spec).permute(1, 0, 2, 3).contiguous()
