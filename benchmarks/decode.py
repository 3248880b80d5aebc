"""Decode + preprocess time per keyframe, against a naive decode-everything baseline, and the
two ways to resize a decoded frame.

Run on demand: ``python -m benchmarks.decode [--repeat 3]``. Needs the real test videos
(``./scripts/fetch_test_videos.sh``). Prints markdown tables; ratios compare with the baseline
measured in the same run, so they hold across machines better than the absolute times.

Resizing: ``fbil.model.video`` converts to RGB at full size with swscale and resizes with
:func:`fbil.model.preprocess.resize` (torch, antialiased); the alternative measured here is a
single swscale call that converts and resizes (its bilinear filter widens when shrinking, like
antialiasing).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import av
import torch
from av.video.reformatter import VideoReformatter

from benchmarks.baseline import nearest_clips
from fbil.model.preprocess import PreprocessSpec, normalize, resize, scaled_size
from fbil.model.video import VideoLimits, decode_clips

VIDEOS = Path(__file__).resolve().parents[1] / "tests" / "data" / "videos"
CASES = {  # video: keyframe times for the 1- and 4-keyframe requests
    "vtest.avi": [40.0, 40.5, 41.0, 41.5],
    "Megamind.avi": [5.0, 5.5, 6.0, 6.5],
}
LIMITS = VideoLimits(max_duration_s=120.0)


def convert(frame: av.VideoFrame, spec: PreprocessSpec) -> torch.Tensor:
    """Decoded frame -> normalised ``(3, H, W)`` as ``decode_clips`` converts it (the test
    videos have no display rotation)."""
    size = scaled_size(frame.height, frame.width, spec.short_side)
    rgb = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
    return normalize(resize(rgb, size), spec)


def naive(path: Path, times: list[float], spec: PreprocessSpec) -> list[torch.Tensor]:
    """Baseline: decode the whole file, convert and resize every frame, then pick samples."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [(float(f.time), convert(f, spec)) for f in container.decode(stream)]
    frames.sort(key=lambda item: item[0])
    return nearest_clips(frames, times, spec)


def resize_torch(
    frame: av.VideoFrame, size: tuple[int, int], reformatter: VideoReformatter
) -> torch.Tensor:
    """What ``decode_clips`` does: swscale to RGB at full size, then torch resizes."""
    full = reformatter.reformat(frame, format="rgb24").to_ndarray()
    return resize(torch.from_numpy(full).permute(2, 0, 1), size)


def resize_swscale(
    frame: av.VideoFrame, size: tuple[int, int], reformatter: VideoReformatter
) -> torch.Tensor:
    """The alternative: one swscale call converts to RGB and resizes (bilinear)."""
    height, width = size
    small = reformatter.reformat(
        frame, width=width, height=height, format="rgb24", interpolation="BILINEAR"
    )
    return torch.from_numpy(small.to_ndarray()).permute(2, 0, 1)


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``fn`` in seconds."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def resize_costs(path: Path, spec: PreprocessSpec, n: int = 60) -> dict[str, float]:
    """ms per frame: swscale convert+resize in one call against swscale RGB + torch resize."""
    with av.open(str(path)) as container:
        frames = [f for _, f in zip(range(n), container.decode(video=0), strict=False)]
    size = scaled_size(frames[0].height, frames[0].width, spec.short_side)
    reformatter = VideoReformatter()
    costs = {}
    for name, fn in (("swscale", resize_swscale), ("torch", resize_torch)):
        costs[name] = timed(lambda fn=fn: [fn(f, size, reformatter) for f in frames], 3)
        costs[name] *= 1000 / len(frames)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    spec = PreprocessSpec()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"torch threads: {torch.get_num_threads()}, PyAV {av.__version__}\n")
    print("| video | keyframes | method | ms / request | ms / keyframe | vs naive |")
    print("|---|---|---|---|---|---|")
    for name, all_times in CASES.items():
        path = VIDEOS / name
        for count in (1, 4):
            times = all_times[:count]
            base = timed(lambda p=path, t=times: naive(p, t, spec), 1)
            rows = {
                "naive (decode all)": base,
                "decode_clips": timed(
                    lambda p=path, t=times: decode_clips(p, t, spec, LIMITS), args.repeat
                ),
            }
            for method, seconds in rows.items():
                print(
                    f"| {name} | {count} | {method} | {seconds * 1000:.0f} "
                    f"| {seconds * 1000 / count:.0f} | {base / seconds:.1f}x |"
                )
    print("\n| video | swscale reformat (ms/frame) | swscale RGB + torch resize (ms/frame) |")
    print("|---|---|---|")
    for name in CASES:
        costs = resize_costs(VIDEOS / name, spec)
        print(f"| {name} | {costs['swscale']:.2f} | {costs['torch']:.2f} |")


if __name__ == "__main__":
    main()
