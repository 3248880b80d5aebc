"""Decoding work of the costliest request shape: a 4K clip with one key frame and keyframes
spread over it (issue 14, item 2).

Run on demand: ``python -m benchmarks.decode_cost [--video PATH]``. Makes the clip with PyAV
(3840x2160, 59 s at 30 fps, near-static content, a single key frame; kept at ``--video`` so
later runs reuse it), then times ``decode_clips`` for 11 keyframes 5.5 s apart, once without
budget limits and once with the service's default limits (``Settings``), and prints the
decoded frame count, the seconds and the outcome.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import av
import numpy as np

from fbil.model import video
from fbil.model.preprocess import PreprocessSpec
from fbil.model.video import decode
from fbil.service.settings import Settings

WIDTH, HEIGHT, FPS, SECONDS = 3840, 2160, 30, 59
TIMES = [5.5 * k for k in range(11)]  # 0 to 55 s


def make_video(path: Path) -> None:
    """Near-static 4K H.264 with one key frame: a grey picture whose corner block moves."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(
            "libx264",
            rate=FPS,
            options={
                "preset": "ultrafast",
                "g": "100000",
                "keyint_min": "100000",
                "sc_threshold": "0",
            },
        )
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        picture = np.full((HEIGHT, WIDTH, 3), 96, np.uint8)
        for i in range(SECONDS * FPS):
            img = picture.copy()
            x = (i * 8) % (WIDTH - 64)
            img[:64, x : x + 64] = 255
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())


def timed(path: Path, limits: video.VideoLimits) -> str:
    decoded = 0
    real = decode.decoded_frames

    def counting(*args):
        nonlocal decoded
        for frame in real(*args):
            decoded += 1
            yield frame

    decode.decoded_frames = counting
    started = time.perf_counter()
    try:
        video.decode_clips(path, TIMES, PreprocessSpec(), limits)
        outcome = "clips"
    except video.VideoError as e:
        outcome = f"{e.code}: {e}"
    finally:
        decode.decoded_frames = real
    return f"{time.perf_counter() - started:.1f} s, {decoded} frames decoded -> {outcome}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=Path("/tmp/fbil_4k_one_key.mp4"))
    args = parser.parse_args()
    if not args.video.is_file():
        started = time.perf_counter()
        make_video(args.video)
        print(f"made {args.video} in {time.perf_counter() - started:.0f} s")
    print(f"{args.video}: {args.video.stat().st_size} bytes, keyframes at {TIMES}")
    service = Settings.model_construct().video_limits()
    budget = ("max_decoded_pixels", "max_decode_s")  # absent before the budget existed
    unbounded = replace(service, **{name: None for name in budget if hasattr(service, name)})
    print("no decode budget:", timed(args.video, unbounded))
    print("service defaults:", timed(args.video, service))


if __name__ == "__main__":
    main()
