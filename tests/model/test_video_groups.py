"""Far-apart keyframes decode in separate runs, each from the key frame before it; close
ones share a run (fbil.model.video).

Leaving packets out must not change a single result: every keyframe's clip is the one a decode
of the whole stream from its start gives (:func:`_single_pass`) and the one it gets when
requested alone; only the number of decoded frames drops, and no frame is decoded twice.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from fbil.model import video
from fbil.model.preprocess import PreprocessSpec
from fbil.model.video import (
    KeyframeOutOfRangeError,
    UndecodableVideoError,
    VideoError,
    VideoLimits,
    decode,
    decode_clips,
)
from tests.support.synthetic_video import SERVICE_LIMITS, encode, nearest_indices, read_indices

SPEC = PreprocessSpec()
LIMITS = SERVICE_LIMITS
LONG = VideoLimits(max_duration_s=120.0)  # vtest.avi lasts 79.5 s
MS = Fraction(1, 1000)
FPS = 10
GOP = 10  # frames between key frames of the long synthetic video


def _single_pass(
    source: video.Source, times: list[float], limits: VideoLimits, monkeypatch: pytest.MonkeyPatch
) -> tuple[video.VideoInfo, list[video.Clip]]:
    """All ``times`` from a decode of every frame from the start: no packet is left out."""
    with monkeypatch.context() as patch:
        patch.setattr(decode.Packets, "_jump_point", lambda self, packet, t: False)
        return decode_clips(source, times, SPEC, limits)


# 30 s: three runs, given out of order. 0.0 and 29.9 exercise the edges (samples before the
# first frame and after the last); 3.0 and 3.5 overlap; 29.9 lies 0.77 s after 27.0's window.
TIMES = [27.0, 3.5, 15.0, 0.0, 29.9, 3.0]
GROUPS = [[0.0, 3.0, 3.5], [15.0], [27.0, 29.9]]


@pytest.fixture(scope="module")
def long_video() -> tuple[bytes, list[Fraction]]:
    """30 s at 10 fps, H.264 with a key frame every second; frames show their index."""
    pts = [i * 1000 // FPS for i in range(30 * FPS)]
    options = {"g": str(GOP), "keyint_min": str(GOP)}
    data = encode(pts, "libx264", "mp4", MS, options=options, rate=FPS)
    return data, [p * MS for p in pts]


@pytest.fixture(scope="module")
def holey_video() -> tuple[bytes, list[Fraction]]:
    """MJPEG, 10 fps up to 4.9 s, one frame at 8.8 s, then 10 fps from 11.0 s to 20.0 s."""
    pts = [*range(0, 5000, 100), 8800, *range(11000, 20001, 100)]
    data = encode(pts, "mjpeg", "matroska", MS, rate=FPS)
    return data, [p * MS for p in pts]


def _count_decoding(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[int]]:
    """Record each decode run (a call of ``_decoded_frames``) and each decoded frame's pts."""
    passes: list[int] = []
    decoded: list[int] = []
    real_frames = decode.decoded_frames

    def counting_frames(*args):
        passes.append(1)
        for frame in real_frames(*args):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(decode, "decoded_frames", counting_frames)
    return passes, decoded


def _assert_same(ours: list[video.Clip], reference: list[video.Clip]) -> None:
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference, strict=True):
        assert a.time == b.time
        assert a.frame_times == b.frame_times
        assert torch.equal(a.clip, b.clip)


# --------------------------------------------------------------------------- exact frames


def test_far_keyframes_decode_only_around_their_windows(long_video, monkeypatch) -> None:
    data, frame_times = long_video
    passes, decoded = _count_decoding(monkeypatch)
    info, keyframes = decode_clips(data, TIMES, SPEC, LIMITS)
    # one run per group from its key frame, no restart; and one more inside the last group:
    # the key frame at 28.6 s lies between 27.0's last sample (28.0 s) and 29.9's first
    # (28.83 s), so the frames from 28.1 to 28.5 s are skipped
    assert len(passes) == len(GROUPS) + 1
    for t, kf in zip(TIMES, keyframes, strict=True):  # the caller's order
        expected = nearest_indices(frame_times, Fraction(str(t)), SPEC)
        assert kf.time == t
        assert read_indices(kf.clip, SPEC) == expected
        assert list(kf.frame_times) == pytest.approx([float(frame_times[i]) for i in expected])
    # per group: from its key frame (at most a GOP early) to one frame of look-ahead after
    # its last needed frame; no frame decoded twice, the GOPs between groups not at all
    by_time = {kf.time: kf for kf in keyframes}
    budget = 0
    for group in GROUPS:
        first = min(by_time[t].frame_times[0] for t in group)
        last = max(by_time[t].frame_times[-1] for t in group)
        budget += round((last - first) * FPS) + 1 + GOP + 1
    assert len(decoded) == len(set(decoded))
    assert len(decoded) <= budget < 30 * FPS // 2
    span = max(kf.frame_times[-1] for kf in keyframes) - min(kf.frame_times[0] for kf in keyframes)
    assert round(span * FPS) + 1 == 30 * FPS  # a single pass would have decoded everything
    # the same clips as a decode of every frame from the start
    passes.clear()
    single_info, single = _single_pass(data, TIMES, LIMITS, monkeypatch)
    assert len(passes) == 1
    assert single_info == info
    _assert_same(keyframes, single)


