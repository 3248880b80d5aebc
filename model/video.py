"""Video decoding with PyAV, shared by serving and training: model clips sampled as trained
(:func:`decode_clips`) and displayed frames (:func:`read_frames`) at given times.

Times are seconds from the video stream's declared start (``stream.start_time``, or the first
decoded frame when the container declares none): the position a player shows. A frame's time is
its presentation timestamp (ffmpeg's best-effort rule: pts unless pts is less consistent than
dts), never a frame counter. Each time takes the decoded frame nearest to it. Display rotation
(the stream's display matrix) is applied, so widths, heights and box coordinates are those of
the displayed picture.

Clip frames are resized and normalised by :mod:`fbil.model.preprocess` (torch's antialiased
bilinear on uint8) after swscale's full-size RGB conversion: ``benchmarks/decode.py`` measured
that as fast as swscale's own bilinear scaler, and it is the reference antialiased filter. Only
frames that some sample time picks are ever converted.

Only the video around the keyframes is decoded, in one forward pass that never seeks: all
packets are demuxed, but a packet goes to the decoder only if no key frame comes between it and
the next sample time still to be filled (:class:`_Packets`). The decoder jumps over the rest,
restarting at a key frame, so each frame is decoded at most once and the clips are those of a
decode from the start. Container seeking is not used: MPEG-TS and MPEG-PS seek by timestamp
search and land on any packet, and a demux pass costs little next to decoding.

:class:`VideoLimits` bounds what decoding may cost (bytes, duration, frame size), checked on
the header and again on decoded data, and the work of one call (decoded pixels, seconds spent
decoding); ``None`` is no limit. A ``cancel`` event stops a call between two packets.
"""

from __future__ import annotations

import io
import math
import os
import threading
import time as _clock
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, TypeVar

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from fbil.model.preprocess import PreprocessSpec, normalize, resize, scaled_size

Source = bytes | str | os.PathLike

_TIE = 1e-9  # seconds: sample times this close to half-way between two frames pick the earlier
_END_SLACK = 1e-3  # seconds a keyframe may lie past the last frame's end

_S = TypeVar("_S", bound="_Sampler")


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
    """One keyframe's clip: float32 ``(3, T, H, W)``, normalised; ``frame_times`` are the
    times of the decoded frames picked for the ``T`` sample times."""

    time: float
    clip: torch.Tensor
    frame_times: tuple[float, ...]


@dataclass(frozen=True)
class Frame:
    """The decoded frame nearest to a requested time: its ``time`` and its displayed picture,
    ``rgb`` uint8 ``(H, W, 3)`` at full resolution (display rotation applied)."""

    time: float
    rgb: np.ndarray


# --------------------------------------------------------------------------- opening


@contextmanager
def _open(
    source: Source, limits: VideoLimits
) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
    """Open ``source`` as a container and pick its video stream, after the byte limit."""
    size = len(source) if isinstance(source, bytes) else os.path.getsize(source)
    if limits.max_bytes is not None and size > limits.max_bytes:
        raise VideoTooLargeError(f"video is {size} bytes, the limit is {limits.max_bytes}")
    if size == 0:
        raise NotAVideoError("the video is empty (0 bytes)")
    # A nameless file object and no protocols: playlists (hls, concat) cannot open other files.
    file = io.BytesIO(source) if isinstance(source, bytes) else _Unnamed(source)
    try:
        try:
            container = av.open(file, options={"protocol_whitelist": "none"})
        except (av.FFmpegError, EOFError, OSError) as e:
            raise NotAVideoError(f"not a readable video container: {e}") from e
        with container:
            _refuse_still_images(container)
            yield container, _video_stream(container)
    finally:
        file.close()


def _refuse_still_images(container: av.container.InputContainer) -> None:
    """FFmpeg reads a PNG or JPEG as a one-frame video: refuse it as not a video."""
    name = container.format.name
    if name.endswith("_pipe") or name == "image2":
        raise NotAVideoError(f"a still image ({name.removesuffix('_pipe')}), not a video")


