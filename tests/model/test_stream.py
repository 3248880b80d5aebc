"""Whole-video clips in one pass (fbil.model.stream): equal to decode_clips, bounded, stoppable."""

from __future__ import annotations

import threading

import pytest
import torch

from fbil.model.preprocess import PreprocessSpec
from fbil.model.stream import keyframe_times, stream_clips
from fbil.model.video import DecodeCancelledError, VideoLimits, decode_clips, segment_end

SPEC = PreprocessSpec(num_frames=8, frame_interval=2, short_side=64)
LIMITS = VideoLimits(max_duration_s=120.0)


def _same(streamed, decoded) -> None:
    assert [c.time for c in streamed] == [c.time for c in decoded]
    for s, d in zip(streamed, decoded, strict=True):
        assert s.frame_times == d.frame_times
        assert torch.equal(s.clip, d.clip)


@pytest.mark.parametrize("name", ["Megamind.avi", "Megamind_bugy.avi"])
def test_streamed_clips_equal_decode_clips(test_videos, name):
    path = test_videos / name
    times = keyframe_times(segment_end(path, LIMITS), 1.0)
    assert len(times) >= 8  # overlapping windows: 8 frames every 2nd frame span over 1 s
    _, decoded = decode_clips(path, times, SPEC, LIMITS)
    _same(list(stream_clips(path, times, SPEC, LIMITS, ahead=2)), decoded)


def test_resuming_at_a_later_keyframe_gives_the_same_clips(test_videos):
    path = test_videos / "Megamind.avi"
    times = keyframe_times(segment_end(path, LIMITS), 0.5)
    _, decoded = decode_clips(path, times, SPEC, LIMITS)
    _same(list(stream_clips(path, times[7:], SPEC, LIMITS)), decoded[7:])


def test_keyframe_times_lie_inside_the_video():
    assert keyframe_times(3.0, 1.0) == [0.5, 1.5, 2.5]
    assert keyframe_times(2.9, 1.0) == [0.5, 1.5, 2.45]  # the final partial interval's middle
    assert keyframe_times(0.4, 1.0) == [0.2]
    with pytest.raises(ValueError):
        keyframe_times(10.0, 0.0)


def test_closing_the_iterator_stops_the_decode_thread(test_videos):
    clips = stream_clips(test_videos / "vtest.avi", [1.0, 2.0, 3.0, 70.0], SPEC, LIMITS, ahead=1)
    assert next(clips).time == 1.0
    clips.close()
    assert not [t for t in threading.enumerate() if t.name == "fbil-stream"]


def test_a_set_cancel_event_stops_the_pass(test_videos):
    cancel = threading.Event()
    clips = stream_clips(
        test_videos / "vtest.avi", [1.0, 2.0, 3.0], SPEC, LIMITS, cancel=cancel, ahead=1
    )
    assert next(clips).time == 1.0
    cancel.set()
    with pytest.raises(DecodeCancelledError):
        list(clips)
