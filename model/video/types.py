"""The video layer's types: what decoding may cost (:class:`VideoLimits`), the errors a video
can cause (each with its ``code``), and what decoding returns (:class:`VideoInfo`,
:class:`Clip`, :class:`Frame`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

Source = bytes | str | os.PathLike
"""A video: its bytes, or the path of its file."""


@dataclass(frozen=True)
class VideoLimits:
    """What decoding one video may cost; checked on the header and again on decoded data.

    ``None`` is no limit; ``VideoLimits()`` limits nothing.
    """

    max_bytes: int | None = None
    max_duration_s: float | None = None
    max_frame_pixels: int | None = None
    max_decoded_pixels: int | None = None  # frame pixels summed over the frames one call decodes
    max_decode_s: float | None = None  # seconds one call may spend decoding


class VideoError(Exception):
    """Base of the errors a video (or times in it) can cause; ``code`` is machine-readable."""

    code = "video_error"


class NotAVideoError(VideoError):
    code = "not_a_video"


class NoVideoStreamError(VideoError):
    code = "no_video_stream"


class UndecodableVideoError(VideoError):
    code = "undecodable_video"


class KeyframeOutOfRangeError(VideoError):
    code = "keyframe_out_of_range"


class VideoTooLargeError(VideoError):
    code = "video_too_large"


class DecodeBudgetError(VideoError):
    """The keyframes asked for more decoding than one call may do (:class:`VideoLimits`)."""

    code = "decode_budget_exceeded"


class DecodeCancelledError(Exception):
    """The caller's ``cancel`` event was set: nobody waits for the result any more (not a
    problem of the video, so no :class:`VideoError` and no HTTP answer)."""


@dataclass(frozen=True)
class VideoInfo:
    """Displayed size (after rotation), nominal frame rate and duration in seconds, if known."""

    width: int
    height: int
    fps: float | None
    duration: float | None


@dataclass(frozen=True)
class Clip:
    """One keyframe's clip: float32 ``(3, T, H, W)``, normalised (a torch tensor when torch is
    loaded, else a numpy array: :func:`fbil.model.preprocess.torch_available`); ``frame_times`` are
    the times of the decoded frames picked for the ``T`` sample times."""

    time: float
    clip: Any
    frame_times: tuple[float, ...]


@dataclass(frozen=True)
class Frame:
    """The decoded frame nearest to a requested time: its ``time`` and its displayed picture,
    ``rgb`` uint8 ``(H, W, 3)`` at full resolution (display rotation applied)."""

    time: float
    rgb: np.ndarray
