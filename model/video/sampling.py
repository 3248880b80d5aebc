"""From decoded frames to what callers keep: each sample time takes the nearest decoded frame
(:class:`Sampler`), converted once (:class:`ClipConverter`: resized and normalised for the
model; :class:`DisplayConverter`: the displayed picture at full size).

Clip frames are resized and normalised by :mod:`fbil.model.preprocess` (torch's antialiased
bilinear on uint8) after swscale's full-size RGB conversion: ``benchmarks/decode.py`` measured
that as fast as swscale's own bilinear scaler, and it is the reference antialiased filter.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from fbil.model.preprocess import (
    PreprocessSpec,
    normalize,
    resize,
    resize_hwc,
    scaled_size,
    torch_available,
)
from fbil.model.video.container import display_size, quarter_turns
from fbil.model.video.types import VideoInfo

TIE = 1e-9  # seconds: sample times this close to half-way between two frames pick the earlier


def _rgb(frame: av.VideoFrame, reformatter: VideoReformatter) -> np.ndarray:
    """uint8 RGB ``(H, W, 3)`` of ``frame`` as coded (before rotation), by swscale."""
    return reformatter.reformat(frame, format="rgb24").to_ndarray()


class ClipConverter:
    """Decoded frame -> normalised float32 ``(3, H, W)`` at the clip's displayed size: a torch
    tensor when torch is loaded, else a numpy array (:func:`~fbil.model.preprocess.torch_available`,
    decided once per converter)."""

    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec
        self.size: tuple[int, int] | None = None  # displayed (height, width) of the clip
        self._reformatter = VideoReformatter()
        self.torch = torch_available()

    def __call__(self, frame: av.VideoFrame) -> Any:
        if self.size is None:
            width, height = display_size(frame)
            self.size = scaled_size(height, width, self.spec.short_side)
        turns = quarter_turns(frame)
        coded = self.size[::-1] if turns % 2 else self.size
        if not self.torch:  # resized as coded, then turned: fewer pixels to turn
            rgb = resize_hwc(_rgb(frame, self._reformatter), coded).transpose(2, 0, 1)
            if turns:
                rgb = np.rot90(rgb, turns, axes=(1, 2))
            return normalize(rgb, self.spec)
        import torch

        full = torch.from_numpy(_rgb(frame, self._reformatter)).permute(2, 0, 1)
        rgb = resize(full, coded)
        if turns:
            rgb = torch.rot90(rgb, turns, dims=(1, 2))
        return normalize(rgb, self.spec)


FrameFit = Callable[[int, int], tuple[int, int]]  # displayed (H, W) -> the size to keep


class DisplayConverter:
    """Decoded frame -> its displayed picture, uint8 RGB ``(H, W, 3)`` at full resolution, or
    scaled down (antialiased bilinear) to the size ``fit`` gives for it: what its user needs,
    so a 4K frame is not held at 4K."""

    def __init__(self, fit: FrameFit | None = None) -> None:
        self._reformatter = VideoReformatter()
        self._fit = fit

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        rgb = _rgb(frame, self._reformatter)
        turns = quarter_turns(frame)
        rgb = np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb
        if self._fit is None:
            return rgb
        height, width = rgb.shape[:2]
        size = self._fit(height, width)
        if size == (height, width):
            return rgb
        return np.ascontiguousarray(resize_hwc(rgb, size))  # Pillow: no torch needed


# --------------------------------------------------------------------------- sampling


def clip_window(time: float, spec: PreprocessSpec) -> tuple[float, float]:
    """The times a keyframe's clip covers: its first to last sample time, widened by half the
    sampling step on each side; some decoded frame must lie inside (else the keyframe fails)."""
    offsets = spec.sample_offsets()
    half = spec.frame_interval / spec.base_fps / 2
    return time + offsets[0] - half, time + offsets[-1] + half


class Sampler:
    """Streams frames in time order and gives every sample time the nearest frame.

    Request ``k`` (at ``times[k]``) has one sample time per offset: ``times[k] + offsets[j]``.
    A sample time is settled by the first frame at or after it: the nearest is that frame or
    the one before (ties go to the earlier). Times before the first frame take the first frame;
    those after the last, the last. Only picked frames are converted, each once, and handed to
    :meth:`_store`; at most two full-size frames are held. ``hits[k]`` counts the frames inside
    ``windows[k]``.
    """

    def __init__(
        self,
        times: Sequence[float],
        offsets: Sequence[float],
        windows: Sequence[tuple[float, float]],
        convert: Callable[[av.VideoFrame], Any],
    ) -> None:
        self.times = list(times)
        self.samples = sorted(
            (t + off, k, j) for k, t in enumerate(times) for j, off in enumerate(offsets)
        )
        self.windows = list(windows)
        self.hits = [0] * len(times)
        self._by_start = sorted(range(len(self.windows)), key=lambda k: self.windows[k][0])
        self._opened = 0  # windows of _by_start[:_opened] began at or before the last frame
        self._open: list[tuple[float, int]] = []  # heap (end, k) of those not yet ended
        self.convert = convert
        self.picked = [[math.nan] * len(offsets) for _ in times]
        self._next = 0
        self._prev: tuple[float, av.VideoFrame] | None = None
        self._prev_pixels: Any = None

    @property
    def done(self) -> bool:
        return self._next == len(self.samples)

    @property
    def next_time(self) -> float:
        """The earliest sample time not yet filled (the sampler must not be done)."""
        return self.samples[self._next][0]

    def push(self, time: float, frame: av.VideoFrame) -> None:
        """Offer the next frame (strictly later than the previous one)."""
        self._count_hits(time)
        pixels: Any = None
        while not self.done and self.samples[self._next][0] <= time:
            sample = self.samples[self._next][0]
            if self._prev is not None and sample - self._prev[0] <= time - sample + TIE:
                self._assign(self._prev[0], self._prev_pixels_or_convert())
            else:
                pixels = pixels if pixels is not None else self.convert(frame)
                self._assign(time, pixels)
        self._prev, self._prev_pixels = (time, frame), pixels

    def began(self, info: VideoInfo) -> None:
        """The first frame decoded: what is known of the video (before any :meth:`push`)."""

    def _count_hits(self, time: float) -> None:
        """``hits[k] += 1`` for every window holding ``time``: windows open in order of their
        start and close by their end (a heap), so a frame costs the windows around it, not all
        of them (a long video has thousands)."""
        while self._opened < len(self._by_start):
            k = self._by_start[self._opened]
            if self.windows[k][0] > time:
                break
            heapq.heappush(self._open, (self.windows[k][1], k))
            self._opened += 1
        while self._open and self._open[0][0] < time:
            heapq.heappop(self._open)
        for _, k in self._open:
            self.hits[k] += 1

    def finish(self) -> None:
        """End of stream: the remaining sample times repeat the last frame."""
        while not self.done and self._prev is not None:
            self._assign(self._prev[0], self._prev_pixels_or_convert())

    def _prev_pixels_or_convert(self) -> Any:
        if self._prev_pixels is None:
            self._prev_pixels = self.convert(self._prev[1])
        return self._prev_pixels

    def _assign(self, time: float, pixels: Any) -> None:
        _, k, j = self.samples[self._next]
        self._store(k, j, pixels)
        self.picked[k][j] = time
        self._next += 1

    def _store(self, k: int, j: int, pixels: Any) -> None:
        raise NotImplementedError


class ClipSampler(Sampler):
    """Fills each keyframe's clip ``(3, T, H, W)``, sample ``j`` at ``spec.sample_offsets()[j]``."""

    def __init__(
        self, times: Sequence[float], spec: PreprocessSpec, convert: ClipConverter
    ) -> None:
        super().__init__(
            times, spec.sample_offsets(), [clip_window(t, spec) for t in times], convert
        )
        self.num_frames = spec.num_frames
        self.clips: list[Any] = []

    def _store(self, k: int, j: int, pixels: Any) -> None:
        if not self.clips:
            _, height, width = pixels.shape
            shape = (3, self.num_frames, height, width)
            self.clips = [empty_clip(shape, pixels) for _ in self.times]
        self.clips[k][:, j] = pixels


def empty_clip(shape: tuple[int, ...], like: Any) -> Any:
    """An uninitialised float32 clip of ``shape``, of the array kind of the frame ``like``."""
    if isinstance(like, np.ndarray):
        return np.empty(shape, np.float32)
    import torch

    return torch.empty(shape, dtype=torch.float32)


class FrameSampler(Sampler):
    """Keeps the frame picked for each time itself."""

    def __init__(self, times: Sequence[float], convert: DisplayConverter) -> None:
        super().__init__(times, [0.0], [(t, t) for t in times], convert)
        self.frames: list[np.ndarray | None] = [None] * len(times)

    def _store(self, k: int, j: int, pixels: np.ndarray) -> None:
        self.frames[k] = pixels
