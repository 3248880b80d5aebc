"""Box validation and normalisation (fbil.service.boxes.normalize_boxes)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fbil.service.boxes import BadBoxError, normalize_boxes
from fbil.service.errors import TooManyBoxesError

MAX = 3  # boxes per keyframe


def test_pixel_boxes_become_fractions_of_the_frame_in_order() -> None:
    rois = normalize_boxes(
        [[64, 48, 320, 240], [0, 0, 640, 480]], "pixels", 640, 480, max_boxes=MAX
    )
    assert rois.dtype == np.float32
    expected = np.array([[0.1, 0.1, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]])
    assert np.allclose(rois, expected)


def test_normalized_boxes_pass_through() -> None:
    rois = normalize_boxes([(0.25, 0.5, 0.75, 1.0)], "normalized", 640, 480, max_boxes=MAX)
    assert np.array_equal(rois, np.array([[0.25, 0.5, 0.75, 1.0]], np.float32))


def test_boxes_slightly_outside_are_clipped() -> None:
    rois = normalize_boxes([[-5, -4, 645, 484]], "pixels", 640, 480, max_boxes=MAX, tolerance=0.01)
    assert np.array_equal(rois, np.array([[0.0, 0.0, 1.0, 1.0]], np.float32))


def test_no_boxes() -> None:
    assert normalize_boxes([], "pixels", 640, 480, max_boxes=MAX).shape == (0, 4)


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ([10, 10, 5, 20], "empty or inverted"),
        ([10, 10, 20, 10], "empty or inverted"),
        ([10, math.nan, 20, 30], "non-finite"),
        ([10, 10, math.inf, 30], "non-finite"),
        ([10, 10, 20], "4 numbers"),
        (["a", 1, 2, 3], "4 numbers"),
        ([-20, 10, 50, 50], "outside the frame"),
        ([10, 10, 50, 500], "outside the frame"),
        ([640, 10, 645, 50], "no area inside"),
    ],
)
def test_bad_boxes_name_the_box(box, message: str) -> None:
    boxes = [[0, 0, 10, 10], box]
    with pytest.raises(BadBoxError, match=f"box 1 .*{message}") as err:
        normalize_boxes(boxes, "pixels", 640, 480, max_boxes=MAX, tolerance=0.01)
    assert err.value.code == "bad_box"


def test_normalized_box_outside_unit_square() -> None:
    with pytest.raises(BadBoxError, match="box 0 lies outside"):
        normalize_boxes([[0.1, 0.1, 1.5, 0.9]], "normalized", 640, 480, max_boxes=MAX)


def test_unknown_format() -> None:
    with pytest.raises(BadBoxError, match="unknown box format"):
        normalize_boxes([[0, 0, 1, 1]], "xywh", 640, 480, max_boxes=MAX)  # type: ignore[arg-type]


def test_too_many_boxes() -> None:
    with pytest.raises(TooManyBoxesError, match="4 boxes given, the limit is 3") as err:
        normalize_boxes([[0, 0, 10, 10]] * 4, "pixels", 640, 480, max_boxes=MAX)
    assert (err.value.status, err.value.code) == (413, "too_many_boxes")


def test_integer_too_large_for_a_float_is_a_bad_box() -> None:
    # JSON integers have no size limit; float64 overflowed into a 500 before
    with pytest.raises(BadBoxError, match="box 1 has a coordinate too large") as err:
        normalize_boxes([[0, 0, 8, 8], [0, 0, 10**400, 8]], "pixels", 640, 480, max_boxes=MAX)
    assert len(err.value.message) < 150


def test_box_count_at_the_limit_is_accepted() -> None:
    boxes = normalize_boxes([[0, 0, 8, 8]] * MAX, "pixels", 160, 96, max_boxes=MAX)
    assert boxes.shape == (MAX, 4)
    assert normalize_boxes([[0, 0, 8, 8]] * 40, "pixels", 160, 96).shape == (40, 4)  # no limit
