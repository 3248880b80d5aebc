"""Videos encoded in the tests whose frames show their own index as 10 black/white bars.

:func:`colour_index_image` adds colour: its bars take the top half, and the bottom half holds
pure red, green and blue stripes whose order rotates with the index.

Tests in every folder import it as ``tests.support.synthetic_video``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction

import av
import numpy as np
import torch

from fbil.model.preprocess import PreprocessSpec
from fbil.model.video import VideoLimits
from fbil.service.settings import Settings

# what the service lets one request's video cost by default (its Settings' defaults)
SERVICE_LIMITS: VideoLimits = Settings.model_construct().video_limits()

WIDTH, HEIGHT = 160, 96  # 10 bars of 16 pixels
BITS = 10
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def index_image(index: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """RGB image whose bar ``b`` is white when bit ``b`` of ``index`` is set."""
    img = np.zeros((height, width, 3), np.uint8)
    bar = width // BITS
    for b in range(BITS):
        if (index >> b) & 1:
            img[:, b * bar : (b + 1) * bar] = 255
    return img


def colour_index_image(index: int, width: int, height: int) -> np.ndarray:
    """RGB image: the top half shows ``index`` as bars, the bottom half three colour stripes.

    Bar ``b`` spans columns ``[b * width // BITS, (b + 1) * width // BITS)`` (any width works),
    stripe ``s`` columns ``[s * width // 3, (s + 1) * width // 3)`` in the colours of
    :func:`stripe_colours`.
    """
    img = np.zeros((height, width, 3), np.uint8)
    top = height // 2
    for b in range(BITS):
        if (index >> b) & 1:
            img[:top, b * width // BITS : (b + 1) * width // BITS] = 255
    for s, colour in enumerate(stripe_colours(index)):
        img[top:, s * width // 3 : (s + 1) * width // 3] = colour
    return img


def stripe_colours(index: int) -> list[tuple[int, int, int]]:
    """Left-to-right RGB colours of frame ``index``'s stripes: red, green, blue rotated."""
    colours = [RED, GREEN, BLUE]
    shift = index % 3
    return colours[shift:] + colours[:shift]


def encode(
    pts: Sequence[int],
    codec: str = "libx264",
    fmt: str = "mp4",
    time_base: Fraction = Fraction(1, 1000),
    images: Sequence[np.ndarray] | None = None,
    rotation: int | None = None,
    options: dict[str, str] | None = None,
    pix_fmt: str | None = None,
    rate: int = 30,
) -> bytes:
    """Encode one frame per ``pts`` (in ``time_base`` ticks); frame ``i`` shows index ``i``.

    ``pix_fmt`` defaults to 4:2:0 (``yuvj420p`` for mjpeg); ``rate`` is the nominal frame rate.
    """
    images = images if images is not None else [index_image(i) for i in range(len(pts))]
    height, width = images[0].shape[:2]
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, options=options or {})
        stream.width, stream.height = width, height
        stream.pix_fmt = pix_fmt or ("yuvj420p" if codec == "mjpeg" else "yuv420p")
        stream.time_base = stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for p, img in zip(pts, images, strict=True):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = p, time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buf.getvalue()


def read_indices(clip: torch.Tensor, spec: PreprocessSpec, rows: slice = slice(None)) -> list[int]:
    """The index each of the clip's ``T`` frames shows (bars read at their centres).

    ``rows`` limits the reading to the rows holding the bars (the top of a colour frame).
    """
    mean = torch.tensor(spec.mean).view(3, 1, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1, 1)
    gray = (clip * std + mean).mean(0)[:, rows]  # (T, H, W) in 0..255
    width = gray.shape[-1]
    centres = [int((b + 0.5) * width / BITS) for b in range(BITS)]
    bits = gray[:, :, centres].mean(1) > 128  # (T, BITS)
    weights = torch.tensor([1 << b for b in range(BITS)])
    return [int(v) for v in (bits.long() * weights).sum(1)]


def nearest_indices(
    frame_times: Sequence[Fraction], keyframe: Fraction, spec: PreprocessSpec
) -> list[int]:
    """Reference sampling in exact arithmetic: nearest frame, ties to the earlier, edges held.

    The window of ``num_frames * frame_interval`` frames of the ``base_fps`` timeline starts
    half of it (rounded down) before the keyframe.
    """
    out = []
    span = spec.num_frames * spec.frame_interval
    for k in range(spec.num_frames):
        s = keyframe + Fraction(spec.frame_interval * k - span // 2) / Fraction(spec.base_fps)
        dists = [abs(t - s) for t in frame_times]
        out.append(dists.index(min(dists)))
    return out
