"""Decoding, sampling and preprocessing of video segments (fbil.model.video)."""

from __future__ import annotations

import io
import math
from fractions import Fraction

import av
import pytest
import torch
import torch.nn.functional as F

from fbil.model.preprocess import PreprocessSpec, resize
from fbil.model.video import (
    KeyframeOutOfRangeError,
    NotAVideoError,
    NoVideoStreamError,
    UndecodableVideoError,
    VideoLimits,
    VideoTooLargeError,
    decode,
    decode_clips,
    probe,
    sampling,
)
from tests.support.synthetic_video import (
    HEIGHT,
    SERVICE_LIMITS,
    WIDTH,
    encode,
    index_image,
    nearest_indices,
    read_indices,
)

SPEC = PreprocessSpec()
LIMITS = SERVICE_LIMITS
LONG = VideoLimits(max_duration_s=120.0)  # vtest.avi lasts 79.5 s
MS = Fraction(1, 1000)


def check_sampling(data: bytes, pts: list[int], tb: Fraction, times: list[float]) -> None:
    """Every sample of every keyframe shows exactly the frame the reference picks."""
    frame_times = [p * tb for p in pts]
    info, keyframes = decode_clips(data, times, SPEC, LIMITS)
    assert (info.width, info.height) == (WIDTH, HEIGHT)
    for t, kf in zip(times, keyframes, strict=True):
        expected = nearest_indices(frame_times, Fraction(t), SPEC)
        assert kf.time == t
        assert kf.clip.shape == (3, SPEC.num_frames, 256, 256 * WIDTH // HEIGHT)
        assert kf.clip.dtype == torch.float32
        assert read_indices(kf.clip, SPEC) == expected
        assert list(kf.frame_times) == pytest.approx([float(frame_times[i]) for i in expected])


@pytest.mark.parametrize(
    ("codec", "fmt"),
    [
        ("libx264", "mp4"),
        ("mpeg4", "avi"),
        ("mjpeg", "avi"),
        ("libvpx-vp9", "webm"),
        ("hevc", "matroska"),
    ],
)
def test_exact_frames_constant_rate(codec: str, fmt: str) -> None:
    pts = [round(i * 1000 / 30) for i in range(75)]  # 2.5 s at 30 fps, ms ticks
    options = {"x265-params": "log-level=none"} if codec == "hevc" else {}
    data = encode(pts, codec, fmt, MS, options=options)
    # keyframe 0 and the end exercise both edges; the middle ones overlap
    check_sampling(data, pts, MS, [0.0, 1.0, 1.2, 2.5])


def test_exact_frames_variable_rate() -> None:
    gaps = [33, 10, 90, 41, 7, 150, 33, 33, 60, 20] * 8
    pts = [sum(gaps[:i]) for i in range(len(gaps))]
    data = encode(pts, "libx264", "matroska", MS)
    check_sampling(data, pts, MS, [0.5, 1.7, 3.4])


def test_low_frame_rate_repeats_frames() -> None:
    pts = list(range(20))  # 5 fps for 4 s
    data = encode(pts, "mpeg4", "avi", Fraction(1, 5))
    check_sampling(data, pts, Fraction(1, 5), [2.0])


def test_overlapping_keyframes_decode_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    pts = [round(i * 1000 / 30) for i in range(300)]  # 10 s, keyframe every 15 frames
    data = encode(pts, "libx264", "mp4", MS, options={"g": "15", "keyint_min": "15"})
    passes, decoded, converted = [], [], []
    real_frames, real_call = decode.decoded_frames, sampling.ClipConverter.__call__

    def counting_frames(*args):
        passes.append(1)
        for frame in real_frames(*args):
            decoded.append(frame.pts)
            yield frame

    def counting_call(self, frame):
        converted.append(frame.pts)
        return real_call(self, frame)

    monkeypatch.setattr(decode, "decoded_frames", counting_frames)
    monkeypatch.setattr(sampling.ClipConverter, "__call__", counting_call)
    times = [4.0, 4.5, 5.0, 5.5]
    _, keyframes = decode_clips(data, times, SPEC, LIMITS)
    assert len(passes) == 1
    first = min(kf.frame_times[0] for kf in keyframes)
    last = max(kf.frame_times[-1] for kf in keyframes)
    # from the GOP start before the first needed frame, to one frame of look-ahead after the last
    needed = round((last - first) * 30) + 1
    assert needed < len(decoded) <= needed + 15 + 2
    picked = {t for kf in keyframes for t in kf.frame_times}
    assert len(converted) == len(set(converted)) == len(picked)


def test_resize_and_normalise_match_independent_computation(test_videos) -> None:
    path = test_videos / "vtest.avi"  # 768x576 at 10 fps
    _, [kf] = decode_clips(path, [3.0], SPEC, LONG)
    assert kf.clip.shape == (3, 32, 256, 341)  # floor(256 * 768 / 576) = 341
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if frame.pts == 30:  # the keyframe's own frame, sample k = 16
                rgb = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
                break
    ref = F.interpolate(
        rgb[None].double(), size=(256, 341), mode="bilinear", antialias=True, align_corners=False
    )[0]
    mean = torch.tensor(SPEC.mean, dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor(SPEC.std, dtype=torch.float64).view(3, 1, 1)
    ours = kf.clip[:, 16].double()
    assert kf.frame_times[16] == 3.0
    # uint8 resize: rounding and fixed-point weights stay within one grey level
    assert ((ours * std + mean) - ref).abs().max() <= 1.0
    assert ((ours - (ref - mean) / std) * std).abs().max() <= 1.0
    assert abs((ours - (ref - mean) / std).mean()) < 0.01


def test_display_rotation_is_applied() -> None:
    img = index_image(0)
    img[: HEIGHT // 2, : WIDTH // 2] = 255  # top-left quadrant white
    data = encode([0, 33, 66], "libx264", "mp4", MS, images=[img] * 3, rotation=90)
    info = probe(data, LIMITS)
    assert (info.width, info.height) == (HEIGHT, WIDTH)
    info, [kf] = decode_clips(data, [0.033], SPEC, LIMITS)
    assert (info.width, info.height) == (HEIGHT, WIDTH)
    assert kf.clip.shape == (3, 32, 256 * WIDTH // HEIGHT, 256)
    mean = torch.tensor(SPEC.mean).view(3, 1, 1)
    std = torch.tensor(SPEC.std).view(3, 1, 1)
    gray = (kf.clip[:, 0] * std + mean).mean(0)
    h, w = gray.shape
    quadrants = {
        "top-left": gray[: h // 2, : w // 2],
        "top-right": gray[: h // 2, w // 2 :],
        "bottom-left": gray[h // 2 :, : w // 2],
        "bottom-right": gray[h // 2 :, w // 2 :],
    }
    # 90 degrees counter-clockwise moves the top-left corner to the bottom-left
    bright = {name for name, q in quadrants.items() if q.mean() > 128}
    assert bright == {"bottom-left"}


def test_keyframe_none_is_the_segment_middle() -> None:
    pts = [round(i * 1000 / 30) for i in range(90)]
    data = encode(pts, "libx264", "mp4", MS)
    _, [kf] = decode_clips(data, [None], SPEC, LIMITS)
    # the last frame (pts 2967 ms) ends at 3000 ms
    assert kf.time == pytest.approx(1.5, abs=1e-3)
    assert read_indices(kf.clip, SPEC)[16] == 45


def test_avi_packed_b_frames_use_display_order(test_videos) -> None:
    """Megamind.avi's pts are out of order (1 2 3 5 4 ...); frames keep decoder order."""
    path = test_videos / "Megamind.avi"
    tick = Fraction(125, 2997)
    _, [kf] = decode_clips(path, [5.0], SPEC, LIMITS)
    grid = [n * tick for n in range(1, 271)]  # frame n of 270 is shown at n ticks
    expected = nearest_indices(grid, Fraction(5), SPEC)
    assert list(kf.frame_times) == pytest.approx([float(grid[i]) for i in expected])
    with av.open(str(path)) as container:  # decoder order, independently of timestamps
        frames = [f for i, f in enumerate(container.decode(video=0)) if i <= max(expected)]
        rgb = [torch.from_numpy(frames[i].to_ndarray(format="rgb24")) for i in expected]
        ref = [resize(x.permute(2, 0, 1), (256, 349)) for x in rgb]
    mean = torch.tensor(SPEC.mean).view(3, 1, 1)
    std = torch.tensor(SPEC.std).view(3, 1, 1)
    for j, rgb in enumerate(ref):
        assert torch.allclose(kf.clip[:, j], (rgb.float() - mean) / std)


def test_tree_avi_with_lying_frame_count(test_videos) -> None:
    path = test_videos / "tree.avi"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.frames == 444  # the header's claim
        tb = stream.time_base
        real = [f.pts * tb for f in container.decode(stream)]
    assert len(real) < 100
    _, keyframes = decode_clips(path, [1.0, 15.0, 29.5], SPEC, LIMITS)
    for kf in keyframes:
        expected = nearest_indices(real, Fraction(kf.time), SPEC)
        assert list(kf.frame_times) == pytest.approx([float(real[i]) for i in expected])


def test_damaged_file_decodes_what_it_can(test_videos) -> None:
    info, keyframes = decode_clips(test_videos / "Megamind_bugy.avi", [1.0, 4.0, 8.0], SPEC, LIMITS)
    assert (info.width, info.height) == (720, 528)
    for kf in keyframes:
        assert torch.isfinite(kf.clip).all()
        times = kf.frame_times
        assert all(a <= b for a, b in zip(times, times[1:], strict=False))
        assert all(a < b for a, b in zip(times[1:], times[2:], strict=False))  # no gap at 30 fps
        assert abs(kf.frame_times[16] - kf.time) <= 1 / 30 + 1e-9


def test_probe_real_video(test_videos) -> None:
    info = probe(test_videos / "vtest.avi", LONG)
    assert (info.width, info.height, info.fps) == (768, 576, 10.0)
    assert info.duration == pytest.approx(79.5)


# --------------------------------------------------------------------------- errors


def _mjpeg(n: int = 30, size: tuple[int, int] = (WIDTH, HEIGHT)) -> bytes:
    images = [index_image(i, *size) for i in range(n)]
    return encode(list(range(n)), "mjpeg", "avi", Fraction(1, 10), images=images)


def _break_frames(data: bytes, first: int, last: int) -> bytes:
    """Zero the JPEG payloads of frames ``first..last`` (container structure left intact)."""
    with av.open(io.BytesIO(data)) as container:
        payloads = [bytes(p) for p in container.demux(video=0) if p.size]
    out, pos = bytearray(data), 0
    for payload in payloads[first : last + 1]:
        pos = data.index(payload, pos)
        out[pos : pos + len(payload)] = bytes(len(payload))
    return bytes(out)


@pytest.mark.parametrize(
    "data",
    [b"", b"just some text, not a video\n" * 40, bytes(range(256)) * 64],
    ids=["empty", "text", "binary"],
)
def test_non_video_bytes(data: bytes) -> None:
    with pytest.raises(NotAVideoError) as err:
        decode_clips(data, [0.0], SPEC, LIMITS)
    assert err.value.code == "not_a_video"
    with pytest.raises(NotAVideoError):
        probe(data, LIMITS)


def test_truncated_files(test_videos) -> None:
    mp4 = encode([round(i * 1000 / 30) for i in range(30)], "libx264", "mp4", MS)
    with pytest.raises(NotAVideoError, match="not a readable video"):  # index (moov) cut off
        decode_clips(mp4[: len(mp4) // 2], [0.5], SPEC, LIMITS)
    head = (test_videos / "vtest.avi").read_bytes()[:300]
    with pytest.raises(NotAVideoError):
        probe(head, LIMITS)


def test_playlists_cannot_open_other_files(tmp_path, test_videos) -> None:
    playlist = tmp_path / "list.m3u8"
    playlist.write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:80\n#EXTINF:80,\n{test_videos / 'vtest.avi'}\n"
        "#EXT-X-ENDLIST\n"
    )
    with pytest.raises(NotAVideoError):
        probe(playlist, LIMITS)


def test_audio_only_has_no_video_stream(tmp_path) -> None:
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            torch.zeros(1, 800, dtype=torch.int16).numpy(), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        out.mux(stream.encode(frame))
        out.mux(stream.encode())
    with pytest.raises(NoVideoStreamError, match="audio") as err:
        decode_clips(path, [0.0], SPEC, LIMITS)
    assert err.value.code == "no_video_stream"


def test_undecodable_video() -> None:
    data = _break_frames(_mjpeg(10), 0, 9)
    with pytest.raises(UndecodableVideoError) as err:
        decode_clips(data, [0.5], SPEC, LIMITS)
    assert err.value.code == "undecodable_video"


def test_keyframe_window_without_decodable_frame() -> None:
    data = _break_frames(_mjpeg(100), 40, 70)  # 10 fps: nothing decodes from 4.0 s to 7.0 s
    _, [kf] = decode_clips(data, [2.0], SPEC, LIMITS)  # before the damage: fine
    assert read_indices(kf.clip, SPEC)[16] == 20
    with pytest.raises(UndecodableVideoError, match="keyframe 5.5"):
        decode_clips(data, [2.0, 5.5], SPEC, LIMITS)


@pytest.mark.parametrize(
    ("times", "message"),
    [
        ([3.5], "past the segment end"),
        ([-0.1], "outside"),
        ([math.nan], "outside"),
        ([None, 1.0], "omitted only"),
        ([], "no keyframe"),
    ],
)
def test_keyframe_out_of_range(times, message: str) -> None:
    data = _mjpeg(30)  # 3.0 s
    with pytest.raises(KeyframeOutOfRangeError, match=message) as err:
        decode_clips(data, times, SPEC, LIMITS)
    assert err.value.code == "keyframe_out_of_range"


def test_keyframe_at_the_very_end_is_in_range() -> None:
    _, [kf] = decode_clips(_mjpeg(30), [3.0], SPEC, LIMITS)
    assert read_indices(kf.clip, SPEC)[-1] == 29


@pytest.mark.parametrize(
    ("limits", "times", "message"),
    [
        (VideoLimits(max_bytes=1000), [0.0], "bytes"),
        (VideoLimits(max_duration_s=2.0), [0.0], "lasts 3.00 s"),
        (VideoLimits(max_frame_pixels=WIDTH * HEIGHT - 1), [0.0], "header frame size"),
    ],
)
def test_limits(limits: VideoLimits, times, message: str) -> None:
    with pytest.raises(VideoTooLargeError, match=message) as err:
        decode_clips(_mjpeg(30), times, SPEC, limits)
    assert err.value.code == "video_too_large"


def test_no_limits(test_videos) -> None:
    """``limits=None`` (and ``VideoLimits()``) limits nothing: vtest.avi lasts 79.5 s."""
    path = test_videos / "vtest.avi"
    with pytest.raises(VideoTooLargeError, match="lasts 79.50 s"):
        decode_clips(path, [10.0], SPEC, LIMITS)
    with pytest.raises(KeyframeOutOfRangeError, match="outside 0..60.0 s"):
        decode_clips(path, [70.0], SPEC, LIMITS)
    _, [kf] = decode_clips(path, [70.0], SPEC)
    assert kf.frame_times[16] == 70.0
    assert probe(path).duration == pytest.approx(79.5)
    assert probe(path, VideoLimits()) == probe(path, None)


@pytest.mark.parametrize("time", [-0.1, math.nan, math.inf])
def test_keyframe_times_without_limits_are_finite_and_not_negative(time: float) -> None:
    with pytest.raises(KeyframeOutOfRangeError, match="outside 0 s and up"):
        decode_clips(_mjpeg(30), [time], SPEC)


def _forged_mjpeg() -> bytes:
    """An AVI whose header (and first 5 frames) say 160x96, then 1280x768 JPEG frames."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="avi") as out:
        stream = out.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuvj420p"
        for i in range(10):
            width, height = (WIDTH, HEIGHT) if i < 5 else (1280, 768)
            encoder = av.CodecContext.create("mjpeg", "w")
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuvj420p"
            encoder.time_base = Fraction(1, 10)
            frame = av.VideoFrame.from_ndarray(index_image(i, width, height), format="rgb24")
            frame.pts = i
            for packet in [*encoder.encode(frame), *encoder.encode()]:
                packet.stream, packet.pts, packet.dts = stream, i, i
                packet.time_base = Fraction(1, 10)
                out.mux(packet)
    return buf.getvalue()


def test_forged_header_cannot_bypass_max_pixels() -> None:
    data = _forged_mjpeg()
    limits = VideoLimits(max_frame_pixels=WIDTH * HEIGHT)
    assert (probe(data, limits).width, probe(data, limits).height) == (WIDTH, HEIGHT)
    _, [kf] = decode_clips(data, [0.0], SPEC, VideoLimits())
    assert read_indices(kf.clip, SPEC)[-1] == 9  # the big frames are real and decodable
    with pytest.raises(VideoTooLargeError, match="decoded frame size 1280x768"):
        decode_clips(data, [0.0], SPEC, limits)
