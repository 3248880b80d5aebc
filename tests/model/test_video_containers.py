"""Keyframes anywhere in the GOP decode in every common container (fbil.model.video).

Issue 14, item 1: with GOP 60 at 30 fps, a keyframe after the last key frame of an MPEG-TS or
MPEG-PS stream failed with "no frame of the video could be decoded" (a timestamp seek landed
on a non-key packet). Each video here has key frames every 2 s over 8 s and noisy content (so
packets are large, as in real video); every keyframe's clip must be the one a decode of every
frame from the start gives, requested alone and all together, with the nearest frames picked.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from fbil.model import video
from fbil.model.preprocess import PreprocessSpec
from fbil.model.video import decode, decode_clips
from tests.support.synthetic_video import SERVICE_LIMITS, nearest_indices

SPEC = PreprocessSpec(short_side=16)  # tiny clips: the frames picked are what is checked
FPS, GOP, FRAMES = 30, 60, 240  # key frames at 0, 2, 4 and 6 s; the last frame at 7.967 s
WIDTH, HEIGHT = 128, 96  # the smallest size H.263 (3gp) encodes
# a GOP's first frame, middle and last frame; after the last key frame; the last frame
TIMES = [0.0, 4.0, 5.0, 179 / FPS, 6.5, 7.5, 239 / FPS]

# name: (codec, muxer, muxer options)
CONTAINERS = {
    "ts": ("libx264", "mpegts", {}),
    "m2ts": ("libx264", "mpegts", {"mpegts_m2ts_mode": "1"}),
    "mpg": ("mpeg2video", "mpeg", {}),
    "mov": ("libx264", "mov", {}),
    "mkv": ("libx264", "matroska", {}),
    "webm": ("libvpx", "webm", {}),
    "avi": ("mpeg4", "avi", {}),
    "flv": ("flv", "flv", {}),
    "3gp": ("h263", "3gp", {}),
}


def _encode(codec: str, muxer: str, muxer_options: dict[str, str]) -> bytes:
    """GOP-60 video at 30 fps: a noise picture that shifts every frame."""
    options = {"g": str(GOP), "sc_threshold": "1000000000"}  # no key frames at scene cuts
    if codec == "libx264":  # x264 reads 0 as "no scene cuts"
        options = {"g": str(GOP), "sc_threshold": "0", "keyint_min": str(GOP), "bf": "2"}
        options["preset"] = "ultrafast"
    noise = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    buf = io.BytesIO()
    with av.open(buf, "w", format=muxer, options=muxer_options) as out:
        stream = out.add_stream(codec, rate=FPS, options=options)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(np.roll(noise, 3 * i, axis=1), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buf.getvalue()


def _key_frame_times(data: bytes) -> list[float]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        start = stream.start_time or 0
        return sorted(
            round(float((p.pts - start) * stream.time_base), 2)
            for p in container.demux(stream)
            if p.is_keyframe and p.pts is not None
        )


def _from_start(data: bytes, monkeypatch: pytest.MonkeyPatch) -> list[video.Clip]:
    """The reference: every frame decoded from the start, none left out."""
    with monkeypatch.context() as patch:
        patch.setattr(decode.Packets, "_jump_point", lambda self, packet, t: False)
        return decode_clips(data, TIMES, SPEC, SERVICE_LIMITS)[1]


@pytest.mark.parametrize("name", CONTAINERS)
def test_keyframes_across_the_gop_match_a_decode_from_the_start(name: str, monkeypatch) -> None:
    data = _encode(*CONTAINERS[name])
    assert _key_frame_times(data) == [0.0, 2.0, 4.0, 6.0]
    reference = _from_start(data, monkeypatch)
    _, together = decode_clips(data, TIMES, SPEC, SERVICE_LIMITS)
    frame_times = [Fraction(i, FPS) for i in range(FRAMES)]
    for t, ref, both in zip(TIMES, reference, together, strict=True):
        _, [alone] = decode_clips(data, [t], SPEC, SERVICE_LIMITS)
        expected = [float(frame_times[i]) for i in nearest_indices(frame_times, Fraction(t), SPEC)]
        for clip in (ref, alone, both):
            assert list(clip.frame_times) == pytest.approx(expected, abs=1e-3), (name, t)
        for clip in (alone, both):
            assert torch.equal(clip.clip, ref.clip), (name, t)
