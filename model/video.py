"""Video segment -> model clips: decode with PyAV, sample as trained, resize, normalise.

Times are seconds from the video stream's declared start (``stream.start_time``, or the first
decoded frame when the container declares none): the position a player shows. A frame's time is
its presentation timestamp (ffmpeg's best-effort rule: pts unless pts is less consistent than
dts), never a frame counter. Display rotation (the stream's display matrix) is applied, so widths,
heights and box coordinates are those of the displayed picture.

Resizing runs in torch (antialiased bilinear on uint8) after swscale's full-size RGB conversion:
``benchmarks/decode.py`` measured it as fast as swscale's own bilinear scaler, and it is the
reference antialiased filter. Only frames that some sample time picks are ever converted.

Only the video around the keyframes is decoded: keyframes whose windows lie close together
(``REGROUP_GAP_S``) share one pass and its decoded frames; each such group seeks to the key
frame before its first sample and decodes up to its last. A group's clips are the same as if
its keyframes were requested alone.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, NamedTuple, TypeVar

import av
import numpy as np
import torch
import torch.nn.functional as F
from av.video.reformatter import VideoReformatter

from fbil.model.preprocess import PreprocessSpec

Source = bytes | str | os.PathLike
Resizer = Literal["torch", "swscale"]

_TIE = 1e-9  # seconds: sample times this close to half-way between two frames pick the earlier
_END_SLACK = 1e-3  # seconds a keyframe may lie past the last frame's end
# Keyframe windows less than this many seconds apart (one's end to the next one's start) are
# decoded in one pass; a window farther on gets its own pass, which seeks to the key frame
# before it. Decoding through a gap costs its frames, a seek the frames from that key frame on
# (up to one key-frame interval), so the threshold sits above the usual 0.5-2 s intervals of
# camera and web video. With longer intervals a seek may redo up to one interval per group.
REGROUP_GAP_S = 3.0

_T = TypeVar("_T")


@dataclass(frozen=True)
class VideoLimits:
    """What one request may cost; checked on the header and again on decoded data."""

    max_bytes: int = 200 * 1024 * 1024
    max_duration_s: float = 60.0
    max_frame_pixels: int = 3840 * 2160
    max_keyframes: int = 16
    max_boxes_per_keyframe: int = 32


class VideoError(Exception):
    """Base of the errors a caller's video or boxes can cause; ``code`` is machine-readable."""

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


class BadBoxError(VideoError):
    code = "bad_box"


@dataclass(frozen=True)
class VideoInfo:
    """Displayed size (after rotation), nominal frame rate and duration in seconds, if known."""

    width: int
    height: int
    fps: float | None
    duration: float | None


@dataclass(frozen=True)
class Keyframe:
    """One keyframe's clip: float32 ``(3, T, H, W)``, normalised; ``frame_times`` are the
    times of the decoded frames picked for the ``T`` sample times."""

    time: float
    clip: torch.Tensor
    frame_times: tuple[float, ...]


# --------------------------------------------------------------------------- opening


@contextmanager
def _open(
    source: Source, limits: VideoLimits
) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
    """Open ``source`` as a container and pick its video stream, after the byte limit."""
    size = len(source) if isinstance(source, bytes) else os.path.getsize(source)
    if size > limits.max_bytes:
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
            yield container, _video_stream(container)
    finally:
        file.close()


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
    if duration is not None and duration > limits.max_duration_s:
        raise VideoTooLargeError(
            f"video lasts {duration:.2f} s, the limit is {limits.max_duration_s} s"
        )


def _check_pixels(width: int, height: int, limits: VideoLimits, where: str) -> None:
    if width * height > limits.max_frame_pixels:
        raise VideoTooLargeError(
            f"{where} frame size {width}x{height} exceeds {limits.max_frame_pixels} pixels"
        )


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


def _decoded_frames(container, stream: av.VideoStream) -> Iterator[av.VideoFrame]:
    """Every frame the decoder can produce; damaged packets are skipped, not fatal."""
    try:
        for packet in container.demux(stream):
            try:
                yield from packet.decode()
            except av.FFmpegError:
                continue
    except av.FFmpegError:  # damaged container: stop reading, flush what the decoder holds
        try:
            yield from stream.codec_context.decode(None)
        except av.FFmpegError:
            return


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


