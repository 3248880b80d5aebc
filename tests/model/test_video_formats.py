"""Generated 25 fps videos, portrait and odd-sized, whose frames show their index and colours.

Each frame's top half encodes its index as bars, its bottom half pure red, green and blue
stripes whose order rotates with the index (``synthetic_video.colour_index_image``). A clip is
checked sample by sample: the exact frame picked (including ties and repeated edge frames), the
stripes' colours in RGB order, the normalised values against a computation done here, and the
clip size rule (short side to ``short_side``, long side ``floor(short_side * long / short)``).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fbil.model.preprocess import PreprocessSpec
from fbil.model.video import decode_clips, probe
from tests.support.synthetic_video import (
    BLUE,
    GREEN,
    RED,
    SERVICE_LIMITS,
    colour_index_image,
    encode,
    nearest_indices,
    read_indices,
    stripe_colours,
)

SPEC = PreprocessSpec()
# mean/std far apart per channel, so a channel swap in either one shows
ODD_SPEC = PreprocessSpec(short_side=160, mean=(0.0, 64.0, 128.0), std=(1.0, 2.0, 4.0))
LIMITS = SERVICE_LIMITS
FPS = 25
FRAMES = 75  # 3.0 s; the last frame starts at 2.96 s
TIMES = [0.0, 1.3, 3.0]  # both edges; 1.3 s puts samples exactly half-way between frames

# (codec, container, pix_fmt, options, width, height, lossless)
LOSSLESS = [
    ("ffv1", "matroska", "bgr0", {}, 240, 320),  # portrait, stored BGR
    ("qtrle", "mov", "rgb24", {}, 321, 241),  # odd width and height
    ("ffv1", "matroska", "bgr0", {}, 177, 99),
]
LOSSY = [
    ("libx264", "mp4", "yuv420p", {}, 240, 320),  # portrait phone-like 4:2:0 with B-frames
    ("libx264", "mp4", "yuv444p", {}, 321, 241),
    ("mpeg4", "avi", "yuv420p", {"qmin": "1", "qmax": "2"}, 177, 99),  # odd 4:2:0
    ("mjpeg", "avi", "yuvj444p", {"qmin": "1", "qmax": "2"}, 99, 177),  # odd portrait
]
# clip (H, W) by displayed (width, height) and short side, worked out by hand
CLIP_SIZES = {
    ((240, 320), 256): (341, 256),  # 256 * 320 / 240 = 341.33
    ((321, 241), 256): (256, 340),  # 256 * 321 / 241 = 340.98
    ((177, 99), 256): (256, 457),  # 256 * 177 / 99 = 457.70
    ((99, 177), 256): (457, 256),
    ((240, 320), 160): (213, 160),  # 160 * 320 / 240 = 213.33
    ((321, 241), 160): (160, 213),  # 160 * 321 / 241 = 213.11
    ((177, 99), 160): (160, 286),  # 160 * 177 / 99 = 286.06
}


def _video(codec: str, fmt: str, pix_fmt: str, options: dict, width: int, height: int):
    images = [colour_index_image(i, width, height) for i in range(FRAMES)]
    data = encode(
        list(range(FRAMES)),
        codec,
        fmt,
        Fraction(1, FPS),
        images=images,
        options=options,
        pix_fmt=pix_fmt,
        rate=FPS,
    )
    return data, images


def _rgb(clip: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """Undo the normalisation: ``x * std + mean`` per RGB channel, 0..255."""
    mean = torch.tensor(spec.mean).view(3, 1, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1, 1)
    return clip * std + mean


def _stripe(rgb: torch.Tensor, s: int) -> torch.Tensor:
    """The middle of stripe ``s`` (away from the bars and from the stripes' borders)."""
    _, _, height, width = rgb.shape
    return rgb[
        :,
        :,
        height * 5 // 8 : height * 7 // 8,
        width * (4 * s + 1) // 12 : width * (4 * s + 3) // 12,
    ]


def check_clips(data: bytes, width: int, height: int, spec: PreprocessSpec, tolerance: float):
    """Exact frames per sample time, stripe colours in RGB order, clip size; returns the clips."""
    info, keyframes = decode_clips(data, TIMES, spec, LIMITS)
    assert (info.width, info.height, info.fps) == (width, height, FPS)
    assert probe(data, LIMITS).width == width
    frame_times = [Fraction(i, FPS) for i in range(FRAMES)]
    clip_h, clip_w = CLIP_SIZES[(width, height), spec.short_side]
    for t, kf in zip(TIMES, keyframes, strict=True):
        assert kf.clip.shape == (3, spec.num_frames, clip_h, clip_w)
        # the decimal time exactly: ties (1.3 s) go to the earlier frame
        expected = nearest_indices(frame_times, Fraction(str(t)), spec)
        assert read_indices(kf.clip, spec, rows=slice(0, clip_h * 2 // 5)) == expected
        assert list(kf.frame_times) == pytest.approx([i / FPS for i in expected], abs=1e-9)
        rgb = _rgb(kf.clip, spec)
        for j, index in enumerate(expected):
            for s, colour in enumerate(stripe_colours(index)):
                want = torch.tensor(colour, dtype=torch.float32).view(3, 1, 1)
                got = _stripe(rgb[:, j : j + 1], s)[:, 0]
                assert (got - want).abs().max() <= tolerance, (t, j, index, s, colour)
    return keyframes


def test_edges_and_ties_are_the_expected_frames() -> None:
    """The reference's answers for TIMES, spelled out: edges repeat, ties take the earlier."""
    frame_times = [Fraction(i, FPS) for i in range(FRAMES)]
    start, middle, end = (nearest_indices(frame_times, Fraction(str(t)), SPEC) for t in TIMES)
    assert start[:17] == [0] * 17 and start[17:20] == [2, 3, 5]
    # sample 1 of 1.3 s is at 0.3 s, half-way between frames 7 (0.28 s) and 8 (0.32 s)
    assert middle[:5] == [6, 7, 9, 11, 12]
    assert end[13:16] == [70, 72, 73] and end[16:] == [74] * 16


@pytest.mark.parametrize(
    ("codec", "fmt", "pix_fmt", "options", "width", "height"),
    LOSSLESS,
    ids=[f"{c[0]}-{c[2]}-{c[4]}x{c[5]}" for c in LOSSLESS],
)
def test_lossless_exact_frames_colours_and_values(
    codec: str, fmt: str, pix_fmt: str, options: dict, width: int, height: int
) -> None:
    data, images = _video(codec, fmt, pix_fmt, options, width, height)
    keyframes = check_clips(data, width, height, SPEC, tolerance=1e-3)
    # normalised values: resize the source image in float64, normalise with numpy
    mean = np.array(SPEC.mean).reshape(3, 1, 1)
    std = np.array(SPEC.std).reshape(3, 1, 1)
    refs: dict[int, np.ndarray] = {}
    for kf in keyframes:
        for j, frame_time in enumerate(kf.frame_times):
            index = round(frame_time * FPS)
            if index not in refs:
                source = torch.from_numpy(images[index]).permute(2, 0, 1)[None].double()
                resized = F.interpolate(source, kf.clip.shape[2:], mode="bilinear", antialias=True)
                refs[index] = (resized[0].numpy() - mean) / std
            ours = kf.clip[:, j].double().numpy()
            # uint8 resize: within one grey level of the float64 reference
            assert np.abs((ours - refs[index]) * std).max() <= 1.0
    # a pure red pixel (frame 0's first stripe), normalised by hand with the AVA constants
    clip = keyframes[0].clip
    red = clip[:, 0, clip.shape[2] * 3 // 4, clip.shape[3] // 6]
    assert red.tolist() == pytest.approx(
        [
            (255 - 110.63666788) / 38.7568578,
            -103.16065604 / 37.88248729,
            -96.29023126 / 40.02898126,
        ],
        abs=1e-4,
    )


@pytest.mark.parametrize(
    ("codec", "fmt", "pix_fmt", "options", "width", "height"),
    LOSSY,
    ids=[f"{c[0]}-{c[2]}-{c[4]}x{c[5]}" for c in LOSSY],
)
def test_lossy_exact_frames_and_colours(
    codec: str, fmt: str, pix_fmt: str, options: dict, width: int, height: int
) -> None:
    data, _ = _video(codec, fmt, pix_fmt, options, width, height)
    check_clips(data, width, height, SPEC, tolerance=8.0)


@pytest.mark.parametrize(("width", "height"), [(240, 320), (177, 99)])
def test_spec_short_side_mean_and_std_per_channel(width: int, height: int) -> None:
    """short_side 160 and distinct per-channel mean/std: each lands on its own channel."""
    data, _ = _video("ffv1", "matroska", "bgr0", {}, width, height)
    keyframes = check_clips(data, width, height, ODD_SPEC, tolerance=1e-3)
    clip = keyframes[0].clip  # frame 0 at sample 0: stripes red, green, blue
    stripes = [_stripe(clip[:, :1], s)[:, 0] for s in range(3)]
    for values, colour in zip(stripes, (RED, GREEN, BLUE), strict=True):
        want = [(c - m) / s for c, m, s in zip(colour, (0.0, 64.0, 128.0), (1, 2, 4), strict=True)]
        assert values.amin((1, 2)).tolist() == pytest.approx(want, abs=1e-4)
        assert values.amax((1, 2)).tolist() == pytest.approx(want, abs=1e-4)
