"""A whole video in one sequential pass, with memory bounded by the window, not the video:
:func:`stream_windows` yields each keyframe's :class:`Window` (its clip, and the displayed
frames the person detector looks at to reach it) as soon as the last frame it needs is decoded.

The pass is :func:`fbil.model.video.decode_clips`'s (same sampler, same packet skipping, same
nearest-frame rule), so the clips are equal to those ``decode_clips`` makes for the same times,
and the frames to those ``read_frames`` reads; every packet is demuxed once and every frame
decoded at most once and converted at most once per use (clip, detector), however many
overlapping windows use it. Only the windows still being filled and at most ``ahead`` finished
ones are held: the pass runs in a thread that waits while ``ahead`` windows are not taken.
Starting from a later keyframe (a resumed job) skips the packets before it, as ``decode_clips``
does.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from fbil.model.preprocess import PreprocessSpec
from fbil.model.video.decode import check_times, decode_pass
from fbil.model.video.sampling import (
    ClipConverter,
    DisplayConverter,
    Sampler,
    clip_window,
    empty_clip,
)
from fbil.model.video.types import (
    Clip,
    DecodeCancelledError,
    Frame,
    Source,
    UndecodableVideoError,
    VideoInfo,
    VideoLimits,
)

_END = object()
_POLL_S = 0.1  # how often a blocked producer looks whether the consumer left


@dataclass(frozen=True)
class Window:
    """One keyframe's input from the pass: its ``clip``; the displayed ``frames`` the person
    detector looks at to reach it (those asked for since the previous keyframe, the last at the
    keyframe; empty when none were asked for); and the ``video``'s size and rate."""

    clip: Clip
    frames: tuple[Frame, ...]
    video: VideoInfo


class _Cancel(threading.Event):
    """Set by the consumer leaving, or by the caller's own ``cancel`` event."""

    def __init__(self, other: threading.Event | None) -> None:
        super().__init__()
        self._other = other

    def is_set(self) -> bool:
        return super().is_set() or (self._other is not None and self._other.is_set())


class _Clips(Sampler):
    """Fills each keyframe's clip, holding only those not yet handed on."""

    def __init__(self, times: Sequence[float], spec: PreprocessSpec, convert: ClipConverter):
        windows = [clip_window(t, spec) for t in times]
        super().__init__(times, spec.sample_offsets(), windows, convert)
        self.num_frames = spec.num_frames
        self.filling: dict[int, Any] = {}
        self.filled = [0] * len(times)

    def _store(self, k: int, j: int, pixels: Any) -> None:
        clip = self.filling.get(k)
        if clip is None:
            _, height, width = pixels.shape
            clip = empty_clip((3, self.num_frames, height, width), pixels)
            self.filling[k] = clip
        clip[:, j] = pixels
        self.filled[k] += 1

    def take(self, k: int) -> Clip:
        lo, hi = self.windows[k]
        if not self.hits[k]:  # every frame that could fall inside has been offered
            raise UndecodableVideoError(
                f"no decodable frame between {lo:.3f} s and {hi:.3f} s "
                f"for keyframe {self.times[k]} s"
            )
        return Clip(self.times[k], self.filling.pop(k), tuple(self.picked[k]))


class _Frames(Sampler):
    """Keeps the displayed frame picked for each time, grouped by the keyframe asking."""

    def __init__(self, groups: Sequence[Sequence[float]], convert: DisplayConverter) -> None:
        times = [float(t) for group in groups for t in group]
        super().__init__(times, [0.0], [(t, t) for t in times], convert)
        self.sizes = [len(group) for group in groups]
        self.group_of = [k for k, group in enumerate(groups) for _ in group]
        self.first = np.cumsum([0, *self.sizes[:-1]]).tolist()
        self.filled = [0] * len(groups)
        self.held: dict[int, np.ndarray] = {}

    def _store(self, k: int, j: int, pixels: np.ndarray) -> None:
        self.held[k] = pixels
        self.filled[self.group_of[k]] += 1

    def take(self, group: int) -> tuple[Frame, ...]:
        first = self.first[group]
        indices = range(first, first + self.sizes[group])
        return tuple(Frame(self.picked[i][0], self.held.pop(i)) for i in indices)


class _WindowSampler:
    """Clips and detector frames filled from the same decoded frames; each keyframe's
    :class:`Window` goes to ``emit`` (in time order) once both are in. ``emitted`` (shared by
    the samplers of one pass) keeps windows already handed on from going out twice if the
    pass restarts."""

    def __init__(
        self,
        clips: _Clips,
        frames: _Frames,
        emit: Callable[[Window], None],
        emitted: list[int],
    ) -> None:
        self.clips, self.frames = clips, frames
        self.emit, self.emitted = emit, emitted
        self.info: VideoInfo | None = None
        self.next_out = 0

    @property
    def done(self) -> bool:
        return self.clips.done and self.frames.done

    @property
    def next_time(self) -> float:
        return min(s.next_time for s in (self.clips, self.frames) if not s.done)

    def began(self, info: VideoInfo) -> None:
        self.info = info

    def push(self, time: float, frame: av.VideoFrame) -> None:
        for sampler in (self.clips, self.frames):
            if not sampler.done:
                sampler.push(time, frame)
        self._flush()

    def finish(self) -> None:
        """End of stream: the last samples are filled; the windows left go out on
        :meth:`flush`, once the pass has checked the keyframes against the stream's end."""
        self.clips.finish()
        self.frames.finish()

    def flush(self) -> None:
        """Hand on, in order, the windows whose clips and frames are all in."""
        self._flush()

    def _flush(self) -> None:
        clips, frames = self.clips, self.frames
        while (
            self.next_out < len(clips.times)
            and clips.filled[self.next_out] == clips.num_frames
            and frames.filled[self.next_out] == frames.sizes[self.next_out]
        ):
            k = self.next_out
            self.next_out += 1
            clip, looked_at = clips.take(k), frames.take(k)
            if k >= self.emitted[0]:
                assert self.info is not None  # a frame was decoded
                self.emit(Window(clip, looked_at, self.info))
                self.emitted[0] = k + 1