class _Unnamed(io.RawIOBase):
    """A file opened by path but without a ``name``, so ffmpeg cannot probe by extension."""

    def __init__(self, path: str | os.PathLike) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        return self._file.readinto(buffer)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()
        super().close()


def _video_stream(container: av.container.InputContainer) -> av.VideoStream:
    streams = [
        s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic
    ]
    if not streams:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise NoVideoStreamError(f"the container has no video stream (streams: {', '.join(kinds)})")
    stream = streams[0]
    stream.thread_type = "AUTO"
    return stream


def _header_duration(
    container: av.container.InputContainer, stream: av.VideoStream
) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _check_header(container, stream: av.VideoStream, limits: VideoLimits) -> None:
    """Reject from the header alone what is too large to decode."""
    _check_pixels(stream.width, stream.height, limits, "header")
    duration = _header_duration(container, stream)
    if _over(duration, limits.max_duration_s):
        raise VideoTooLargeError(
            f"video lasts {duration:.2f} s, the limit is {limits.max_duration_s} s"
        )


def _check_pixels(width: int, height: int, limits: VideoLimits, where: str) -> None:
    if limits.max_frame_pixels is not None and width * height > limits.max_frame_pixels:
        raise VideoTooLargeError(
            f"{where} frame size {width}x{height} exceeds {limits.max_frame_pixels} pixels"
        )


def _over(seconds: float | None, limit: float | None) -> bool:
    return seconds is not None and limit is not None and seconds > limit


