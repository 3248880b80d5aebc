"""The annotated video moves a tracked person's box between keyframes (it stood still for a
keyframe interval, then jumped), and only a tracked one."""

from __future__ import annotations

import pytest

from fbil.model.annotate import TWEEN_GAP_S, WINDOW_S, Nearest, Overlay


def _kf(time: float, boxes, tracks) -> Overlay:
    labels = tuple((f"#{i}",) for i in range(len(boxes)))
    return Overlay(time, tuple(boxes), labels, tuple(range(len(boxes))), tuple(tracks))


def test_a_tracked_box_moves_linearly_between_keyframes() -> None:
    first = _kf(0.0, [(0, 0, 10, 20), (50, 50, 60, 60), (5, 5, 6, 6)], [1, None, 3])
    second = _kf(1.0, [(100, 0, 110, 40), (90, 90, 95, 95)], [1, None])
    nearest = Nearest([first, second])
    quarter = nearest(0.25)
    assert quarter is not None and quarter.time == 0.0  # labels stay the nearest keyframe's
    assert quarter.boxes[0] == pytest.approx((25, 0, 35, 25))  # track 1, a quarter of the way
    assert quarter.boxes[1] == (50, 50, 60, 60)  # untracked: the nearest keyframe's
    assert quarter.boxes[2] == (5, 5, 6, 6)  # track 3 is gone at 1.0: held
    late = nearest(0.75)
    assert late is not None and late.time == 1.0
    assert late.boxes[0] == pytest.approx((75, 0, 85, 35))
    assert late.boxes[1] == (90, 90, 95, 95)
    assert nearest(1.0).boxes[0] == (100, 0, 110, 40)  # on a keyframe: its own box


def test_keyframes_too_far_apart_are_not_tweened_and_far_frames_undrawn() -> None:
    gap = TWEEN_GAP_S + 1.0
    first = _kf(0.0, [(0, 0, 10, 10)], [1])
    second = _kf(gap, [(100, 0, 110, 10)], [1])
    nearest = Nearest([first, second])
    assert nearest(0.25).boxes[0] == (0, 0, 10, 10)
    assert nearest(WINDOW_S + 0.3) is None  # nearer no keyframe than WINDOW_S: not drawn
    assert nearest(gap - 0.25).boxes[0] == (100, 0, 110, 10)


def test_overlays_without_tracks_are_the_nearest_keyframe() -> None:
    first = Overlay(0.0, ((0, 0, 10, 10),), (("a",),))
    second = Overlay(1.0, ((100, 0, 110, 10),), (("b",),))
    nearest = Nearest([first, second])
    assert nearest(0.4) is first
    assert nearest(0.6) is second


def test_job_and_demo_overlays_carry_track_ids() -> None:
    import json

    from fbil.service.outputs import keyframe_overlays

    actor = {"id": "p", "box": [0, 0, 1, 1], "actions": [], "track_id": 4}
    line = json.dumps({"time": 1.0, "actors": [actor, {**actor, "track_id": None}]}).encode()
    (overlay,) = keyframe_overlays([line], "pixels", 10, 10)
    assert overlay.tracks == (4, None)
