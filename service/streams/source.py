"""A live source read by a thread of its own: FFmpeg (PyAV) opens the URL with only network
protocols and timeouts, decoded frames go to a :class:`~fbil.model.video.stream.LiveWindows`
at the source's own pace, and a source that fails, ends or stalls is opened again after a
backoff, up to a limit.

Frames get stream times: seconds since the stream started, continuing across reconnects (a
connection's frames from the wall-clock time it began, then by their own timestamps), so one
tracker follows people through a short outage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import av

from fbil.model.video.stream import LiveWindows
from fbil.service.streams.url_policy import NETWORK_PROTOCOLS

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class SourceOptions:
    """How a source is opened and how long it may fail."""

    rtsp_transport: str = "tcp"
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    max_reconnects: int = 5
    backoff_s: float = 0.5


@dataclass(frozen=True)
class SourceProblem:
    """Why a connection ended: a ``code`` for ``last_error`` and a message (no URL in it)."""

    code: str
    message: str


def ffmpeg_options(scheme: str, options: SourceOptions) -> dict[str, str]:
    """FFmpeg's options for a source: the network protocols only, socket timeouts."""
    micros = str(int(options.read_timeout_s * 1_000_000))
    opts = {
        "protocol_whitelist": NETWORK_PROTOCOLS,
        "rw_timeout": micros,
        "analyzeduration": "1000000",  # 1 s of probing (FFmpeg's 5 s delays a live start)
    }
    if scheme in ("rtsp", "rtsps"):
        opts["rtsp_transport"] = options.rtsp_transport
        opts["timeout"] = micros
    return opts


def classify(error: BaseException) -> SourceProblem:
    """A connection's failure as a ``last_error`` code (the URL is left out: it may hold
    credentials)."""
    # ExitError: PyAV's own timeout (its interrupt callback) ended a read or an open
    if isinstance(error, av.error.TimeoutError | av.error.ExitError | TimeoutError):
        return SourceProblem("source_timeout", "the source sent nothing in time")
    if isinstance(error, av.error.ConnectionRefusedError | ConnectionRefusedError):
        return SourceProblem("source_unreachable", "the source refused the connection")
    if isinstance(error, av.error.PermissionError | av.error.HTTPForbiddenError):
        return SourceProblem("source_forbidden", "the source or a protocol was refused")
    if isinstance(error, av.error.HTTPUnauthorizedError):
        return SourceProblem("source_unauthorized", "the source wants other credentials")
    if isinstance(error, av.error.HTTPNotFoundError | av.error.FileNotFoundError):
        return SourceProblem("source_not_found", "the source has no such stream")
    if isinstance(error, NoVideo):
        return SourceProblem("source_no_video", "the source has no video stream")
    if isinstance(error, av.error.InvalidDataError):
        return SourceProblem("source_invalid_data", "the source sent no readable video")
    if isinstance(error, av.FFmpegError | OSError):
        return SourceProblem(
            "source_error", f"{type(error).__name__}: {error.strerror or ''}"[:200]
        )
    return SourceProblem("source_error", type(error).__name__)


class NoVideo(Exception):
    """The source holds no video stream."""


class SourceFailed(Exception):
    """The source could not be read after every reconnect allowed."""

    def __init__(self, problem: SourceProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


StateHook = Callable[[str, SourceProblem | None], None]
"""Called from the reader thread: ``running``, ``reconnecting`` (with why), ``failed``."""


class LiveReader:
    """Reads ``url`` into ``windows`` on a thread until ``windows`` is closed or the source
    fails ``max_reconnects + 1`` times in a row."""

    def __init__(
        self,
        url: str,
        scheme: str,
        windows: LiveWindows,
        options: SourceOptions,
        on_state: StateHook,
        on_reconnect: Callable[[], None] = lambda: None,
    ) -> None:
        self.url, self.scheme, self.windows, self.options = url, scheme, windows, options
        self.on_state, self.on_reconnect = on_state, on_reconnect
        self.frames = 0
        self._started = time.monotonic()
        self._last = -1.0  # the last stream time pushed
        self._thread = threading.Thread(target=self._run, name="fbil-stream-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        o, closed = self.options, self.windows.closed
        failures = 0
        while not closed.is_set():
            try:
                got_frames = self._connection()
                problem = SourceProblem("source_ended", "the source ended")
            except Exception as e:  # any failure of FFmpeg or the source: reconnect
                got_frames = False
                problem = classify(e)
            if closed.is_set():
                break
            failures = 1 if got_frames else failures + 1
            if failures > o.max_reconnects:
                log.warning("stream source failed: %s", problem.code)
                self.on_state("failed", problem)
                self.windows.fail(SourceFailed(problem))
                return
            self.on_state("reconnecting", problem)
            wait = min(o.backoff_s * 2 ** (failures - 1), MAX_BACKOFF_S)
            if closed.wait(wait):
                break
            self.on_reconnect()
        self.windows.end()

    def _connection(self) -> bool:
        """Read one connection to its end; whether it gave any frame."""
        o = self.options
        container = av.open(
            self.url,
            options=ffmpeg_options(self.scheme, o),
            timeout=(o.open_timeout_s, o.read_timeout_s),
        )
        try:
            if not container.streams.video:
                raise NoVideo()
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            first: float | None = None
            offset = 0.0
            for frame in container.decode(stream):
                if self.windows.closed.is_set():
                    break
                own = frame.time
                if first is None:
                    # this connection's frames continue the stream from now
                    offset = max(time.monotonic() - self._started, self._last + 0.001)
                    first = own if own is not None else 0.0
                    self.windows.restart()
                    self.on_state("running", None)
                t = offset + ((own if own is not None else first) - first)
                if t <= self._last:
                    continue  # not after the last frame (a timestamp gone back): skipped
                self._last = t
                self.frames += 1
                self.windows.push(t, frame)
            return first is not None
        finally:
            container.close()
