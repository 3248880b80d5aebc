"""Far-apart keyframes decode in separate seeking passes, close ones share a pass
(fbil.model.video).

Grouping must not change a single result: every keyframe's clip is the one a single pass over
the whole request gives (:func:`_single_pass`, the behaviour before grouping) and the one it
gets when requested alone; only the number of decoded frames drops.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from synthetic_video import SERVICE_LIMITS, encode, nearest_indices, read_indices

from fbil.model import video
from fbil.model.preprocess import PreprocessSpec
from fbil.model.video import (
    REGROUP_GAP_S,
    KeyframeOutOfRangeError,
    UndecodableVideoError,
    VideoError,
    VideoLimits,
    decode_clips,
)

SPEC = PreprocessSpec()
LIMITS = SERVICE_LIMITS
LONG = VideoLimits(max_duration_s=120.0)  # vtest.avi lasts 79.5 s
MS = Fraction(1, 1000)
FPS = 10
GOP = 10  # frames between key frames of the long synthetic video


def _single_pass(
    source: video.Source, times: list[float], limits: VideoLimits, monkeypatch: pytest.MonkeyPatch
) -> tuple[video.VideoInfo, list[video.Clip]]:
    """All ``times`` in one decode pass, however far apart: no gap splits a group. The pass
    seeks to the key frame before the earliest sample, or starts at the beginning when that
    sample lies before 0 s."""
    with monkeypatch.context() as patch:
        patch.setattr(video, "REGROUP_GAP_S", math.inf)
        return decode_clips(source, times, SPEC, limits)


# 30 s: three groups, given out of order. 0.0 and 29.9 exercise the edges (samples before the
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
    """Record each decode pass (a call of ``_decoded_frames``) and each decoded frame's pts."""
    passes: list[int] = []
    decoded: list[int] = []
    real_frames = video._decoded_frames

    def counting_frames(*args):
        passes.append(1)
        for frame in real_frames(*args):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(video, "_decoded_frames", counting_frames)
    return passes, decoded


def _assert_same(ours: list[video.Clip], reference: list[video.Clip]) -> None:
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference, strict=True):
        assert a.time == b.time
        assert a.frame_times == b.frame_times
        assert torch.equal(a.clip, b.clip)


def _windows(times: list[float]) -> list[tuple[float, float]]:
    return [video._window(t, SPEC) for t in times]


# --------------------------------------------------------------------------- the rule


def test_grouping_rule() -> None:
    assert REGROUP_GAP_S == 3.0
    windows = [(10.0, 12.0), (0.0, 2.0), (1.5, 3.5), (6.49, 8.0), (15.0, 17.0), (20.0, 22.0)]
    # (1.5, 3.5) overlaps (0, 2), 6.49 starts 2.99 s after 3.5 and 10.0 2 s after 8.0: one
    # pass; 15.0 and 20.0 start exactly 3 s after the window before: passes of their own
    assert video._groups(windows, 3.0) == [[1, 2, 3, 0], [4], [5]]
    assert video._groups(windows, 0.0) == [[1, 2], [3], [0], [4], [5]]
    assert video._groups(windows, float("inf")) == [[1, 2, 3, 0, 4, 5]]
    assert video._groups([(5.0, 6.0)], 3.0) == [[0]]


def test_real_keyframe_windows_group_as_expected() -> None:
    groups = video._groups(_windows(TIMES), REGROUP_GAP_S)
    assert [sorted(TIMES[k] for k in group) for group in groups] == GROUPS


# --------------------------------------------------------------------------- exact frames


def test_far_keyframes_decode_only_around_their_windows(long_video, monkeypatch) -> None:
    data, frame_times = long_video
    passes, decoded = _count_decoding(monkeypatch)
    info, keyframes = decode_clips(data, TIMES, SPEC, LIMITS)
    assert len(passes) == len(GROUPS)  # one seek per group, no fallback from the start
    for t, kf in zip(TIMES, keyframes, strict=True):  # the caller's order
        expected = nearest_indices(frame_times, Fraction(str(t)), SPEC)
        assert kf.time == t
        assert read_indices(kf.clip, SPEC) == expected
        assert list(kf.frame_times) == pytest.approx([float(frame_times[i]) for i in expected])
    # per group: from its key frame (at most a GOP early) to one frame of look-ahead after
    # its last needed frame; no frame decoded twice, the gaps between groups not at all
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
    # the same clips as one pass over the whole request (the behaviour before grouping)
    passes.clear()
    assert min(TIMES) + SPEC.sample_offsets()[0] < 0  # so the single pass decodes from the start
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
    """Nearest frames outside a group's window: before it (where its seek lands), and after
    it, between groups (where the previous group's pass stops); the end held past the last."""
    data, frame_times = holey_video
    times = [4.0, 10.0, 19.9]  # windows end 5.03 s, then 8.9 to 11.03 s, then from 18.8 s
    assert len(video._groups(_windows(times), REGROUP_GAP_S)) == 3
    passes, _ = _count_decoding(monkeypatch)
    _, keyframes = decode_clips(data, times, SPEC, LIMITS)
    assert len(passes) == 3
    for t, kf in zip(times, keyframes, strict=True):
        expected = nearest_indices(frame_times, Fraction(str(t)), SPEC)
        assert read_indices(kf.clip, SPEC) == expected
        assert list(kf.frame_times) == pytest.approx([float(frame_times[i]) for i in expected])
    four, ten, end = keyframes
    assert four.frame_times[-1] == pytest.approx(4.9)  # settled by the frame at 8.8 s
    assert ten.frame_times[0] == pytest.approx(8.8)  # before its window, from its seek
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
    assert len(video._groups(_windows(times), REGROUP_GAP_S)) == 2
    with pytest.raises(error, match=message) as grouped:
        decode_clips(data, times, SPEC, LIMITS)
    with pytest.raises(VideoError) as single:
        _single_pass(data, times, LIMITS, monkeypatch)
    assert (type(grouped.value), str(grouped.value)) == (type(single.value), str(single.value))


# --------------------------------------------------------------------------- real video


def test_vtest_mixed_request_matches_single_pass_and_alone(test_videos, monkeypatch) -> None:
    """vtest.avi (10 fps, a key frame every 25 s): 12 s and 41.5 s share their neighbours'
    passes, 70 s gets its own."""
    path = test_videos / "vtest.avi"
    times = [70.0, 10.0, 41.5, 40.0, 12.0]
    assert len(video._groups(_windows(times), REGROUP_GAP_S)) == 3
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