class _Converter:
    """Decoded frame -> normalised float32 ``(3, H, W)`` at the clip's displayed size."""

    def __init__(self, spec: PreprocessSpec, resizer: Resizer = "torch") -> None:
        self.mean = torch.tensor(spec.mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(spec.std, dtype=torch.float32).view(3, 1, 1)
        self.short_side = spec.short_side
        self.resizer = resizer
        self.size: tuple[int, int] | None = None  # displayed (height, width) of the clip
        self._reformatter = VideoReformatter()

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """Short side to ``short_side``, long side ``floor(short_side * long / short)``."""
        if width <= height:
            return self.short_side * height // width, self.short_side
        return self.short_side, self.short_side * width // height

    def __call__(self, frame: av.VideoFrame) -> torch.Tensor:
        if self.size is None:
            self.size = self.target_size(*_display_size(frame))
        turns = _quarter_turns(frame)
        coded = self.size[::-1] if turns % 2 else self.size
        rgb = resize_rgb(frame, coded, self.resizer, self._reformatter)
        if turns:
            rgb = torch.rot90(rgb, turns, dims=(1, 2))
        return (rgb.float() - self.mean) / self.std


def resize_rgb(
    frame: av.VideoFrame,
    size: tuple[int, int],
    resizer: Resizer = "torch",
    reformatter: VideoReformatter | None = None,
) -> torch.Tensor:
    """uint8 RGB ``(3, H, W)`` of ``frame`` resized to ``size`` = (H, W), bilinear, antialiased.

    ``torch``: swscale converts to RGB at full size, torch resizes; ``swscale``: one swscale
    call converts and resizes (its bilinear filter widens when shrinking, like antialiasing).
    """
    reformatter = reformatter or VideoReformatter()
    height, width = size
    if resizer == "swscale":
        small = reformatter.reformat(
            frame, width=width, height=height, format="rgb24", interpolation="BILINEAR"
        )
        return torch.from_numpy(small.to_ndarray()).permute(2, 0, 1)
    full = torch.from_numpy(reformatter.reformat(frame, format="rgb24").to_ndarray())
    if full.shape[:2] == (height, width):
        return full.permute(2, 0, 1)
    batch = full.permute(2, 0, 1).unsqueeze(0)
    return F.interpolate(batch, size=size, mode="bilinear", antialias=True, align_corners=False)[0]


# --------------------------------------------------------------------------- sampling


def _window(time: float, spec: PreprocessSpec) -> tuple[float, float]:
    """The times a keyframe's clip covers: its first to last sample time, widened by half the
    sampling step on each side; some decoded frame must lie inside (else the keyframe fails)."""
    offsets = spec.sample_offsets()
    half = spec.frame_interval / spec.base_fps / 2
    return time + offsets[0] - half, time + offsets[-1] + half


class _Sampler:
    """Streams frames in time order and fills every keyframe's clip with the nearest frame.

    A sample time is settled by the first frame at or after it: the nearest is that frame or
    the one before (ties go to the earlier). Times before the first frame take the first frame;
    those after the last, the last. Only picked frames are converted, each once; at most two
    full-size frames are held.
    """

    def __init__(self, times: Sequence[float], spec: PreprocessSpec, convert: _Converter) -> None:
        offsets = spec.sample_offsets()
        self.times = list(times)
        self.samples = sorted(
            (t + off, k, j) for k, t in enumerate(times) for j, off in enumerate(offsets)
        )
        self.windows = [_window(t, spec) for t in times]
        self.hits = [0] * len(times)
        self.num_frames = spec.num_frames
        self.convert = convert
        self.clips: list[torch.Tensor] = []
        self.picked = [[math.nan] * spec.num_frames for _ in times]
        self._next = 0
        self._prev: tuple[float, av.VideoFrame] | None = None
        self._prev_pixels: torch.Tensor | None = None

    @property
    def earliest(self) -> float:
        return self.samples[0][0]

    @property
    def done(self) -> bool:
        return self._next == len(self.samples)

    def push(self, time: float, frame: av.VideoFrame) -> None:
        """Offer the next frame (strictly later than the previous one)."""
        for k, (lo, hi) in enumerate(self.windows):
            self.hits[k] += lo <= time <= hi
        pixels: torch.Tensor | None = None
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

    def _prev_pixels_or_convert(self) -> torch.Tensor:
        if self._prev_pixels is None:
            self._prev_pixels = self.convert(self._prev[1])
        return self._prev_pixels

    def _assign(self, time: float, pixels: torch.Tensor) -> None:
        _, k, j = self.samples[self._next]
        if not self.clips:
            _, height, width = pixels.shape
            shape = (3, self.num_frames, height, width)
            self.clips = [torch.empty(shape, dtype=torch.float32) for _ in self.times]
        self.clips[k][:, j] = pixels
        self.picked[k][j] = time
        self._next += 1


# --------------------------------------------------------------------------- public API


def probe(source: Source, limits: VideoLimits) -> VideoInfo:
    """Check limits and decodability; size from the first decoded frame (displayed)."""
    with _open(source, limits) as (container, stream):
        _check_header(container, stream, limits)
        for frame in _decoded_frames(container, stream):
            _check_pixels(frame.width, frame.height, limits, "decoded")
            width, height = _display_size(frame)
            return VideoInfo(width, height, _fps(stream), _header_duration(container, stream))
    raise UndecodableVideoError("no frame of the video could be decoded")


def decode_keyframes(
    source: Source,
    times: Sequence[float | None],
    spec: PreprocessSpec,
    limits: VideoLimits,
    *,
    resizer: Resizer = "torch",
) -> tuple[VideoInfo, list[Keyframe]]:
    """Clips for keyframes at ``times`` (seconds from the segment start), in the given order.

    Only the video around the keyframes is decoded: keyframes whose windows lie within
    :data:`REGROUP_GAP_S` of each other share one pass, and each such group seeks to the key
    frame before its first sample (see :func:`_groups`). A time of ``None`` (only as the
    single keyframe) means the middle of the segment, whose end is found from packet
    timestamps (a demux-only pass; headers lie about durations).
    """
    _check_times(times, limits)
    if times[0] is None:
        times = [_segment_end(source, limits) / 2]
    resolved = [float(t) for t in times]  # type: ignore[arg-type]
    return _decode(source, resolved, spec, limits, resizer, seek=True, gap_s=REGROUP_GAP_S)


def _check_times(times: Sequence[float | None], limits: VideoLimits) -> None:
    if not times:
        raise KeyframeOutOfRangeError("no keyframe time given")
    if len(times) > limits.max_keyframes:
        raise VideoTooLargeError(
            f"{len(times)} keyframes requested, the limit is {limits.max_keyframes}"
        )
    if None in times and len(times) > 1:
        raise KeyframeOutOfRangeError("a keyframe time may be omitted only for a single keyframe")
    for t in times:
        if t is not None and not (0 <= t <= limits.max_duration_s):
            raise KeyframeOutOfRangeError(
                f"keyframe time {t} s is outside 0..{limits.max_duration_s} s"
            )


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
    if seconds > limits.max_duration_s:
        raise VideoTooLargeError(
            f"video lasts {seconds:.2f} s, the limit is {limits.max_duration_s} s"
        )
    return seconds


def _groups(windows: Sequence[tuple[float, float]], gap_s: float) -> list[list[int]]:
    """Keyframe indices grouped into decode passes; groups in time order.

    Windows sorted by start join the group before them when they start less than ``gap_s``
    after its end (overlapping windows always do); a window farther away starts a new group.
    """
    groups: list[list[int]] = []
    end = -math.inf
    for k in sorted(range(len(windows)), key=windows.__getitem__):
        start, stop = windows[k]
        if groups and start - end < gap_s:
            groups[-1].append(k)
        else:
            groups.append([k])
        end = max(end, stop)
    return groups


def _decode(
    source: Source,
    times: list[float],
    spec: PreprocessSpec,
    limits: VideoLimits,
    resizer: Resizer,
    *,
    seek: bool,
    gap_s: float,
) -> tuple[VideoInfo, list[Keyframe]]:
    """Decode ``times`` in groups (:func:`_groups` with ``gap_s``), one pass per group.

    Passes run in time order in one container, each seeking (``seek``) to its group's first
    sample. Without seeking, or when the stream declares no start time to seek from, a single
    group decodes from the start. Errors come as from one pass over the whole request: limits
    as frames decode, keyframes past the segment's end, then windows without a frame.
    """
    convert = _Converter(spec, resizer)  # shared: all clips take the first converted frame's size
    windows = [_window(t, spec) for t in times]
    with _open(source, limits) as (container, stream):
        _check_header(container, stream, limits)
        seek = seek and stream.start_time is not None  # seek targets are start-relative
        groups = _groups(windows, gap_s if seek else math.inf)
        samplers = [_Sampler([times[k] for k in group], spec, convert) for group in groups]
        passes: list[_Fed] = []
        latest: tuple[float, av.VideoFrame] | None = None  # the last frame decoded so far
        for sampler in samplers:
            fed = _decode_group(source, container, stream, sampler, limits, seek=seek)
            latest = fed.last or latest
            if fed.ended:  # the stream's end is known: check the whole request against it
                _check_in_segment(times, latest, container, stream)
            passes.append(fed)
        fps, header_duration = _fps(stream), _header_duration(container, stream)
    display = next((fed.display for fed in passes if fed.display is not None), None)
    if display is None:
        raise UndecodableVideoError("no frame of the video could be decoded")
    _check_windows(times, windows, _in_caller_order(groups, [s.hits for s in samplers]))
    clips = _in_caller_order(groups, [s.clips for s in samplers])
    picked = _in_caller_order(groups, [s.picked for s in samplers])
    info = VideoInfo(display[0], display[1], fps, header_duration)
    keyframes = [
        Keyframe(t, clip, tuple(frame_times))
        for t, clip, frame_times in zip(times, clips, picked, strict=True)
    ]
    return info, keyframes


class _Fed(NamedTuple):
    """One pass: the displayed size of its first decoded frame and its last ``(time, frame)``
    (both ``None`` if nothing decoded), and whether it ran to the end of the stream."""

    display: tuple[int, int] | None
    last: tuple[float, av.VideoFrame] | None
    ended: bool


class _SeekedTooFar(Exception):
    """After seeking, the first decoded frame came after the earliest sample time."""


def _decode_group(
    source: Source,
    container: av.container.InputContainer,
    stream: av.VideoStream,
    sampler: _Sampler,
    limits: VideoLimits,
    *,
    seek: bool,
) -> _Fed:
    """Feed one group's sampler from the key frame before its earliest sample.

    Without ``seek``, or when no sample lies after 0 s, decode from where ``container`` is,
    which must then be its start. If seeking fails or lands after the earliest sample, the
    group decodes from the start in a fresh container.
    """
    if not (seek and sampler.earliest > 0):
        return _feed(container, stream, sampler, limits, seeked=False)
    try:
        if _seek(container, stream, sampler.earliest):
            return _feed(container, stream, sampler, limits, seeked=True)
    except _SeekedTooFar:
        pass
    with _open(source, limits) as (fresh, fresh_stream):
        _check_header(fresh, fresh_stream, limits)
        return _feed(fresh, fresh_stream, sampler, limits, seeked=False)


def _seek(container: av.container.InputContainer, stream: av.VideoStream, time: float) -> bool:
    """Seek to the key frame at or before ``time`` (seconds from the declared start)."""
    target = stream.start_time + int(time / stream.time_base)
    try:
        container.seek(target, stream=stream, backward=True, any_frame=False)
    except av.FFmpegError:
        return False
    return True


def _feed(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    sampler: _Sampler,
    limits: VideoLimits,
    *,
    seeked: bool,
) -> _Fed:
    """Decode from the current position until ``sampler`` is done or the stream ends.

    Every decoded frame is checked against the limits. At the end of the stream the remaining
    sample times repeat its last frame. Raises :class:`_SeekedTooFar`, before anything is fed,
    when ``seeked`` and the first frame comes after the earliest sample.
    """
    tb, origin = stream.time_base, stream.start_time
    display: tuple[int, int] | None = None
    last: tuple[float, av.VideoFrame] | None = None
    for ts, frame in _timestamped(_decoded_frames(container, stream), _frame_step(stream)):
        if origin is None:
            origin = ts
        time = float((ts - origin) * tb)
        if seeked and last is None and time > sampler.earliest:
            raise _SeekedTooFar
        _check_pixels(frame.width, frame.height, limits, "decoded")
        if time > limits.max_duration_s:
            raise VideoTooLargeError(
                f"video has frames at {time:.2f} s, the limit is {limits.max_duration_s} s"
            )
        display = display or _display_size(frame)
        sampler.push(time, frame)
        last = (time, frame)
        if sampler.done:
            return _Fed(display, last, ended=False)
    sampler.finish()
    return _Fed(display, last, ended=True)


def _in_caller_order(groups: list[list[int]], per_group: Sequence[Sequence[_T]]) -> list[_T]:
    """Values listed group by group (each in its group's order) back in the keyframes' order."""
    out: list[_T | None] = [None] * sum(map(len, groups))
    for group, values in zip(groups, per_group, strict=True):
        for k, value in zip(group, values, strict=True):
            out[k] = value
    return out  # type: ignore[return-value]


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


# --------------------------------------------------------------------------- boxes


def normalize_boxes(
    boxes: Sequence[Sequence[float]],
    box_format: Literal["pixels", "normalized"],
    width: int,
    height: int,
    limits: VideoLimits,
    tolerance: float = 0.02,
) -> torch.Tensor:
    """Validate boxes ``x1, y1, x2, y2`` and return them normalised, ``(n, 4)`` float32 in 0..1.

    ``pixels`` are coordinates in the displayed frame of ``width`` x ``height``; ``normalized``
    are already fractions of it. Row ``i`` is box ``i``. Boxes may exceed the frame by
    ``tolerance`` (a fraction of its size) and are then clipped; anything else raises
    :class:`BadBoxError` naming the box.
    """
    if box_format not in ("pixels", "normalized"):
        raise BadBoxError(f"unknown box format {box_format!r} (pixels or normalized)")
    if len(boxes) > limits.max_boxes_per_keyframe:
        raise VideoTooLargeError(
            f"{len(boxes)} boxes given, the limit is {limits.max_boxes_per_keyframe} per keyframe"
        )
    scale = np.array([width, height, width, height], dtype=np.float64)
    rows = []
    for i, box in enumerate(boxes):
        values = _box_values(i, box)
        norm = values / scale if box_format == "pixels" else values
        _check_box(i, box, norm, tolerance)
        rows.append(np.clip(norm, 0.0, 1.0))
    out = np.stack(rows) if rows else np.zeros((0, 4))
    return torch.from_numpy(out.astype(np.float32))


def _box_values(i: int, box: Sequence[float]) -> np.ndarray:
    try:
        values = np.asarray(box, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise BadBoxError(f"box {i} is not 4 numbers: {box!r}") from e
    if values.shape != (4,):
        raise BadBoxError(f"box {i} needs 4 numbers x1, y1, x2, y2, got {box!r}")
    if not np.isfinite(values).all():
        raise BadBoxError(f"box {i} has a non-finite coordinate: {box!r}")
    return values


def _check_box(i: int, box: Sequence[float], norm: np.ndarray, tolerance: float) -> None:
    x1, y1, x2, y2 = norm
    if not (x1 < x2 and y1 < y2):
        raise BadBoxError(f"box {i} is empty or inverted (needs x1 < x2 and y1 < y2): {box!r}")
    if norm.min() < -tolerance or norm.max() > 1 + tolerance:
        raise BadBoxError(f"box {i} lies outside the frame: {box!r}")
    clipped = np.clip(norm, 0.0, 1.0)
    if not (clipped[0] < clipped[2] and clipped[1] < clipped[3]):
        raise BadBoxError(f"box {i} has no area inside the frame: {box!r}")
