"""A camera-like live source on 127.0.0.1 for stream tests: the ``ffmpeg`` command line serves
a video as MPEG-TS over HTTP at its own frame rate (``-re``), one client at a time, started
again for the next client where a camera would be by then (``-ss``: the time since the source
first started). :meth:`LiveSource.kill` takes it down (a camera gone), :meth:`LiveSource.start`
brings it back. Also: the app served by uvicorn on a thread, for clients reading SSE.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from fbil.service.app import create_app
from fbil.service.settings import Settings

FFMPEG = shutil.which("ffmpeg")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def transcode_ts(video: Path, out: Path, seconds: float) -> Path:
    """``seconds`` of ``video`` as MPEG-TS (FFmpeg's own MPEG-4 part 2 encoder, a keyframe
    every 10 frames), once per test session."""
    assert FFMPEG is not None
    if not out.exists():
        subprocess.run(
            [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-i", str(video), "-t",
             str(seconds), "-c:v", "mpeg4", "-q:v", "6", "-g", "10", "-an", "-f", "mpegts",
             str(out)],
            check=True,
        )  # fmt: skip
    return out


class LiveSource:
    """``video`` (MPEG-TS) served live at ``url``; ``realtime=False`` serves it as fast as
    the client reads (a source faster than the model)."""

    def __init__(self, video: Path, *, realtime: bool = True, loop: bool = True) -> None:
        assert FFMPEG is not None
        self.video, self.realtime, self.loop = video, realtime, loop
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/live.ts"
        self._began: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._running = False
        self._thread: threading.Thread | None = None
        self.served = 0  # clients connected so far

    def start(self) -> None:
        if self._began is None:
            self._began = time.monotonic()
        self._running = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._wait_listening()

    def _command(self) -> list[str]:
        assert FFMPEG is not None and self._began is not None
        args = [FFMPEG, "-hide_banner", "-loglevel", "quiet"]
        if self.realtime:
            args += ["-re", "-ss", f"{time.monotonic() - self._began:.2f}"]
        if self.loop:
            args += ["-stream_loop", "-1"]
        args += ["-i", str(self.video), "-c", "copy", "-f", "mpegts", "-listen", "1", self.url]
        return args

    def _serve(self) -> None:
        while self._running:
            self._proc = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL)
            self._proc.wait()
            self.served += 1

    def _wait_listening(self, timeout: float = 10.0) -> None:
        """Until ffmpeg listens (read from /proc/net/tcp: a test connection would be its
        one client)."""
        end = time.monotonic() + timeout
        wanted = f":{self.port:04X}"
        while time.monotonic() < end:
            rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
            if any(row[1].endswith(wanted) and row[3] == "0A" for row in rows):
                return
            time.sleep(0.05)
        raise RuntimeError("ffmpeg did not listen")

    def pause(self) -> None:
        """Stall the source: connected, sending nothing (SIGSTOP) until :meth:`kill`."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """Take the source down (a camera switched off) until :meth:`start`."""
        self._running = False
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)
            self._proc.kill()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> LiveSource:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


@contextlib.contextmanager
def served_app(settings: Settings) -> Iterator[str]:
    """The app served by uvicorn on 127.0.0.1 in a thread, once ready: its base URL."""
    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 60
    while not (server.started and app.state.service.ready):
        assert app.state.service.load_error is None, app.state.service.load_error
        assert time.monotonic() < end, "the app did not get ready"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
