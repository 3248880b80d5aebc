"""Containers whose headers declare a huge resolution are refused before anything is decoded.

The videos are small and valid; only the declared size is patched into the header bytes: AVI's
stream format (``strf``, a BITMAPINFOHEADER) and main header (``avih``), QuickTime's sample
description (``stsd``), and for MJPEG also every frame's JPEG SOF0 marker.
"""

from __future__ import annotations

import io
import struct
from fractions import Fraction

import av
import numpy as np
import pytest

from fbil.model import video
from fbil.model.preprocess import PreprocessSpec
from fbil.model.video import (
    UndecodableVideoError,
    VideoLimits,
    VideoTooLargeError,
    decode,
    decode_clips,
    probe,
)
from tests.support.synthetic_video import (
    HEIGHT,
    SERVICE_LIMITS,
    WIDTH,
    encode,
    index_image,
    read_indices,
)

SPEC = PreprocessSpec()
LIMITS = SERVICE_LIMITS  # max_frame_pixels 3840 * 2160 = 8294400
HUGE = (16000, 9000)  # 144 M pixels; ffmpeg itself accepts sizes up to about 16384 x 16384


def _small(codec: str, fmt: str, pix_fmt: str) -> bytes:
    images = [index_image(i) for i in range(10)]
    return encode(list(range(10)), codec, fmt, Fraction(1, 10), images=images, pix_fmt=pix_fmt)


def _patch_avi(data: bytes, width: int, height: int) -> bytes:
    """Declare ``width`` x ``height`` in ``avih`` and the video ``strf`` (BITMAPINFOHEADER)."""
    out = bytearray(data)
    avih = data.index(b"avih")  # tag, size, then 8 dwords before dwWidth, dwHeight
    assert struct.unpack_from("<II", data, avih + 40) == (WIDTH, HEIGHT)
    struct.pack_into("<II", out, avih + 40, width, height)
    strf = data.index(b"strf")  # tag, size, biSize, biWidth, biHeight (negative: top-down)
    bi_width, bi_height = struct.unpack_from("<ii", data, strf + 12)
    assert (bi_width, abs(bi_height)) == (WIDTH, HEIGHT)
    struct.pack_into("<ii", out, strf + 12, width, height if bi_height > 0 else -height)
    return bytes(out)


def _patch_mov(data: bytes, width: int, height: int) -> bytes:
    """Declare ``width`` x ``height`` in the visual sample entry of ``stsd``."""
    out = bytearray(data)
    # tag, version/flags, entry count, entry size, format, 6 reserved, data ref index,
    # version, revision, vendor, temporal and spatial quality, then width and height (u16)
    at = data.index(b"stsd") + 44
    assert struct.unpack_from(">HH", data, at) == (WIDTH, HEIGHT)
    struct.pack_into(">HH", out, at, width, height)
    return bytes(out)


def _patch_mjpeg_avi(data: bytes, width: int, height: int) -> bytes:
    """The AVI headers and every frame's JPEG SOF0 (marker, length, precision, height, width)."""
    out = bytearray(_patch_avi(data, width, height))
    pos, count = data.find(b"\xff\xc0"), 0
    while pos >= 0:
        assert struct.unpack_from(">HH", data, pos + 5) == (HEIGHT, WIDTH)
        struct.pack_into(">HH", out, pos + 5, height, width)
        pos, count = data.find(b"\xff\xc0", pos + 2), count + 1
    assert count == 10
    return bytes(out)


CASES = {
    "rawvideo-avi": (lambda: _small("rawvideo", "avi", "bgr24"), _patch_avi),
    "qtrle-mov": (lambda: _small("qtrle", "mov", "rgb24"), _patch_mov),
    "mjpeg-avi-sof": (lambda: _small("mjpeg", "avi", "yuvj420p"), _patch_mjpeg_avi),
}


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args):
        raise AssertionError("a frame was decoded")
        yield  # a generator, like the real one

    monkeypatch.setattr(decode, "decoded_frames", refuse)


@pytest.mark.parametrize("case", CASES)
def test_unpatched_videos_decode(case: str) -> None:
    """The control: before patching, each video decodes at its real size."""
    make, _ = CASES[case]
    info, [kf] = decode_clips(make(), [0.5], SPEC, LIMITS)
    assert (info.width, info.height) == (WIDTH, HEIGHT)
    assert read_indices(kf.clip, SPEC)[16] == 5


@pytest.mark.parametrize("case", CASES)
def test_huge_declared_resolution_is_refused_before_decoding(case: str, no_decoding) -> None:
    make, patch = CASES[case]
    data = patch(make(), *HUGE)
    message = "header frame size 16000x9000 exceeds 8294400 pixels"
    with pytest.raises(VideoTooLargeError, match=message) as err:
        probe(data, LIMITS)
    assert err.value.code == "video_too_large"
    with pytest.raises(VideoTooLargeError, match=message):
        decode_clips(data, [0.5], SPEC, LIMITS)
    with pytest.raises(VideoTooLargeError, match=message):
        decode_clips(data, [None], SPEC, LIMITS)  # the demux-only pass checks it too


@pytest.mark.parametrize(
    ("limit", "refused"), [(1280 * 720, False), (1280 * 720 - 1, True)], ids=["at", "over"]
)
def test_declared_size_limit_is_inclusive(limit: int, refused: bool, no_decoding) -> None:
    data = _patch_mov(_small("qtrle", "mov", "rgb24"), 1280, 720)
    limits = VideoLimits(max_frame_pixels=limit)
    if refused:
        with pytest.raises(VideoTooLargeError, match=f"1280x720 exceeds {limit} pixels"):
            probe(data, limits)
    else:  # passes the header check and reaches decoding, which the fixture stops
        with pytest.raises(AssertionError, match="a frame was decoded"):
            probe(data, limits)


def test_size_beyond_ffmpeg_own_limit_is_undecodable() -> None:
    """20000 x 20000 fails ffmpeg's av_image_check_size: it reports 0 x 0 and decodes nothing.

    The header check cannot see the declared size then; the request is still refused, as
    undecodable, without a frame being allocated at that size.
    """
    data = _patch_mov(_small("qtrle", "mov", "rgb24"), 20000, 20000)
    with pytest.raises(UndecodableVideoError, match="no frame"):
        probe(data, LIMITS)
    with pytest.raises(UndecodableVideoError):
        decode_clips(data, [0.5], SPEC, LIMITS)


def test_several_keyframes_of_a_small_video() -> None:
    """The keyframe and box counts of a request are the service's limits
    (tests/service/test_http_errors.py, test_boxes.py)."""
    data = _small("mjpeg", "avi", "yuvj420p")
    _, keyframes = decode_clips(data, [0.2, 0.5, 0.8], SPEC, LIMITS)
    assert [read_indices(kf.clip, SPEC)[16] for kf in keyframes] == [2, 5, 8]


@pytest.mark.parametrize(("format_name", "codec", "pix_fmt"), [
    ("image2pipe", "png", "rgb24"),
    ("image2pipe", "mjpeg", "yuvj420p"),
])  # fmt: skip
def test_a_still_image_is_not_a_video(format_name: str, codec: str, pix_fmt: str) -> None:
    """FFmpeg opens a PNG/JPEG as a one-frame video; decoding it as one was a 200 (schemathesis)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=format_name) as out:
        stream = out.add_stream(codec, rate=1)
        stream.width, stream.height, stream.pix_fmt = 32, 32, pix_fmt
        frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame.reformat(format=pix_fmt)), *stream.encode()]:
            out.mux(packet)
    with pytest.raises(video.NotAVideoError, match="still image"):
        video.probe(buffer.getvalue())
