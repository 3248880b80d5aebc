"""Opening a video: its container and video stream (no network protocols, no still images),
limits read from the header, and the displayed size (display rotation) of its frames."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager

import av

from fbil.model.video.types import (
    NotAVideoError,
    NoVideoStreamError,
    Source,
    VideoLimits,
    VideoTooLargeError,
)


@contextmanager
def open_video(
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


def header_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def check_header(container, stream: av.VideoStream, limits: VideoLimits) -> None:
    """Reject from the header alone what is too large to decode."""
    check_pixels(stream.width, stream.height, limits, "header")
    duration = header_duration(container, stream)
    if over_limit(duration, limits.max_duration_s):
        raise VideoTooLargeError(
            f"video lasts {duration:.2f} s, the limit is {limits.max_duration_s} s"
        )


def check_pixels(width: int, height: int, limits: VideoLimits, where: str) -> None:
    if limits.max_frame_pixels is not None and width * height > limits.max_frame_pixels:
        raise VideoTooLargeError(
            f"{where} frame size {width}x{height} exceeds {limits.max_frame_pixels} pixels"
        )


def over_limit(seconds: float | None, limit: float | None) -> bool:
    return seconds is not None and limit is not None and seconds > limit


def nominal_fps(stream: av.VideoStream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else None


def display_size(frame: av.VideoFrame) -> tuple[int, int]:
    if quarter_turns(frame) % 2:
        return frame.height, frame.width
    return frame.width, frame.height


def quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns the display matrix asks for (flips are ignored)."""
    return round(frame.rotation / 90) % 4
