"""Video decoding with PyAV, shared by serving and training: model clips sampled as trained
(:func:`decode_clips`, and :func:`~fbil.model.video.stream.stream_clips` for a whole video one
clip at a time) and displayed frames (:func:`read_frames`) at given times.

Times are seconds from the video stream's declared start (``stream.start_time``, or the first
decoded frame when the container declares none): the position a player shows. A frame's time is
its presentation timestamp (ffmpeg's best-effort rule: pts unless pts is less consistent than
dts), never a frame counter. Each time takes the decoded frame nearest to it. Display rotation
(the stream's display matrix) is applied, so widths, heights and box coordinates are those of
the displayed picture. Only frames that some sample time picks are ever converted.

Only the video around the keyframes is decoded, in one forward pass that never seeks
(:mod:`~fbil.model.video.decode`): each frame is decoded at most once and the clips are those of
a decode from the start. :class:`VideoLimits` bounds what decoding may cost (bytes, duration,
frame size), checked on the header and again on decoded data, and the work of one call (decoded
pixels, seconds spent decoding); ``None`` is no limit. A ``cancel`` event stops a call between
two packets.

The package: ``types`` (limits, errors, results), ``container`` (opening, header checks),
``sampling`` (nearest frames, conversion), ``decode`` (the forward pass), ``stream`` (clips of
a whole video one by one); the functions below are its public face.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from fbil.model.preprocess import PreprocessSpec
from fbil.model.video.decode import (
    check_times,
    decode_pass,
    find_segment_end,
    probe,
    segment_end,
)
from fbil.model.video.sampling import ClipConverter, ClipSampler, DisplayConverter, FrameSampler
from fbil.model.video.types import (
    Clip,
    DecodeBudgetError,
    DecodeCancelledError,
    Frame,
    KeyframeOutOfRangeError,
    NotAVideoError,
    NoVideoStreamError,
    Source,
    UndecodableVideoError,
    VideoError,
    VideoInfo,
    VideoLimits,
    VideoTooLargeError,
)

__all__ = [
    "Clip",
    "DecodeBudgetError",
    "DecodeCancelledError",
    "Frame",
    "KeyframeOutOfRangeError",
    "NoVideoStreamError",
    "NotAVideoError",
    "Source",
    "UndecodableVideoError",
    "VideoError",
    "VideoInfo",
    "VideoLimits",
    "VideoTooLargeError",
    "decode_clips",
    "probe",
    "read_frames",
    "segment_end",
]


def decode_clips(
    source: Source,
    times: Sequence[float | None],
    spec: PreprocessSpec,
    limits: VideoLimits | None = None,
    *,
    cancel: threading.Event | None = None,
) -> tuple[VideoInfo, list[Clip]]:
    """Clips for keyframes at ``times`` (seconds from the segment start), in the given order.

    One forward pass decodes only the video around the keyframes (see :class:`Packets`); the
    clips are those of a decode from the start. A time of ``None`` (only as the single
    keyframe) means the middle of the segment, whose end is found from packet timestamps (a
    demux-only pass; headers lie about durations). Every keyframe's window (its sample times,
    widened by half a sampling step) must hold a decoded frame. Setting ``cancel`` stops the
    call with :class:`DecodeCancelledError`.
    """
    limits = limits or VideoLimits()
    resolved = _resolve_times(source, times, limits)
    convert = ClipConverter(spec)  # shared: all clips take the first converted frame's size
    info, sampler = decode_pass(
        source, resolved, limits, cancel, lambda: ClipSampler(resolved, spec, convert)
    )
    _check_windows(resolved, sampler.windows, sampler.hits)
    return info, [
        Clip(t, clip, tuple(frame_times))
        for t, clip, frame_times in zip(resolved, sampler.clips, sampler.picked, strict=True)
    ]


def read_frames(
    source: Source,
    times: Sequence[float | None],
    limits: VideoLimits | None = None,
    *,
    cancel: threading.Event | None = None,
) -> tuple[VideoInfo, list[Frame]]:
    """The displayed frames nearest to ``times`` (seconds from the segment start), in order.

    The same decoding and the same nearest-frame rule as :func:`decode_clips` (one sample per
    time, no window to fill); ``None`` is the middle of the segment as there.
    """
    limits = limits or VideoLimits()
    resolved = _resolve_times(source, times, limits)
    convert = DisplayConverter()
    info, sampler = decode_pass(
        source, resolved, limits, cancel, lambda: FrameSampler(resolved, convert)
    )
    return info, [
        Frame(frame_times[0], rgb)
        for frame_times, rgb in zip(sampler.picked, sampler.frames, strict=True)
    ]


def _resolve_times(
    source: Source, times: Sequence[float | None], limits: VideoLimits
) -> list[float]:
    check_times(times, limits)
    if times[0] is None:
        return [find_segment_end(source, limits) / 2]
    return [float(t) for t in times]  # type: ignore[arg-type]


def _check_windows(
    times: Sequence[float], windows: Sequence[tuple[float, float]], hits: Sequence[int]
) -> None:
    """Every keyframe's window must hold a decoded frame (checked in the caller's order)."""
    for t, (lo, hi), count in zip(times, windows, hits, strict=True):
        if not count:
            raise UndecodableVideoError(
                f"no decodable frame between {lo:.3f} s and {hi:.3f} s for keyframe {t} s"
            )
