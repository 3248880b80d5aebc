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

import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from fbil.model.preprocess import PreprocessSpec
from fbil.model.video.container import display_size
from fbil.model.video.decode import check_times, decode_pass
from fbil.model.video.sampling import (
    ClipConverter,
    DisplayConverter,
    FrameFit,
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
_PUSHES_KEPT = 1024  # live windows: arrival times of the frames pushed last


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
        frame_fit: FrameFit | None = None,
    ) -> None:
        self._pass = (source, times, groups, spec, limits)
        self._frame_fit = frame_fit
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
        clip_convert, frame_convert = ClipConverter(spec), DisplayConverter(self._frame_fit)

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
    frame_fit: FrameFit | None = None,
) -> WindowStream:
    """The :class:`Window` of each keyframe at ``times`` (ascending), one by one: its clip as
    ``decode_clips`` makes it and, with ``frame_times`` (per keyframe, the times the person
    detector looks at to reach it, ascending across keyframes and none after the keyframe),
    the frames ``read_frames`` would read at those times. At most ``ahead`` finished windows
    wait to be taken. ``frame_fit`` gives the size the frames are held at (scaled down to
    what the person detector needs; boxes it finds are 0..1). The pass runs on ``executor``
    (bounded decoding for requests), else on a thread of its own (a long job must not hold a
    shared decoder thread for hours).

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
    return WindowStream(source, ordered, groups, spec, limits, cancel, ahead, executor, frame_fit)


# --------------------------------------------------------------------------- live sources


class _Memo:
    """A converter that converts the frames of one push once for all the windows using them
    (live windows overlap; each has a sampler of its own)."""

    def __init__(self, convert: Callable[[av.VideoFrame], object]) -> None:
        self.convert = convert
        self._held: list[tuple[av.VideoFrame, object]] = []  # the last two frames converted

    def __call__(self, frame: av.VideoFrame) -> object:
        for seen, pixels in self._held:
            if seen is frame:
                return pixels
        pixels = self.convert(frame)
        self._held = [*self._held[-1:], (frame, pixels)]
        return pixels


class LiveWindows(Iterator[Window]):
    """The windows of a live, unbounded source: keyframes every ``interval`` seconds over the
    frames a reader thread :meth:`push` es as they are decoded, each keyframe's
    :class:`Window` made by the samplers of :func:`stream_windows` (same clips, same nearest
    frame rule), with the detector's frames at most ``step_s`` apart since the keyframe
    before (at most ``max_frames_per_gap``), held at the size ``frame_fit`` gives.

    The consumer takes windows at its own pace: only the newest finished window waits; one
    not taken when the next is finished is dropped (``dropped`` counts them), so a slow
    consumer costs lag of at most one window, never a queue. :meth:`restart` starts the
    keyframes anew (a reconnected source: windows being filled are abandoned); :meth:`end`
    and :meth:`fail` (from the reader) end the iteration, :meth:`close` (from the consumer)
    tells the reader to stop (:attr:`closed`). ``taken`` holds ``(keyframe time, seen,
    arrival)`` of the windows handed on: the ``clock()`` times the keyframe's frame and the
    window's last frame were pushed.
    """

    def __init__(
        self,
        spec: PreprocessSpec,
        interval: float,
        *,
        step_s: float = 0.0,
        max_frames_per_gap: int = 1,
        clock: Callable[[], float] | None = None,
        frame_fit: FrameFit | None = None,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"keyframe interval {interval}")
        self.spec, self.interval = spec, interval
        self.step_s, self.max_per_gap = step_s, max(1, max_frames_per_gap)
        self.clock = clock or time.time
        offsets = spec.sample_offsets()
        half = spec.frame_interval / spec.base_fps / 2
        self._lead = offsets[0] - half  # a clip begins this long before its keyframe (< 0)
        self._clip_convert = _Memo(ClipConverter(spec))
        self._frame_convert = _Memo(DisplayConverter(frame_fit))
        self._filling: list[_WindowSampler] = []
        self._next: float | None = None  # the next keyframe's time
        self._previous: float | None = None  # the last keyframe's time (its frames' start)
        self._info: VideoInfo | None = None
        self._cond = threading.Condition()
        self._slot: tuple[Window, float, float] | None = None
        self._ended = False
        self._error: BaseException | None = None
        self.closed = threading.Event()
        self.dropped = 0
        self.made = 0
        self.taken: queue.SimpleQueue[tuple[float, float, float]] = queue.SimpleQueue()
        self._pushed: deque[tuple[float, float]] = deque(maxlen=_PUSHES_KEPT)  # (time, clock)

    # the reader's side

    def push(self, time: float, frame: av.VideoFrame) -> None:
        """The next decoded frame, at ``time`` seconds of the stream (later than the last)."""
        if self._info is None:
            width, height = display_size(frame)
            self._info = VideoInfo(width, height, None, None)
        if self._next is None:  # the first keyframe whose clip starts with this frame
            self._next = time - self._lead
        while self._next + self._lead <= time:
            self._filling.append(self._sampler(self._next))
            self._previous, self._next = self._next, self._next + self.interval
        self._pushed.append((time, self.clock()))
        for sampler in self._filling:
            sampler.push(time, frame)
        self._filling = [s for s in self._filling if not s.done]

    def restart(self) -> None:
        """The source starts again (reconnected): the windows being filled are abandoned and
        the next frame begins the keyframes anew."""
        self._filling, self._next, self._previous = [], None, None

    def end(self) -> None:
        """The source ended: the consumer's iteration stops after the waiting window."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        """The source failed for good: the consumer's next ``next`` raises ``error``."""
        with self._cond:
            self._error, self._ended = error, True
            self._cond.notify_all()

    def _sampler(self, time: float) -> _WindowSampler:
        previous = self._previous
        if previous is None or self.step_s <= 0:
            group: tuple[float, ...] = (time,)
        else:
            n = min(
                max(math.ceil((time - previous) / self.step_s - 1e-9) - 1, 0), self.max_per_gap - 1
            )
            gap = time - previous
            group = (*(previous + gap * (j + 1) / (n + 1) for j in range(n)), time)
        clips = _Clips([time], self.spec, self._clip_convert)  # type: ignore[arg-type]
        frames = _Frames([group], self._frame_convert)  # type: ignore[arg-type]
        sampler = _WindowSampler(clips, frames, self._finished, [0])
        assert self._info is not None
        sampler.began(self._info)
        return sampler

    def _finished(self, window: Window) -> None:
        arrived = self.clock()
        at = window.frames[-1].time if window.frames else window.clip.time  # keyframe's frame
        seen = next((c for t, c in reversed(self._pushed) if t <= at), arrived)
        with self._cond:
            self.made += 1
            if self._slot is not None:
                self.dropped += 1
            self._slot = (window, seen, arrived)
            self._cond.notify_all()

    # the consumer's side

    def __next__(self) -> Window:
        with self._cond:
            while self._slot is None and not self._ended:
                if self.closed.is_set():
                    raise StopIteration
                self._cond.wait(_POLL_S)
            if self._slot is not None:
                (window, seen, arrived), self._slot = self._slot, None
                self.taken.put((window.clip.time, seen, arrived))
                return window
            if self._error is not None:
                raise self._error
            raise StopIteration

    def close(self) -> None:
        """The consumer leaves: the reader stops (it watches :attr:`closed`)."""
        self.closed.set()
        with self._cond:
            self._slot = None
            self._cond.notify_all()
