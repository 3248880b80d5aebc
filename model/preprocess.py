"""The preprocessing contract a model was trained with (carried in its metadata)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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
