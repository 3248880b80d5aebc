"""Tracking people across keyframes: the frames planned between keyframes, the matcher, and
identities of two people walking side by side (the case overlap-only matching gets wrong)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fbil.model.persons import PersonBoxes
from fbil.model.tracking import (
    Tracker,
    appearance,
    appearance_distance,
    count_planned,
    greedy_match,
    iou,
    plan_frames,
    scene_distance,
    scene_signature,
    tracker_for,
)


def people(*boxes: tuple[float, float, float, float]) -> PersonBoxes:
    scores = np.linspace(0.9, 0.5, len(boxes), dtype=np.float32)
    return PersonBoxes(np.asarray(boxes, np.float32).reshape(-1, 4), scores)


def side_by_side(t: float, speed: float = 0.1) -> PersonBoxes:
    """Two people 0.1 wide, touching, walking right by ``speed`` per second (0.1: in one
    second each takes the other's place)."""
    x = 0.2 + speed * t
    return people((x, 0.3, x + 0.1, 0.7), (x + 0.1, 0.3, x + 0.2, 0.7))


def test_plan_adds_frames_between_keyframes_ending_at_each():
    plan = plan_frames([1.0, 2.0, 3.0], step_s=0.25, max_per_gap=64)
    assert plan == [(1.0,), (1.25, 1.5, 1.75, 2.0), (2.25, 2.5, 2.75, 3.0)]
    assert count_planned([1.0, 2.0, 3.0], 0.25, 64) == 9


def test_plan_within_its_caps_and_without_steps():
    plan = plan_frames([0.0, 1.0, 10.0], step_s=0.1, max_per_gap=64, max_total=12)
    flat = [t for group in plan for t in group]
    assert len(flat) <= 12 and count_planned([0.0, 1.0, 10.0], 0.1, 64, 12) == len(flat)
    assert [group[-1] for group in plan] == [0.0, 1.0, 10.0]
    assert sorted(flat) == flat
    assert plan_frames([0.0, 1.0, 1.0], step_s=0.0, max_per_gap=8) == [(0.0,), (1.0,), ()]
    assert plan_frames([0.0, 1.0], step_s=0.5, max_per_gap=8, max_total=1) == [(0.0,), (1.0,)]
    assert plan_frames([0.0, 10.0], step_s=0.25, max_per_gap=4) == [(0.0,), (2.5, 5.0, 7.5, 10.0)]
    with pytest.raises(ValueError, match="ascending"):
        plan_frames([2.0, 1.0], step_s=0.25, max_per_gap=8)


def test_tracks_live_one_and_a_half_of_the_widest_gap():
    assert tracker_for(plan_frames([0.0, 1.0], 0.25, 64)).max_age_s == 1.0
    assert tracker_for(plan_frames([0.0, 4.0], 0.0, 64)).max_age_s == 6.0


def test_greedy_match_takes_cheapest_allowed_pairs_once():
    cost = np.array([[0.1, 0.2], [0.05, 0.9]])
    allowed = np.array([[True, True], [True, False]])
    assert greedy_match(cost, allowed) == [(1, 0), (0, 1)]
    assert greedy_match(cost, np.zeros_like(allowed)) == []


def test_iou_pairs():
    a = np.array([[0, 0, 1, 1], [0, 0, 0.5, 1]], np.float64)
    assert iou(a, a[:1]) == pytest.approx(np.array([[1.0], [0.5]]))


def test_keyframes_one_second_apart_swap_ids_under_overlap_alone():
    """What the issue reports: matched only at keyframes 1 s apart, the left person's box
    lands on the right person's old box and takes its id."""
    tracker = Tracker(appearance_weight=0.0)
    first = tracker.update(0.0, side_by_side(0.0))
    second = tracker.update(1.0, side_by_side(1.0))
    assert second[0] == first[1]  # the left person now carries the right one's id


def test_frames_between_keyframes_keep_ids_of_people_side_by_side():
    tracker = Tracker(appearance_weight=0.0)
    ids = [tracker.update(t, side_by_side(t)) for t in np.arange(0, 4.01, 0.25)]
    assert all(i == ids[0] for i in ids)
    assert len(set(ids[0])) == 2


def coloured(*spans: tuple[float, float, tuple[int, int, int]]) -> np.ndarray:
    frame = np.full((100, 100, 3), 128, np.uint8)
    for x1, x2, colour in spans:
        frame[:, round(x1 * 100) : round(x2 * 100)] = colour
    return frame


RED, BLUE = (200, 30, 30), (30, 30, 200)


def test_appearance_distance_of_colours():
    frame = coloured((0.0, 0.5, RED), (0.5, 1.0, BLUE))
    red, blue = np.array([0.1, 0.1, 0.4, 0.9]), np.array([0.6, 0.1, 0.9, 0.9])
    assert appearance_distance(appearance(frame, red), appearance(frame, red)) == pytest.approx(0)
    # per-channel histograms: red and blue share their green channel (30), 1/3 of the bins
    assert appearance_distance(appearance(frame, red), appearance(frame, blue)) == pytest.approx(
        np.sqrt(2 / 3)
    )


@pytest.mark.parametrize("colour, expected", [(RED, 0), (BLUE, 1)])
def test_appearance_decides_between_two_tracks_of_equal_overlap(colour, expected):
    """One box overlapping a red and a blue track equally joins the one of its colour."""
    tracker = Tracker(appearance_weight=0.5, cut_distance=0)  # the frames jump: no scene
    first = tracker.update(
        0.0,
        people((0.1, 0.1, 0.4, 0.9), (0.4, 0.1, 0.7, 0.9)),
        coloured((0.1, 0.4, RED), (0.4, 0.7, BLUE)),
    )
    between = people((0.25, 0.1, 0.55, 0.9))
    assert tracker.update(0.1, between, coloured((0.25, 0.55, colour))) == [first[expected]]


def test_tracks_end_after_max_age_and_new_ids_count_up():
    tracker = Tracker(max_age_s=0.5)
    assert tracker.update(0.0, people((0.1, 0.1, 0.2, 0.5))) == [1]
    assert tracker.update(0.3, people()) == []
    assert tracker.update(0.4, people((0.1, 0.1, 0.2, 0.5))) == [1]  # back within 0.5 s
    assert tracker.update(1.0, people((0.1, 0.1, 0.2, 0.5))) == [2]  # gone for 0.6 s


def test_a_tracker_restored_from_its_json_state_goes_on_alike():
    """What a resumed job relies on: state -> JSON -> from_state continues with the same ids,
    velocities and looks as the tracker that never stopped."""
    frame = coloured((0.2, 0.3, RED), (0.3, 0.4, BLUE))
    whole = Tracker()
    for t in np.arange(0, 1.01, 0.25):
        whole.update(float(t), side_by_side(float(t)), frame)
    saved = json.loads(json.dumps(whole.state()))
    restored = Tracker.from_state(saved)
    assert restored.state() == whole.state()
    later = [(float(t), side_by_side(float(t))) for t in np.arange(1.25, 3.01, 0.25)]
    # someone new, farther from the two (now unseen) than they could have walked: the next id
    later.append((3.25, people((0.0, 0.5, 0.1, 0.9))))
    assert [restored.update(t, p, frame) for t, p in later] == [
        whole.update(t, p, frame) for t, p in later
    ]
    assert restored.state() == whole.state() and restored.tracks[-1].id == 3


def scored(*pairs: tuple[tuple[float, float, float, float], float]) -> PersonBoxes:
    boxes = np.asarray([b for b, _ in pairs], np.float32).reshape(-1, 4)
    return PersonBoxes(boxes, np.asarray([s for _, s in pairs], np.float32))


def test_weak_boxes_continue_tracks_and_start_none():
    """ByteTrack's second association: a person whose score dips below the threshold for a
    frame keeps their track (and id) through it; a weak box on its own starts nothing."""
    tracker = Tracker(max_age_s=0.3)
    box = (0.1, 0.1, 0.2, 0.5)
    assert tracker.update(0.0, scored((box, 0.8)), threshold=0.5) == [1]
    moved = (0.12, 0.1, 0.22, 0.5)
    stray = (0.6, 0.1, 0.7, 0.5)
    assert tracker.update(0.25, scored((moved, 0.35), (stray, 0.3)), threshold=0.5) == [1, 0]
    assert tracker.update(0.5, scored(((0.14, 0.1, 0.24, 0.5), 0.7)), threshold=0.5) == [1]
    # the same frames without the weak boxes: the track ages out at 0.5 s and the id is new
    plain = Tracker(max_age_s=0.3)
    plain.update(0.0, scored((box, 0.8)), threshold=0.5)
    plain.update(0.25, scored(), threshold=0.5)
    assert plain.update(0.5, scored(((0.14, 0.1, 0.24, 0.5), 0.7)), threshold=0.5) == [2]


def test_a_weak_box_never_takes_a_track_a_confident_box_continues():
    tracker = Tracker()
    tracker.update(0.0, scored(((0.1, 0.1, 0.2, 0.5), 0.9)), threshold=0.5)
    # a confident box and a weak duplicate of it: the confident one continues track 1
    ids = tracker.update(
        0.25, scored(((0.1, 0.1, 0.2, 0.5), 0.9), ((0.11, 0.1, 0.21, 0.5), 0.4)), threshold=0.5
    )
    assert ids == [1, 0]


def test_a_lost_track_buffer_gives_a_person_back_their_id():
    box = scored(((0.1, 0.1, 0.2, 0.5), 0.9))
    for buffer_s, expected in ((2.0, [1]), (1.0, [2])):
        tracker = tracker_for([(0.0,), (0.25,), (0.5,)], buffer_s=buffer_s)
        tracker.update(0.0, box)
        assert tracker.update(1.5, box) == expected  # missed for 1.5 s


def test_a_shot_cut_starts_new_ids():
    """A new scene inherits no id although its people stand where the last scene's stood."""
    rng = np.random.default_rng(0)
    room = rng.integers(0, 120, (120, 160, 3), dtype=np.uint8)
    street = rng.integers(120, 255, (120, 160, 3), dtype=np.uint8)
    person = scored(((0.3, 0.2, 0.5, 0.9), 0.9))
    tracker = Tracker()
    assert tracker.update(0.0, person, room) == [1]
    noisy = np.clip(room.astype(int) + rng.integers(-10, 10, room.shape), 0, 255).astype(np.uint8)
    assert tracker.update(0.25, person, noisy) == [1]  # the same scene, a little changed
    assert tracker.update(0.5, person, street) == [2]
    assert tracker.cuts == 1
    assert scene_distance(scene_signature(room), scene_signature(street)) > 0.5
    restored = Tracker.from_state(json.loads(json.dumps(tracker.state())))
    assert restored.state() == tracker.state()
    assert restored.update(0.75, person, room) == [3]  # the cut is seen after a restore too


def test_the_motion_model_finds_a_walker_missed_for_a_frame_where_they_went():
    """A person 0.1 wide walking 0.05 per frame is missed on one frame: on the next one their
    box no longer overlaps where they were last seen, but does where their velocity took them."""
    walker = lambda x: scored(((x, 0.2, x + 0.1, 0.8), 0.9))  # noqa: E731
    for motion, expected in ((True, [1]), (False, [2])):
        tracker = Tracker(appearance_weight=0.0, motion=motion)
        assert [tracker.update(t * 0.25, walker(0.1 + 0.05 * t)) for t in range(4)] == [[1]] * 4
        tracker.update(1.0, scored())  # missed
        assert tracker.update(1.25, walker(0.1 + 0.05 * 5)) == expected
        restored = Tracker.from_state(json.loads(json.dumps(tracker.state())))
        assert restored.state() == tracker.state() and restored.motion is motion


@pytest.mark.parametrize(
    ("colour", "x", "settings", "expected"),
    [
        (RED, 0.5, {}, 1),  # the same colours, near enough: their id back
        (BLUE, 0.5, {}, 2),  # other colours: someone else
        (RED, 0.9, {}, 2),  # too far to have walked there in a second
        (RED, 0.5, {"reid_distance": 0.0}, 2),  # re-identification off
    ],
)
def test_a_person_found_away_from_their_track_takes_its_id_back_by_colour(
    colour, x, settings, expected
):
    """Someone standing at x 0.2 is missed for a second (behind a sign), then found 0.3 away
    (their box overlaps neither their last box nor its prediction)."""
    tracker = Tracker(max_age_s=2.0, cut_distance=0.0, **settings)  # tiny frames: no cuts
    here = coloured((0.2, 0.3, RED))
    for t in (0.0, 0.25, 0.5):
        assert tracker.update(t, scored(((0.2, 0.1, 0.3, 0.5), 0.9)), here) == [1]
    for t in (0.75, 1.0, 1.25):
        tracker.update(t, scored(), coloured())
    there = coloured((x, x + 0.1, colour))
    assert tracker.update(1.5, scored(((x, 0.1, x + 0.1, 0.5), 0.9)), there) == [expected]


def test_the_services_default_is_the_trackers():
    from fbil.model.tracking import REID_DISTANCE
    from fbil.service.settings import Settings

    assert Settings().track_reid_distance == REID_DISTANCE