def test_keyframes_out_of_order_come_back_in_callers_order(long_video) -> None:
    data, _ = long_video
    times = [27.0, 3.0, 15.0]
    _, in_order = decode_clips(data, sorted(times), SPEC, LIMITS)
    _, shuffled = decode_clips(data, times, SPEC, LIMITS)
    assert [kf.time for kf in shuffled] == times
    by_time = {kf.time: kf for kf in in_order}
    _assert_same(shuffled, [by_time[t] for t in times])
    assert [read_indices(kf.clip, SPEC)[16] for kf in shuffled] == [270, 30, 150]


def test_frames_around_holes_between_groups(holey_video, monkeypatch) -> None:
    """Nearest frames outside a keyframe's window: before it and after it, across a hole; the
    end held past the last frame. 4.0 and 10.0 share a run: the frame at 8.8 s settles 4.0's
    last sample and is the one before 10.0's first, so no key frame lies between to jump to;
    19.9 gets a run of its own from the key frame at 18.8 s."""
    data, frame_times = holey_video
    times = [4.0, 10.0, 19.9]  # windows end 5.03 s, then 8.9 to 11.03 s, then from 18.8 s
    passes, decoded = _count_decoding(monkeypatch)
    _, keyframes = decode_clips(data, times, SPEC, LIMITS)
    assert len(passes) == 2
    assert len(decoded) == len(set(decoded))
    for t, kf in zip(times, keyframes, strict=True):
        expected = nearest_indices(frame_times, Fraction(str(t)), SPEC)
        assert read_indices(kf.clip, SPEC) == expected
        assert list(kf.frame_times) == pytest.approx([float(frame_times[i]) for i in expected])
    four, ten, end = keyframes
    assert four.frame_times[-1] == pytest.approx(4.9)  # settled by the frame at 8.8 s
    assert ten.frame_times[0] == pytest.approx(8.8)  # before its window, decoded once for both
    assert ten.frame_times[-1] == pytest.approx(11.0)
    assert end.frame_times[-10:] == (pytest.approx(20.0),) * 10
    _, single = _single_pass(data, times, LIMITS, monkeypatch)
    _assert_same(keyframes, single)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("times", "error", "message"),
    [
        ([1.0, 6.9], UndecodableVideoError, "no decodable frame .* for keyframe 6.9"),
        ([6.9, 1.0], UndecodableVideoError, "for keyframe 6.9"),
        ([1.0, 25.0], KeyframeOutOfRangeError, "keyframe time 25.0 s is past the segment end"),
        # both: the end of the segment is checked first, as in a single pass
        ([6.9, 25.0], KeyframeOutOfRangeError, "past the segment end"),
    ],
)
def test_errors_in_later_groups(holey_video, times, error, message: str, monkeypatch) -> None:
    data, _ = holey_video
    with pytest.raises(error, match=message) as grouped:
        decode_clips(data, times, SPEC, LIMITS)
    with pytest.raises(VideoError) as single:
        _single_pass(data, times, LIMITS, monkeypatch)
    assert (type(grouped.value), str(grouped.value)) == (type(single.value), str(single.value))


# --------------------------------------------------------------------------- real video


def test_vtest_mixed_request_matches_single_pass_and_alone(test_videos, monkeypatch) -> None:
    """vtest.avi (10 fps, a key frame every 25 s): 12 s and 41.5 s share their neighbours'
    runs, 70 s gets its own."""
    path = test_videos / "vtest.avi"
    times = [70.0, 10.0, 41.5, 40.0, 12.0]
    passes, decoded = _count_decoding(monkeypatch)
    info, keyframes = decode_clips(path, times, SPEC, LONG)
    assert len(passes) == 3
    # from the key frames at 0, 25 and 50 s to each group's last sample (13, 42.5, 71 s)
    assert len(decoded) <= 131 + 176 + 211 + 3 < 711
    single_info, single = _single_pass(path, times, LONG, monkeypatch)
    assert single_info == info
    _assert_same(keyframes, single)
    for t, kf in zip(times, keyframes, strict=True):
        _, [alone] = decode_clips(path, [t], SPEC, LONG)
        _assert_same([kf], [alone])