def _fps(stream: av.VideoStream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else None


def _display_size(frame: av.VideoFrame) -> tuple[int, int]:
    quarter_turns = _quarter_turns(frame)
    if quarter_turns % 2:
        return frame.height, frame.width
    return frame.width, frame.height


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns the display matrix asks for (flips are ignored)."""
    return round(frame.rotation / 90) % 4


# --------------------------------------------------------------------------- decoding


class _Budget:
    """The work one call may do (:class:`VideoLimits`) and its ``cancel`` event, checked per
    packet and per decoded frame."""

    def __init__(self, limits: VideoLimits, cancel: threading.Event | None) -> None:
        self.limits, self.cancel = limits, cancel
        self.pixels = 0
        self._deadline = (
            math.inf if limits.max_decode_s is None else _clock.monotonic() + limits.max_decode_s
        )

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise DecodeCancelledError("decoding was cancelled")
        if _clock.monotonic() > self._deadline:
            raise DecodeBudgetError(
                f"decoding took over {self.limits.max_decode_s} s, the limit for one request; "
                "ask for fewer or closer keyframes, or send a shorter segment"
            )

    def count(self, frame: av.VideoFrame) -> None:
        """A decoded frame: its pixels count against the budget."""
        self.pixels += frame.width * frame.height
        limit = self.limits.max_decoded_pixels
        if limit is not None and self.pixels > limit:
            raise DecodeBudgetError(
                f"the keyframes need over {limit} decoded pixels, the limit for one request; "
                "ask for fewer or closer keyframes, or send a shorter or smaller segment"
            )
        self.check()


def _demuxed(container, stream: av.VideoStream, budget: _Budget) -> Iterator[av.Packet | None]:
    """The stream's packets; a damaged container ends early with ``None`` (drain the decoder)."""
    try:
        for packet in container.demux(stream):
            budget.check()
            yield packet
    except av.FFmpegError:  # damaged container: stop reading, flush what the decoder holds
        yield None


def _decoded_frames(packets: Iterable[av.Packet | None], stream: av.VideoStream):
    """Every frame the decoder produces from ``packets``; damaged packets are skipped, not
    fatal; ``None`` drains the decoder."""
    for packet in packets:
        try:
            if packet is None:
                yield from stream.codec_context.decode(None)
            else:
                yield from packet.decode()
        except av.FFmpegError:
            continue


class _Packets:
    """Splits the stream's packets into decode runs, leaving out those no sample needs.

    ``next_sample()`` is the earliest sample time not yet filled. A key-frame packet at or
    before it makes every packet before that key frame unneeded: frames from the key frame on
    never refer to them, and the frame that comes before the next sample is the key frame's or
    a later one. So packets are held back (not decoded) while their time is at or before the
    next sample, dropped when such a key frame comes, and decoded once a later packet comes.
    A key frame met after decoding began ends the run; the next run starts at it, after the
    decoder is flushed (its frames still in flight lie before the key frame). Times are
    seconds from ``origin`` (packet pts, else dts); with ``skip`` false nothing is left out.
    """

    def __init__(
        self,
        container,
        stream: av.VideoStream,
        next_sample: Callable[[], float],
        origin: int | None,
        budget: _Budget,
        skip: bool,
    ) -> None:
        self._stream, self._next_sample, self._origin = stream, next_sample, origin
        self._demuxed = _demuxed(container, stream, budget)
        self._skip = skip and origin is not None
        self._held: list[av.Packet | None] = []
        self.key: float | None = None  # time of the key frame the current run starts at
        self.exhausted = False

    def run(self) -> Iterator[av.Packet | None]:
        """The packets of one run: from its key frame (or where the last run stopped) to the
        next key frame that makes them unneeded, or to the end of the stream."""
        if self.key is not None:
            self._stream.codec_context.flush_buffers()
        sent = False
        for packet in self._demuxed:
            t = self._time(packet)
            if self._jump_point(packet, t):
                self._held, self.key = [packet], t
                if sent:
                    return
                continue
            self._held.append(packet)
            if t is not None and t <= self._next_sample():
                continue  # unneeded if a key frame comes before the next sample
            yield from self._release()
            sent = True
        yield from self._release()
        self.exhausted = True

    def _jump_point(self, packet: av.Packet | None, t: float | None) -> bool:
        """A key frame at or before the next sample: nothing before it is needed."""
        if not (self._skip and packet is not None and packet.is_keyframe and t is not None):
            return False
        return t <= self._next_sample()

    def _release(self) -> Iterator[av.Packet | None]:
        held, self._held = self._held, []
        yield from held

    def _time(self, packet: av.Packet | None) -> float | None:
        if packet is None or self._origin is None:
            return None
        ts = packet.pts if packet.pts is not None else packet.dts
        return None if ts is None else float((ts - self._origin) * self._stream.time_base)


def _timestamped(frames: Iterator[av.VideoFrame], step: int) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield ``(timestamp, frame)`` with strictly increasing timestamps in decoder order.

    Decoders output frames in display order, but some containers (AVI with packed B-frames)
    attach wrong pts. As ffmpeg does, pts is used unless it went backwards more often than dts;
    one frame of look-ahead lets the first fault already count. Missing or repeated
    timestamps are extrapolated by ``step`` ticks.
    """
    faulty_pts = faulty_dts = 0
    last: int | None = None
    held: av.VideoFrame | None = None

    def stamp(frame: av.VideoFrame) -> int:
        nonlocal last
        use_pts = frame.pts is not None and (faulty_pts <= faulty_dts or frame.dts is None)
        ts = frame.pts if use_pts else frame.dts
        if last is not None and (ts is None or ts <= last):
            ts = last + step
        last = 0 if ts is None else ts
        return last

    for frame in frames:
        if held is not None:
            faulty_pts += _went_back(held.pts, frame.pts)
            faulty_dts += _went_back(held.dts, frame.dts)
            yield stamp(held), held
        held = frame
    if held is not None:
        yield stamp(held), held


def _went_back(before: int | None, after: int | None) -> bool:
    return before is not None and after is not None and after <= before


def _frame_step(stream: av.VideoStream) -> int:
    rate = stream.average_rate or stream.guessed_rate or 30
    return max(1, round(1 / (Fraction(rate) * stream.time_base)))


# --------------------------------------------------------------------------- pixels


def _rgb(frame: av.VideoFrame, reformatter: VideoReformatter) -> np.ndarray:
    """uint8 RGB ``(H, W, 3)`` of ``frame`` as coded (before rotation), by swscale."""
    return reformatter.reformat(frame, format="rgb24").to_ndarray()


class _Converter:
    """Decoded frame -> normalised float32 ``(3, H, W)`` at the clip's displayed size."""

    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec
        self.size: tuple[int, int] | None = None  # displayed (height, width) of the clip
        self._reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> torch.Tensor:
        if self.size is None:
            width, height = _display_size(frame)
            self.size = scaled_size(height, width, self.spec.short_side)
        turns = _quarter_turns(frame)
        coded = self.size[::-1] if turns % 2 else self.size
        full = torch.from_numpy(_rgb(frame, self._reformatter)).permute(2, 0, 1)
        rgb = resize(full, coded)  # resized as coded, then turned: fewer pixels to turn
        if turns:
            rgb = torch.rot90(rgb, turns, dims=(1, 2))
        return normalize(rgb, self.spec)


class _Displayed:
    """Decoded frame -> its displayed picture, uint8 RGB ``(H, W, 3)`` at full resolution."""

    def __init__(self) -> None:
        self._reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        rgb = _rgb(frame, self._reformatter)
        turns = _quarter_turns(frame)
        return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


# --------------------------------------------------------------------------- sampling


def _window(time: float, spec: PreprocessSpec) -> tuple[float, float]:
    """The times a keyframe's clip covers: its first to last sample time, widened by half the
    sampling step on each side; some decoded frame must lie inside (else the keyframe fails)."""
    offsets = spec.sample_offsets()
    half = spec.frame_interval / spec.base_fps / 2
    return time + offsets[0] - half, time + offsets[-1] + half


class _Sampler:
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
        for k, (lo, hi) in enumerate(self.windows):
            self.hits[k] += lo <= time <= hi
        pixels: Any = None
        while not self.done and self.samples[self._next][0] <= time:
            sample = self.samples[self._next][0]
            if self._prev is not None and sample - self._prev[0] <= time - sample + _TIE:
                self._assign(self._prev[0], self._prev_pixels_or_convert())
            else:
                pixels = pixels if pixels is not None else self.convert(frame)
                self._assign(time, pixels)
        self._prev, self._prev_pixels = (time, frame), pixels

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


class _ClipSampler(_Sampler):
    """Fills each keyframe's clip ``(3, T, H, W)``, sample ``j`` at ``spec.sample_offsets()[j]``."""

    def __init__(self, times: Sequence[float], spec: PreprocessSpec, convert: _Converter) -> None:
        super().__init__(times, spec.sample_offsets(), [_window(t, spec) for t in times], convert)
        self.num_frames = spec.num_frames
        self.clips: list[torch.Tensor] = []

    def _store(self, k: int, j: int, pixels: torch.Tensor) -> None:
        if not self.clips:
            _, height, width = pixels.shape
            shape = (3, self.num_frames, height, width)
            self.clips = [torch.empty(shape, dtype=torch.float32) for _ in self.times]
        self.clips[k][:, j] = pixels


class _FrameSampler(_Sampler):
    """Keeps the frame picked for each time itself."""

    def __init__(self, times: Sequence[float], convert: _Displayed) -> None:
        super().__init__(times, [0.0], [(t, t) for t in times], convert)
        self.frames: list[np.ndarray | None] = [None] * len(times)

    def _store(self, k: int, j: int, pixels: np.ndarray) -> None:
        self.frames[k] = pixels


# --------------------------------------------------------------------------- public API


def probe(source: Source, limits: VideoLimits | None = None) -> VideoInfo:
    """Check limits and decodability; size from the first decoded frame (displayed)."""
    limits = limits or VideoLimits()
    with _open(source, limits) as (container, stream):
        _check_header(container, stream, limits)
        budget = _Budget(limits, None)
        for frame in _decoded_frames(_demuxed(container, stream, budget), stream):
            _check_pixels(frame.width, frame.height, limits, "decoded")
            width, height = _display_size(frame)
            return VideoInfo(width, height, _fps(stream), _header_duration(container, stream))
    raise UndecodableVideoError("no frame of the video could be decoded")


def decode_clips(
    source: Source,
    times: Sequence[float | None],
    spec: PreprocessSpec,
    limits: VideoLimits | None = None,
    *,
    cancel: threading.Event | None = None,
) -> tuple[VideoInfo, list[Clip]]:
    """Clips for keyframes at ``times`` (seconds from the segment start), in the given order.

    One forward pass decodes only the video around the keyframes (see :class:`_Packets`); the
    clips are those of a decode from the start. A time of ``None`` (only as the single
    keyframe) means the middle of the segment, whose end is found from packet timestamps (a
    demux-only pass; headers lie about durations). Every keyframe's window (its sample times,
    widened by half a sampling step) must hold a decoded frame. Setting ``cancel`` stops the
    call with :class:`DecodeCancelledError`.
    """
    limits = limits or VideoLimits()
    resolved = _resolve_times(source, times, limits)
    convert = _Converter(spec)  # shared: all clips take the first converted frame's size
    info, sampler = _decode(
        source, resolved, limits, cancel, lambda: _ClipSampler(resolved, spec, convert)
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
    convert = _Displayed()
    info, sampler = _decode(
        source, resolved, limits, cancel, lambda: _FrameSampler(resolved, convert)
    )
    return info, [
        Frame(frame_times[0], rgb)
        for frame_times, rgb in zip(sampler.picked, sampler.frames, strict=True)
    ]


def segment_end(source: Source, limits: VideoLimits | None = None) -> float:
    """End of the segment in seconds from its start, from packet timestamps (a demux-only
    pass, no decoding: headers lie about durations); the ``None`` keyframe time is its middle."""
    return _segment_end(source, limits or VideoLimits())


def _resolve_times(
    source: Source, times: Sequence[float | None], limits: VideoLimits
) -> list[float]:
    _check_times(times, limits)
    if times[0] is None:
        return [_segment_end(source, limits) / 2]
    return [float(t) for t in times]  # type: ignore[arg-type]


def _check_times(times: Sequence[float | None], limits: VideoLimits) -> None:
    if not times:
        raise KeyframeOutOfRangeError("no keyframe time given")
    if None in times and len(times) > 1:
        raise KeyframeOutOfRangeError("a keyframe time may be omitted only for a single keyframe")
    limit = limits.max_duration_s
    end = math.inf if limit is None else limit
    for t in times:
        if t is not None and not (0 <= t <= end and math.isfinite(t)):
            span = "0 s and up (finite)" if limit is None else f"0..{limit} s"
            raise KeyframeOutOfRangeError(f"keyframe time {t} s is outside {span}")


def _segment_end(source: Source, limits: VideoLimits) -> float:
    """End of the segment (seconds from its start) from packet timestamps, without decoding."""
    with _open(source, limits) as (container, stream):
        _check_header(container, stream, limits)
        start, end = stream.start_time, None
        try:
            for packet in container.demux(stream):
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is not None:
                    start = ts if start is None else start
                    tail = ts + (packet.duration or 0)
                    end = tail if end is None else max(end, tail)
        except av.FFmpegError:
            pass  # damaged tail: the end is the last readable packet
    if end is None or start is None:
        raise UndecodableVideoError("the video has no timestamped packet")
    seconds = float((end - start) * stream.time_base)
    if _over(seconds, limits.max_duration_s):
        raise VideoTooLargeError(
            f"video lasts {seconds:.2f} s, the limit is {limits.max_duration_s} s"
        )
    return seconds


def _decode(
    source: Source,
    times: list[float],
    limits: VideoLimits,
    cancel: threading.Event | None,
    new_sampler: Callable[[], _S],
) -> tuple[VideoInfo, _S]:
    """Fill a sampler from ``new_sampler`` with one forward pass over ``source``.

    The pass leaves out what no sample needs (:class:`_Packets`). Should a key frame not
    decode where its packet said (its first frame comes after the next sample, or none comes),
    the pass starts again from the beginning without leaving anything out. Errors come as
    from a decode of the whole stream: limits as frames decode, times past the segment's end,
    a video without a decodable frame.
    """
    budget = _Budget(limits, cancel)
    for skip in (True, False):
        sampler = new_sampler()
        with _open(source, limits) as (container, stream):
            _check_header(container, stream, limits)
            try:
                display, last, ended = _feed(container, stream, sampler, limits, budget, skip)
            except _JumpedTooFar:
                continue
            if ended:  # the stream's end is known: check the whole request against it
                _check_in_segment(times, last, container, stream)
            fps, header_duration = _fps(stream), _header_duration(container, stream)
        if display is None:
            raise UndecodableVideoError("no frame of the video could be decoded")
        return VideoInfo(display[0], display[1], fps, header_duration), sampler
    raise AssertionError("the pass without skipping cannot jump")


class _JumpedTooFar(Exception):
    """After a jump to a key frame, its first frame came after the next sample, or no frame."""


def _feed(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    sampler: _Sampler,
    limits: VideoLimits,
    budget: _Budget,
    skip: bool,
) -> tuple[tuple[int, int] | None, tuple[float, av.VideoFrame] | None, bool]:
    """Decode until ``sampler`` is done or the stream ends, in runs (:class:`_Packets`).

    Returns the displayed size of the first decoded frame and the last ``(time, frame)``
    (``None`` if nothing decoded), and whether the stream ended. Frames of a run that began at
    a key frame and lie before it (leading frames of an open GOP, which refer to frames before
    the jump) are dropped. Every decoded frame counts against ``budget`` and is checked
    against the limits; at the end of the stream the remaining samples repeat its last frame.
    """
    tb, origin = stream.time_base, stream.start_time
    packets = _Packets(container, stream, _next_sample(sampler), origin, budget, skip)
    display: tuple[int, int] | None = None
    last: tuple[float, av.VideoFrame] | None = None
    while not packets.exhausted:
        first = True
        for ts, frame in _timestamped(_decoded_frames(packets.run(), stream), _frame_step(stream)):
            budget.count(frame)
            if origin is None:
                origin = ts
            time = float((ts - origin) * tb)
            if packets.key is not None:
                if time < packets.key - _TIE:
                    continue
                if first and time > sampler.next_time:
                    raise _JumpedTooFar
            first = False
            _check_pixels(frame.width, frame.height, limits, "decoded")
            if _over(time, limits.max_duration_s):
                raise VideoTooLargeError(
                    f"video has frames at {time:.2f} s, the limit is {limits.max_duration_s} s"
                )
            display = display or _display_size(frame)
            sampler.push(time, frame)
            last = (time, frame)
            if sampler.done:
                return display, last, False
        if first and packets.key is not None:
            raise _JumpedTooFar
    sampler.finish()
    return display, last, True


def _next_sample(sampler: _Sampler) -> Callable[[], float]:
    return lambda: math.inf if sampler.done else sampler.next_time


def _check_in_segment(times, last, container, stream: av.VideoStream) -> None:
    """After the whole stream: a keyframe past the segment's end is out of range."""
    if last is None:
        return
    time, frame = last
    frame_duration = float(frame.duration * stream.time_base) if frame.duration else 0.0
    end = max(time + frame_duration, _header_duration(container, stream) or 0.0)
    for t in times:
        if t > end + _END_SLACK:
            raise KeyframeOutOfRangeError(
                f"keyframe time {t} s is past the segment end ({end:.3f} s)"
            )


def _check_windows(
    times: Sequence[float], windows: Sequence[tuple[float, float]], hits: Sequence[int]
) -> None:
    """Every keyframe's window must hold a decoded frame (checked in the caller's order)."""
    for t, (lo, hi), count in zip(times, windows, hits, strict=True):
        if not count:
            raise UndecodableVideoError(
                f"no decodable frame between {lo:.3f} s and {hi:.3f} s for keyframe {t} s"
            )