class WindowStream(Iterator[Window]):
    """The windows of :func:`stream_windows`, made by a producer thread; :meth:`close` (from
    any thread, also while another waits in ``next``) stops it and waits for it to end."""

    def __init__(
        self,
        source: Source,
        times: list[float],
        groups: list[tuple[float, ...]],
        spec: PreprocessSpec,
        limits: VideoLimits,
        cancel: threading.Event | None,
        ahead: int,
        executor: Executor | None,
    ) -> None:
        self._pass = (source, times, groups, spec, limits)
        self._out: queue.Queue[object] = queue.Queue(maxsize=max(1, ahead))
        self._stop = _Cancel(cancel)
        self._ended = not times
        self._finished: Callable[[], object] = lambda: None
        if self._ended:
            return
        if executor is None:
            thread = threading.Thread(target=self._produce, name="fbil-stream")
            thread.daemon = True
            thread.start()
            self._finished = thread.join
        else:
            self._finished = executor.submit(self._produce).result

    def _put(self, item: object) -> None:
        while True:
            if self._stop.is_set():
                raise DecodeCancelledError("the windows are no longer wanted")
            try:
                self._out.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def _produce(self) -> None:
        source, times, groups, spec, limits = self._pass
        emitted = [0]
        clip_convert, frame_convert = ClipConverter(spec), DisplayConverter()

        def sampler() -> _WindowSampler:
            clips, frames = _Clips(times, spec, clip_convert), _Frames(groups, frame_convert)
            return _WindowSampler(clips, frames, self._put, emitted)

        try:
            _, final = decode_pass(source, times, limits, self._stop, sampler)
            final.flush()  # after the end's checks: a keyframe past it is out of range
            self._put(_END)
        except DecodeCancelledError:
            return
        except BaseException as e:  # handed to the consumer, raised there
            try:
                self._put(e)
            except DecodeCancelledError:
                return

    def __next__(self) -> Window:
        while not self._ended:
            if self._stop.is_set():
                raise DecodeCancelledError("decoding was cancelled")
            try:
                item = self._out.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if item is _END:
                self._ended = True
                break
            if isinstance(item, BaseException):
                self._ended = True
                raise item
            assert isinstance(item, Window)
            return item
        raise StopIteration

    def close(self) -> None:
        """Stop the pass (if it runs) and wait until it has ended."""
        self._stop.set()
        self._finished()

    def __del__(self) -> None:
        self._stop.set()


def stream_windows(
    source: Source,
    times: Sequence[float],
    spec: PreprocessSpec,
    limits: VideoLimits | None = None,
    *,
    frame_times: Sequence[Sequence[float]] | None = None,
    cancel: threading.Event | None = None,
    ahead: int = 4,
    executor: Executor | None = None,
) -> WindowStream:
    """The :class:`Window` of each keyframe at ``times`` (ascending), one by one: its clip as
    ``decode_clips`` makes it and, with ``frame_times`` (per keyframe, the times the person
    detector looks at to reach it, ascending across keyframes and none after the keyframe),
    the frames ``read_frames`` would read at those times. At most ``ahead`` finished windows
    wait to be taken. The pass runs on ``executor`` (bounded decoding for requests), else on
    a thread of its own (a long job must not hold a shared decoder thread for hours).

    Times are checked here (:class:`~fbil.model.video.KeyframeOutOfRangeError`); errors of
    the video (:class:`~fbil.model.video.VideoError`) are raised where the window they
    concern would have come. Closing the stream (or setting ``cancel``) stops the pass.
    """
    limits = limits or VideoLimits()
    if times:
        check_times(times, limits)
    ordered = [float(t) for t in times]
    if any(b < a for a, b in zip(ordered, ordered[1:], strict=False)):
        raise ValueError("keyframe times must be ascending")
    groups = [tuple(g) for g in frame_times] if frame_times is not None else [()] * len(ordered)
    if len(groups) != len(ordered):
        raise ValueError(f"{len(groups)} groups of frame times for {len(ordered)} keyframes")
    flat = [t for g in groups for t in g]
    if any(b < a for a, b in zip(flat, flat[1:], strict=False)):
        raise ValueError("frame times must be ascending")
    return WindowStream(source, ordered, groups, spec, limits, cancel, ahead, executor)
