"""Decode + preprocess time per keyframe, against a naive decode-everything baseline.

Run on demand: ``python benchmarks/decode.py [--repeat 3]``. Needs the real test videos
(``./scripts/fetch_test_videos.sh``). Prints a markdown table; ratios compare with the baseline
measured in the same run, so they hold across machines better than the absolute times.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import av
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.baseline import nearest_clips  # noqa: E402
from fbil.model.preprocess import PreprocessSpec  # noqa: E402
from fbil.service.video import VideoLimits, _Converter, decode_keyframes, resize_rgb  # noqa: E402

VIDEOS = Path(__file__).resolve().parents[1] / "tests" / "data" / "videos"
CASES = {  # video: keyframe times for the 1- and 4-keyframe requests
    "vtest.avi": [40.0, 40.5, 41.0, 41.5],
    "Megamind.avi": [5.0, 5.5, 6.0, 6.5],
}
LIMITS = VideoLimits(max_duration_s=120.0)


def naive(path: Path, times: list[float], spec: PreprocessSpec) -> list[torch.Tensor]:
    """Baseline: decode the whole file, convert and resize every frame, then pick samples."""
    convert = _Converter(spec)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [(float(f.time), convert(f)) for f in container.decode(stream)]
    frames.sort(key=lambda item: item[0])
    return nearest_clips(frames, times, spec)


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
    size = _Converter(spec).target_size(frames[0].width, frames[0].height)
    costs = {}
    for resizer in ("swscale", "torch"):
        costs[resizer] = timed(lambda r=resizer: [resize_rgb(f, size, r) for f in frames], 3)
        costs[resizer] *= 1000 / len(frames)
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
            rows = {"naive (decode all)": base}
            for resizer in ("torch", "swscale"):
                rows[f"service, {resizer} resize"] = timed(
                    lambda p=path, t=times, r=resizer: decode_keyframes(
                        p, t, spec, LIMITS, resizer=r
                    ),
                    args.repeat,
                )
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
