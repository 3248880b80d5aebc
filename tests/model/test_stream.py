"""A whole video in one pass (fbil.model.video.stream): clips equal to decode_clips, detector
frames equal to read_frames, each packet demuxed once, bounded, stoppable."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from fbil.model.preprocess import PreprocessSpec
from fbil.model.video import (
    DecodeCancelledError,
    VideoLimits,
    decode_clips,
    read_frames,
    segment_end,
)
from fbil.model.video.decode import decode_counts
from fbil.model.video.stream import stream_windows

SPEC = PreprocessSpec(num_frames=8, frame_interval=2, short_side=64)
LIMITS = VideoLimits(max_duration_s=120.0)


def every(end: float, interval: float) -> list[float]:
    return [(i + 0.5) * interval for i in range(int(end / interval))]


def _same(streamed, decoded) -> None:
    assert [w.clip.time for w in streamed] == [c.time for c in decoded]
    for w, d in zip(streamed, decoded, strict=True):
        assert w.clip.frame_times == d.frame_times
        assert torch.equal(w.clip.clip, d.clip)


@pytest.mark.parametrize("name", ["Megamind.avi", "Megamind_bugy.avi"])
def test_streamed_clips_equal_decode_clips(test_videos, name):
    path = test_videos / name
    times = every(segment_end(path, LIMITS), 1.0)
    assert len(times) >= 8  # overlapping windows: 8 frames every 2nd frame span over 1 s
    _, decoded = decode_clips(path, times, SPEC, LIMITS)
    _same(list(stream_windows(path, times, SPEC, LIMITS, ahead=2)), decoded)


def test_detector_frames_come_with_their_keyframe_and_equal_read_frames(test_videos):
    path = test_videos / "vtest.avi"
    times = [2.0, 3.0, 4.0, 5.0]
    groups = [(2.0,), (2.5, 3.0), (), (4.25, 4.5, 4.75, 5.0)]
    before = decode_counts()
    windows = list(stream_windows(path, times, SPEC, LIMITS, frame_times=groups))
    after = decode_counts()
    _, frames = read_frames(path, [t for g in groups for t in g], LIMITS)
    got = [f for w in windows for f in w.frames]
    assert [len(w.frames) for w in windows] == [len(g) for g in groups]
    assert [f.time for f in got] == [f.time for f in frames]
    assert all(np.array_equal(a.rgb, b.rgb) for a, b in zip(got, frames, strict=True))
    _same(windows, decode_clips(path, times, SPEC, LIMITS)[1])
    assert windows[0].video.width == 768 and windows[0].video.height == 576
    # one pass: the packets up to the last window's end (10 fps), each once, nothing decoded twice
    last = windows[-1].clip.frame_times[-1]
    assert after.packets - before.packets <= round(last * 10) + 12
    assert after.frames - before.frames <= round(last * 10) + 2


def test_resuming_at_a_later_keyframe_gives_the_same_clips(test_videos):
    path = test_videos / "Megamind.avi"
    times = every(segment_end(path, LIMITS), 0.5)
    _, decoded = decode_clips(path, times, SPEC, LIMITS)
    _same(list(stream_windows(path, times[7:], SPEC, LIMITS)), decoded[7:])


def test_closing_the_iterator_stops_the_decode_thread(test_videos):
    windows = stream_windows(
        test_videos / "vtest.avi", [1.0, 2.0, 3.0, 70.0], SPEC, LIMITS, ahead=1
    )
    assert next(windows).clip.time == 1.0
    windows.close()
    assert not [t for t in threading.enumerate() if t.name == "fbil-stream"]


def test_a_set_cancel_event_stops_the_pass(test_videos):
    cancel = threading.Event()
    windows = stream_windows(
        test_videos / "vtest.avi", [1.0, 2.0, 3.0], SPEC, LIMITS, cancel=cancel, ahead=1
    )
    assert next(windows).clip.time == 1.0
    cancel.set()
    with pytest.raises(DecodeCancelledError):
        list(windows)


def test_frame_times_must_match_the_keyframes():
    with pytest.raises(ValueError, match="groups"):
        list(stream_windows(b"x", [1.0, 2.0], SPEC, frame_times=[(1.0,)]))
    with pytest.raises(ValueError, match="ascending"):
        list(stream_windows(b"x", [1.0, 2.0], SPEC, frame_times=[(1.0,), (0.5,)]))
