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


def transcode(video: Path, out: Path, seconds: float) -> Path:
    """``seconds`` of ``video`` as FFmpeg's own MPEG-4 part 2 (a keyframe every 10 frames) in
    the container of ``out``'s suffix (``.ts``: MPEG-TS, ``.mkv``: Matroska), once."""
    assert FFMPEG is not None
    if not out.exists():
        subprocess.run(
            [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-i", str(video), "-t",
             str(seconds), "-c:v", "mpeg4", "-q:v", "6", "-g", "10", "-an", str(out)],
            check=True,
        )  # fmt: skip
    return out


RTSP_CAMERA = Path(__file__).with_name("rtsp_camera.py")
SYSTEM_PYTHON = "/usr/bin/python3"


def rtsp_camera_missing() -> str | None:
    """Why :class:`RtspCamera` cannot run here (None: it can)."""
    check = (
        "import gi; gi.require_version('GstRtspServer', '1.0'); "
        "from gi.repository import GstRtspServer"
    )
    try:
        subprocess.run([SYSTEM_PYTHON, "-c", check], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return (
            "GStreamer's RTSP server for the system python3 (apt: gir1.2-gst-rtsp-server-1.0 "
            "python3-gi gstreamer1.0-plugins-base gstreamer1.0-plugins-good)"
        )
    return None


class RtspCamera:
    """``video`` (Matroska, MPEG-4 part 2) served like a camera at ``url`` by GStreamer's
    RTSP server (:mod:`tests.support.rtsp_camera`), at its own frame rate."""

    def __init__(self, video: Path) -> None:
        self.port = free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"
        self._proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(RTSP_CAMERA), str(video), str(self.port)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        assert self._proc.stdout is not None
        assert self._proc.stdout.readline().strip() == b"listening"

    def __enter__(self) -> RtspCamera:
        return self

    def __exit__(self, *exc: object) -> None:
        self._proc.kill()
        self._proc.wait(10)


class LiveSource:
    """``video`` (MPEG-TS) served live at ``url`` (``rtmp``: over RTMP, else MPEG-TS over
    HTTP); ``realtime=False`` serves it as fast as the client reads (a source faster than the
    model)."""

    def __init__(
        self, video: Path, *, realtime: bool = True, loop: bool = True, rtmp: bool = False
    ) -> None:
        assert FFMPEG is not None
        self.video, self.realtime, self.loop, self.rtmp = video, realtime, loop, rtmp
        self.port = free_port()
        self.url = (
            f"rtmp://127.0.0.1:{self.port}/live/cam"
            if rtmp
            else f"http://127.0.0.1:{self.port}/live.ts"
        )
        self._began: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._generation = 0  # one per start: a thread of an earlier start never serves again
        self._thread: threading.Thread | None = None
        self._log = (video.parent / f"ffmpeg-{self.port}.log").open("ab")  # beside the video
        self.served = 0  # clients connected so far

    def start(self) -> None:
        if self._began is None:
            self._began = time.monotonic()
        with self._lock:
            self._generation += 1
            generation = self._generation
        self._thread = threading.Thread(target=self._serve, args=(generation,), daemon=True)
        self._thread.start()
        self._wait_listening()

    def _command(self) -> list[str]:
        assert FFMPEG is not None and self._began is not None
        args = [FFMPEG, "-hide_banner", "-loglevel", "error"]
        if self.realtime:
            args += ["-re", "-ss", f"{time.monotonic() - self._began:.2f}"]
        if self.loop:
            args += ["-stream_loop", "-1"]
        args += ["-i", str(self.video)]
        if self.rtmp:  # FLV carries FFmpeg's own H.263 (flv1), not MPEG-4 part 2
            args += ["-c:v", "flv1", "-q:v", "6", "-an", "-f", "flv"]
        else:
            args += ["-c", "copy", "-f", "mpegts"]
        args += ["-listen", "1", self.url]
        return args

    def _serve(self, generation: int) -> None:
        while True:
            with self._lock:  # a kill() between two clients leaves no ffmpeg behind
                if self._generation != generation:
                    return
                proc = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL, stderr=self._log)
                self._proc = proc
            proc.wait()
            self.served += 1

    def _wait_listening(self, timeout: float = 60.0, retry_s: float = 10.0) -> None:
        """Until ffmpeg listens (read from /proc/net/tcp: a test connection would be its
        one client). An ffmpeg not listening after ``retry_s`` is killed and started again (a
        restarted source on a loaded 2-core CI machine once missed 30 s)."""
        end = time.monotonic() + timeout
        retry = time.monotonic() + retry_s
        wanted = f":{self.port:04X}"
        while time.monotonic() < end:
            rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
            if any(row[1].endswith(wanted) and row[3] == "0A" for row in rows):
                return
            if time.monotonic() > retry:
                with self._lock:
                    if self._proc is not None:
                        self._proc.kill()  # the serving thread starts another
                retry = time.monotonic() + retry_s
            time.sleep(0.05)
        log = Path(self._log.name).read_text(errors="replace")[-2000:]
        raise RuntimeError(f"ffmpeg did not listen on port {self.port}; its log: {log}")

    def pause(self) -> None:
        """Stall the source: connected, sending nothing (SIGSTOP) until :meth:`kill`."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """Take the source down (a camera switched off) until :meth:`start`."""
        with self._lock:
            self._generation += 1
            proc = self._proc
        if proc is not None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        if self._thread is not None:
            self._thread.join(30)

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
