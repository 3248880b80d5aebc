"""Clips of a whole video in one sequential pass, with memory bounded by the window, not the
video: :func:`stream_clips` yields each keyframe's clip as soon as its last frame is decoded.

The pass is :func:`fbil.model.video.decode_clips`'s (same sampler, same packet skipping, same
nearest-frame rule), so the clips are equal to those ``decode_clips`` makes for the same times;
each decoded frame is converted at most once, however many overlapping windows use it. Only the
clips still being filled and at most ``ahead`` finished ones are held: the pass runs in a thread
that waits while ``ahead`` clips are not taken. Starting from a later keyframe (a resumed job)
skips the packets before it, as ``decode_clips`` does.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterator, Sequence

import torch

from fbil.model.preprocess import PreprocessSpec
from fbil.model.video import (
    Clip,
    DecodeCancelledError,
    Source,
    UndecodableVideoError,
    VideoLimits,
    _Converter,
    _decode,
    _Sampler,
    _window,
)

_END = object()
_POLL_S = 0.1  # how often a blocked producer looks whether the consumer left


def keyframe_times(end: float, interval: float) -> list[float]:
    """Keyframes every ``interval`` seconds over a segment ending at ``end``: the middle of each
    whole or final partial interval (a segment shorter than ``interval`` gets its middle). The
    one rule of ``/detect`` without keyframes, jobs and ``fbil-detect``."""
    if interval <= 0 or not math.isfinite(interval):
        raise ValueError(f"keyframe interval must be positive, got {interval}")
    count = max(math.ceil(end / interval - 1e-9), 1)
    # the final interval may be cut short by the segment's end
    return [(i * interval + min((i + 1) * interval, end)) / 2 for i in range(count)]


class _Cancel(threading.Event):
    """Set by the consumer leaving, or by the caller's own ``cancel`` event."""

    def __init__(self, other: threading.Event | None) -> None:
        super().__init__()
        self._other = other

    def is_set(self) -> bool:
        return super().is_set() or (self._other is not None and self._other.is_set())


class _StreamSampler(_Sampler):
    """Fills clips like ``decode_clips``'s sampler, but hands each one to ``emit`` (in time
    order) once its last sample is in, and forgets it. ``emitted`` (shared by the samplers of
    one pass) keeps clips already handed on from going out twice if the pass restarts."""

    def __init__(
        self,
        times: Sequence[float],
        spec: PreprocessSpec,
        convert: _Converter,
        emit: Callable[[Clip], None],
        emitted: list[int],
    ) -> None:
        super().__init__(times, spec.sample_offsets(), [_window(t, spec) for t in times], convert)
        self.num_frames = spec.num_frames
        self.emit, self.emitted = emit, emitted
        self.filling: dict[int, torch.Tensor] = {}
        self.filled = [0] * len(times)
        self.next_out = 0

    def _store(self, k: int, j: int, pixels: torch.Tensor) -> None:
        clip = self.filling.get(k)
        if clip is None:
            _, height, width = pixels.shape
            clip = torch.empty((3, self.num_frames, height, width), dtype=torch.float32)
            self.filling[k] = clip
        clip[:, j] = pixels
        self.filled[k] += 1

    def _flush(self) -> None:
        """Hand on, in order, the clips whose samples are all in."""
        while self.next_out < len(self.times) and self.filled[self.next_out] == self.num_frames:
            k = self.next_out
            self.next_out += 1
            clip = self.filling.pop(k)
            if k < self.emitted[0]:
                continue
            lo, hi = self.windows[k]
            if not self.hits[k]:  # every frame that could fall inside has been offered
                raise UndecodableVideoError(
                    f"no decodable frame between {lo:.3f} s and {hi:.3f} s "
                    f"for keyframe {self.times[k]} s"
                )
            self.emit(Clip(self.times[k], clip, tuple(self.picked[k])))
            self.emitted[0] = k + 1

    def _assign(self, time: float, pixels: object) -> None:
        super()._assign(time, pixels)
        self._flush()

    def finish(self) -> None:
        super().finish()
        self._flush()


def stream_clips(
    source: Source,
    times: Sequence[float],
    spec: PreprocessSpec,
    limits: VideoLimits | None = None,
    *,
    cancel: threading.Event | None = None,
    ahead: int = 4,
) -> Iterator[Clip]:
    """The clips of keyframes at ``times`` (ascending), one by one, as ``decode_clips`` makes
    them; at most ``ahead`` finished clips wait to be taken.

    Errors of the video (:class:`~fbil.model.video.VideoError`) are raised where the clip they
    concern would have come. Closing the iterator (or setting ``cancel``) stops the pass.
    """
    times = [float(t) for t in times]
    if any(b < a for a, b in zip(times, times[1:], strict=False)):
        raise ValueError("keyframe times must be ascending")
    if not times:
        return
    limits = limits or VideoLimits()
    out: queue.Queue[object] = queue.Queue(maxsize=max(1, ahead))
    stop = _Cancel(cancel)

    def put(item: object) -> None:
        while True:
            if stop.is_set():
                raise DecodeCancelledError("the clips are no longer wanted")
            try:
                out.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def produce() -> None:
        emitted = [0]
        convert = _Converter(spec)

        def sampler() -> _StreamSampler:
            return _StreamSampler(times, spec, convert, put, emitted)

        try:
            _decode(source, times, limits, stop, sampler)
            put(_END)
        except DecodeCancelledError:
            return
        except BaseException as e:  # handed to the consumer, raised there
            try:
                put(e)
            except DecodeCancelledError:
                return

    thread = threading.Thread(target=produce, name="fbil-stream", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = out.get(timeout=_POLL_S)
            except queue.Empty:
                if cancel is not None and cancel.is_set():
                    raise DecodeCancelledError("decoding was cancelled") from None
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, Clip)
            yield item
    finally:
        stop.set()
        thread.join()
