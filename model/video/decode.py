"""The one forward pass over a video (:func:`decode_pass`): demuxes every packet once, decodes
only what a sampler's next sample time needs (:class:`Packets`), each frame at most once, and
checks the work against :class:`~fbil.model.video.types.VideoLimits` and a ``cancel`` event.

Packets are never sought: MPEG-TS and MPEG-PS seek by timestamp search and land on any packet,
and a demux pass costs little next to decoding. The decoder instead jumps over the packets no
sample needs, restarting at an I-frame (the codec's intra-coded frame, from which decoding can
start), so the frames are those of a decode from the start.
"""

from __future__ import annotations

import math
import threading
import time as _clock
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TypeVar

import av

from fbil.model.video.container import (
    check_header,
    check_pixels,
    display_size,
    header_duration,
    nominal_fps,
    open_video,
    over_limit,
)
from fbil.model.video.sampling import TIE, Sampler
from fbil.model.video.types import (
    DecodeBudgetError,
    DecodeCancelledError,
    KeyframeOutOfRangeError,
    Source,
    UndecodableVideoError,
    VideoInfo,
    VideoLimits,
    VideoTooLargeError,
)

_END_SLACK = 1e-3  # seconds a keyframe may lie past the last frame's end

S = TypeVar("S", bound=Sampler)


@dataclass(frozen=True)
class DecodeCounts:
    """Video packets demuxed and frames decoded by this process so far (every call, every
    thread): what ``fbil_video_*_total`` metrics and the benchmarks read."""

    packets: int = 0
    frames: int = 0


_counts = [0, 0]  # packets, frames
_counts_lock = threading.Lock()


def decode_counts() -> DecodeCounts:
    """The packets demuxed and frames decoded by this process so far."""
    with _counts_lock:
        return DecodeCounts(*_counts)


def _counted(kind: int) -> None:
    with _counts_lock:
        _counts[kind] += 1


class Budget:
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
        _counted(1)
        self.pixels += frame.width * frame.height
        limit = self.limits.max_decoded_pixels
        if limit is not None and self.pixels > limit:
            raise DecodeBudgetError(
                f"the keyframes need over {limit} decoded pixels, the limit for one request; "
                "ask for fewer or closer keyframes, or send a shorter or smaller segment"
            )
        self.check()


def demuxed(container, stream: av.VideoStream, budget: Budget) -> Iterator[av.Packet | None]:
    """The stream's packets; a damaged container ends early with ``None`` (drain the decoder)."""
    try:
        for packet in container.demux(stream):
            budget.check()
            if packet.size:  # not the empty packet that ends the stream
                _counted(0)
            yield packet
    except av.FFmpegError:  # damaged container: stop reading, flush what the decoder holds
        yield None


def decoded_frames(packets: Iterable[av.Packet | None], stream: av.VideoStream):
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


class Packets:
    """Splits the stream's packets into decode runs, leaving out those no sample needs.

    ``next_sample()`` is the earliest sample time not yet filled. An I-frame packet at or
    before it makes every packet before that I-frame unneeded: frames from the I-frame on
    never refer to them, and the frame that comes before the next sample is the I-frame's or
    a later one. So packets are held back (not decoded) while their time is at or before the
    next sample, dropped when such an I-frame comes, and decoded once a later packet comes.
    An I-frame met after decoding began ends the run; the next run starts at it, after the
    decoder is flushed (its frames still in flight lie before the I-frame). Times are
    seconds from ``origin`` (packet pts, else dts); with ``skip`` false nothing is left out.
    """

    def __init__(
        self,
        container,
        stream: av.VideoStream,
        next_sample: Callable[[], float],
        origin: int | None,
        budget: Budget,
        skip: bool,
    ) -> None:
        self._stream, self._next_sample, self._origin = stream, next_sample, origin
        self._demuxed = demuxed(container, stream, budget)
        self._skip = skip and origin is not None
        self._held: list[av.Packet | None] = []
        self.iframe: float | None = None  # time of the I-frame the current run starts at
        self.exhausted = False

    def run(self) -> Iterator[av.Packet | None]:
        """The packets of one run: from its I-frame (or where the last run stopped) to the
        next I-frame that makes them unneeded, or to the end of the stream."""
        if self.iframe is not None:
            self._stream.codec_context.flush_buffers()
        sent = False
        for packet in self._demuxed:
            t = self._time(packet)
            if self._jump_point(packet, t):
                self._held, self.iframe = [packet], t
                if sent:
                    return
                continue
            self._held.append(packet)
            if t is not None and t <= self._next_sample():
                continue  # unneeded if an I-frame comes before the next sample
            yield from self._release()
            sent = True
        yield from self._release()
        self.exhausted = True

    def _jump_point(self, packet: av.Packet | None, t: float | None) -> bool:
        """An I-frame at or before the next sample: nothing before it is needed."""
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


def timestamped(frames: Iterator[av.VideoFrame], step: int) -> Iterator[tuple[int, av.VideoFrame]]:
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


def frame_step(stream: av.VideoStream) -> int:
    rate = stream.average_rate or stream.guessed_rate or 30
    return max(1, round(1 / (Fraction(rate) * stream.time_base)))


def find_segment_end(source: Source, limits: VideoLimits) -> float:
    """End of the segment (seconds from its start) from packet timestamps, without decoding."""
    with open_video(source, limits) as (container, stream):
        check_header(container, stream, limits)
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
    if over_limit(seconds, limits.max_duration_s):
        raise VideoTooLargeError(
            f"video lasts {seconds:.2f} s, the limit is {limits.max_duration_s} s"
        )
    return seconds


