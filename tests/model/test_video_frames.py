"""Displayed frames at requested times (fbil.model.video.read_frames): the nearest decoded frame,
the rule clips are sampled by, as the player shows it (display rotation applied), full size."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from fbil.model.preprocess import PreprocessSpec, normalize, resize, scaled_size
from fbil.model.video import KeyframeOutOfRangeError, decode_clips, read_frames
from tests.support.synthetic_video import HEIGHT, WIDTH, encode, index_image, read_indices

SPEC = PreprocessSpec()
RAW = PreprocessSpec(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # clip values = pixel values
MS = Fraction(1, 1000)
KEY = SPEC.sample_frame_offsets().index(0)  # the clip sample at the keyframe itself


def shown_index(rgb: np.ndarray) -> int:
    """The index a frame's bars show."""
    return read_indices(torch.from_numpy(rgb).permute(2, 0, 1)[:, None].float(), RAW)[0]


def nearest(frame_times: list[Fraction], t: Fraction) -> int:
    """The nearest frame in exact arithmetic, ties to the earlier."""
    return min(range(len(frame_times)), key=lambda i: (abs(frame_times[i] - t), i))


def test_nearest_frames_in_the_callers_order() -> None:
    gaps = [33, 10, 90, 41, 7, 150, 33, 33, 60, 20] * 8
    pts = [sum(gaps[:i]) for i in range(len(gaps))]
    data = encode(pts, "libx264", "matroska", MS)
    frame_times = [p * MS for p in pts]
    # out of order; 0.038 lies half-way between the frames at 33 and 43 ms (the earlier wins);
    # 3.79 is past the last frame (3.796 s) but inside the segment
    times = [1.7, 0.0, 0.038, 3.4, 0.5, 3.79]
    info, frames = read_frames(data, times)
    assert (info.width, info.height) == (WIDTH, HEIGHT)
    expected = [nearest(frame_times, Fraction(str(t))) for t in times]
    assert expected[2] == 1 and expected[-1] == len(pts) - 1
    assert [shown_index(f.rgb) for f in frames] == expected
    assert [f.time for f in frames] == pytest.approx([float(frame_times[i]) for i in expected])
    for f in frames:
        assert f.rgb.shape == (HEIGHT, WIDTH, 3) and f.rgb.dtype == np.uint8
    # the frame a clip shows at its keyframe is the one read_frames gives
    _, clips = decode_clips(data, times, SPEC)
    assert [c.frame_times[KEY] for c in clips] == [f.time for f in frames]


def test_time_none_is_the_segment_middle_and_past_the_end_is_refused() -> None:
    data = encode([round(i * 1000 / 30) for i in range(90)], "libx264", "mp4", MS)
    _, [middle] = read_frames(data, [None])
    assert middle.time == pytest.approx(1.5) and shown_index(middle.rgb) == 45
    with pytest.raises(KeyframeOutOfRangeError, match="past the segment end"):
        read_frames(data, [1.0, 3.5])


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_display_rotation_full_size(rotation: int) -> None:
    img = index_image(0)
    img[: HEIGHT // 2, : WIDTH // 2] = 255  # top-left quadrant white
    data = encode([0, 33, 66], "libx264", "mp4", MS, images=[img] * 3, rotation=rotation)
    info, [frame] = read_frames(data, [0.04])
    turned = rotation in (90, 270)
    shape = (WIDTH, HEIGHT) if turned else (HEIGHT, WIDTH)
    assert (info.height, info.width) == shape
    assert frame.time == pytest.approx(0.033)
    assert frame.rgb.shape == (*shape, 3) and frame.rgb.flags.c_contiguous
    # counter-clockwise quarter turns, as a player shows it (lossy H.264: small differences)
    expected = np.rot90(img, rotation // 90)
    assert np.abs(frame.rgb.astype(np.int16) - expected).mean() < 2.0
    gray = frame.rgb.mean(-1)
    h, w = gray.shape
    quadrants = {
        "top-left": gray[: h // 2, : w // 2],
        "top-right": gray[: h // 2, w // 2 :],
        "bottom-left": gray[h // 2 :, : w // 2],
        "bottom-right": gray[h // 2 :, w // 2 :],
    }
    corner = {90: "bottom-left", 180: "bottom-right", 270: "top-right"}[rotation]
    assert {name for name, q in quadrants.items() if q.mean() > 128} == {corner}
    # the clip at that time shows the same picture, resized
    _, [clip] = decode_clips(data, [0.04], SPEC)
    size = scaled_size(*shape, SPEC.short_side)
    ours = normalize(resize(torch.from_numpy(frame.rgb).permute(2, 0, 1), size), SPEC)
    std = torch.tensor(SPEC.std).view(3, 1, 1)
    assert clip.frame_times[KEY] == frame.time
    assert ((clip.clip[:, KEY] - ours) * std).abs().max() <= 1.0  # turned before or after resizing
