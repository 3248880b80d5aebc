"""Cost of finding the people: the bundled person detector per keyframe and per tile, next to
the action model that then scores them.

Frames of ``vtest.avi`` (768x576). The detector runs the whole frame alone (one 300x300 input,
the baseline) and the default tiling (3x2 tiles + the whole frame, all in one ONNX Runtime
call), for one keyframe and for a request's worth batched together. The action model is the
bundled demo model on ONNX Runtime with one clip and the people found on the keyframe. Ratios are
against the whole-frame detector measured in the same run.

    python -m benchmarks.detector [--keyframes 1 8] [--repeats 5] [--threads N] [--device cuda]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import numpy as np
import torch

from benchmarks.timing import median_seconds
from fbil.export.wrapper import random_inputs
from fbil.model.persons import DEFAULT_THRESHOLD, DEFAULT_TILING, load_person_detector
from fbil.model.tiles import Tiling
from fbil.service.runtimes import load_runtime

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "model" / "data" / "demo" / "model.onnx"


def keyframes(video: Path, count: int) -> list[np.ndarray]:
    """``count`` RGB frames one second apart, from 3 s on."""
    frames: list[np.ndarray] = []
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.pts * stream.time_base >= 3 + len(frames):
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == count:
                    break
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=ROOT / "tests/data/videos/vtest.avi")
    parser.add_argument("--keyframes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    providers = ["CPUExecutionProvider"]
    if args.device == "cuda":
        providers = ["CUDAExecutionProvider", *providers]
    frames = keyframes(args.video, max(args.keyframes))
    h, w = frames[0].shape[:2]
    variants = {
        "whole frame": Tiling(1, 1, 0.0),
        "default tiles": DEFAULT_TILING,
    }
    detectors = {
        name: load_person_detector(providers=providers, num_threads=args.threads, tiling=t)
        for name, t in variants.items()
    }
    action = load_runtime(DEMO, "onnx", device=args.device, onnx_providers=providers,
                          num_threads=args.threads)  # fmt: skip
    spec = action.metadata.preprocess
    side = spec.short_side
    clip_hw = (side, round(side * w / h))

    print(f"{args.video.name} {w}x{h}, device {args.device}, threads {args.threads}, "
          f"threshold {DEFAULT_THRESHOLD}")  # fmt: skip
    header = f"{'what':>32} | {'keyframes':>9} | {'tiles':>5} | {'ms/keyframe':>11} | "
    header += f"{'ms/tile':>7} | {'ratio':>6}"
    print(header)
    print("-" * len(header))
    gen = torch.Generator().manual_seed(0)
    for k in args.keyframes:
        batch = frames[:k]
        base = None
        for name, detector in detectors.items():
            tiles = len(variants[name].windows(h, w))
            t = median_seconds(lambda d=detector, b=batch: d.detect(b, DEFAULT_THRESHOLD),
                               args.repeats) / k  # fmt: skip
            base = base or t
            print(f"{'detector, ' + name:>32} | {k:>9} | {tiles:>5} | {t * 1e3:>11.1f} | "
                  f"{t / tiles * 1e3:>7.1f} | {t / base:>5.2f}x")  # fmt: skip
        people = max(1, len(detectors["default tiles"].detect(batch[:1], DEFAULT_THRESHOLD)[0]))
        clips, rois = random_inputs(k, people * k, spec.num_frames, *clip_hw, gen)
        t = median_seconds(lambda c=clips, r=rois: action.predict(c, r), args.repeats) / k
        print(f"{f'demo action model, {people} people':>32} | {k:>9} | {'':>5} | "
              f"{t * 1e3:>11.1f} | {'':>7} | {t / base:>5.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