def decode_pass(
    source: Source,
    times: list[float],
    limits: VideoLimits,
    cancel: threading.Event | None,
    new_sampler: Callable[[], S],
) -> tuple[VideoInfo, S]:
    """Fill a sampler from ``new_sampler`` with one forward pass over ``source``.

    The pass leaves out what no sample needs (:class:`Packets`). Should an I-frame not
    decode where its packet said (its first frame comes after the next sample, or none comes),
    the pass starts again from the beginning without leaving anything out. Errors come as
    from a decode of the whole stream: limits as frames decode, times past the segment's end,
    a video without a decodable frame.
    """
    budget = Budget(limits, cancel)
    for skip in (True, False):
        sampler = new_sampler()
        with open_video(source, limits) as (container, stream):
            check_header(container, stream, limits)
            try:
                display, last, ended = _feed(container, stream, sampler, limits, budget, skip)
            except _JumpedTooFar:
                continue
            if ended:  # the stream's end is known: check the whole request against it
                _check_in_segment(times, last, container, stream)
            fps, declared = nominal_fps(stream), header_duration(container, stream)
        if display is None:
            raise UndecodableVideoError("no frame of the video could be decoded")
        return VideoInfo(display[0], display[1], fps, declared), sampler
    raise AssertionError("the pass without skipping cannot jump")


class _JumpedTooFar(Exception):
    """After a jump to an I-frame, its first frame came after the next sample, or no frame."""


def _feed(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    sampler: Sampler,
    limits: VideoLimits,
    budget: Budget,
    skip: bool,
) -> tuple[tuple[int, int] | None, tuple[float, av.VideoFrame] | None, bool]:
    """Decode until ``sampler`` is done or the stream ends, in runs (:class:`Packets`).

    Returns the displayed size of the first decoded frame and the last ``(time, frame)``
    (``None`` if nothing decoded), and whether the stream ended. Frames of a run that began at
    an I-frame and lie before it (leading frames of an open GOP, which refer to frames before
    the jump) are dropped. Every decoded frame counts against ``budget`` and is checked
    against the limits; at the end of the stream the remaining samples repeat its last frame.
    """
    tb, origin = stream.time_base, stream.start_time
    packets = Packets(container, stream, _next_sample(sampler), origin, budget, skip)
    display: tuple[int, int] | None = None
    last: tuple[float, av.VideoFrame] | None = None
    while not packets.exhausted:
        first = True
        for ts, frame in timestamped(decoded_frames(packets.run(), stream), frame_step(stream)):
            budget.count(frame)
            if origin is None:
                origin = ts
            time = float((ts - origin) * tb)
            if packets.iframe is not None:
                if time < packets.iframe - TIE:
                    continue
                if first and time > sampler.next_time:
                    raise _JumpedTooFar
            first = False
            check_pixels(frame.width, frame.height, limits, "decoded")
            if over_limit(time, limits.max_duration_s):
                raise VideoTooLargeError(
                    f"video has frames at {time:.2f} s, the limit is {limits.max_duration_s} s"
                )
            if display is None:
                display = display_size(frame)
                sampler.began(
                    VideoInfo(*display, nominal_fps(stream), header_duration(container, stream))
                )
            sampler.push(time, frame)
            last = (time, frame)
            if sampler.done:
                return display, last, False
        if first and packets.iframe is not None:
            raise _JumpedTooFar
    sampler.finish()
    return display, last, True


def _next_sample(sampler: Sampler) -> Callable[[], float]:
    return lambda: math.inf if sampler.done else sampler.next_time


def _check_in_segment(times, last, container, stream: av.VideoStream) -> None:
    """After the whole stream: a keyframe past the segment's end is out of range."""
    if last is None:
        return
    time, frame = last
    frame_duration = float(frame.duration * stream.time_base) if frame.duration else 0.0
    end = max(time + frame_duration, header_duration(container, stream) or 0.0)
    for t in times:
        if t > end + _END_SLACK:
            raise KeyframeOutOfRangeError(
                f"keyframe time {t} s is past the segment end ({end:.3f} s)"
            )


def probe(source: Source, limits: VideoLimits | None = None) -> VideoInfo:
    """Check limits and decodability; size from the first decoded frame (displayed)."""
    limits = limits or VideoLimits()
    with open_video(source, limits) as (container, stream):
        check_header(container, stream, limits)
        budget = Budget(limits, None)
        for frame in decoded_frames(demuxed(container, stream, budget), stream):
            check_pixels(frame.width, frame.height, limits, "decoded")
            width, height = display_size(frame)
            return VideoInfo(width, height, nominal_fps(stream), header_duration(container, stream))
    raise UndecodableVideoError("no frame of the video could be decoded")


def segment_end(source: Source, limits: VideoLimits | None = None) -> float:
    """End of the segment in seconds from its start, from packet timestamps (a demux-only
    pass, no decoding: headers lie about durations); the ``None`` keyframe time is its middle."""
    return find_segment_end(source, limits or VideoLimits())


def check_times(times: Sequence[float | None], limits: VideoLimits) -> None:
    """Keyframe times within 0 s and the duration limit, finite; ``None`` (the middle) only
    for a single keyframe: else :class:`KeyframeOutOfRangeError`."""
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
