"""Detectors and tracker settings on the labelled people, and what finding them costs.

On ``tests/data/people_labels.json`` (164 people on consecutive keyframes of vtest.avi and
Megamind.avi), each bundled person detector (``ssdlite``, ``oidv4``, ``both``, and ``both`` with
the part rules of :class:`fbil.model.tiles.Tiling` off: ``both-parts``) runs over the keyframes
and the frames between them at most ``--step`` apart, as the service runs it; each tracker
setting then follows the same detections. Printed per detector: recall, precision, false alarms
that are parts of a person (a head, arm or legs boxed as one), ms per frame looked at (keyframes
and tracking frames cost the same: one batched detector call each) and the ratio against the
first detector measured in the same run; per tracker setting: id switches over consecutive
keyframes, track ids carried over a shot cut, and ms per frame.

    python -m benchmarks.detector [--step 0.25] [--threads N] [--device cuda]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from pathlib import Path

import torch

from fbil.model.persons import DEFAULT_THRESHOLD, DEFAULT_TILING, load_bundled_detector
from fbil.model.tiles import Tiling
from fbil.model.tracking import tracker_for
from tests.support.people_labels import Score, detect_clip, load_labels, old_tracker, read_clip
from tests.support.people_labels import score_clip as score

ROOT = Path(__file__).resolve().parents[1]
TRACKERS = {  # the old tracker ignores the boxes below the threshold
    "old: no weak boxes, 1 s, no cuts, no re-id": old_tracker,
    "new: weak boxes >= 0.1, 2 s, cuts, re-id": functools.partial(tracker_for, buffer_s=2.0),
    "new, 1 s buffer": functools.partial(tracker_for, buffer_s=1.0),
    "new, 4 s buffer": functools.partial(tracker_for, buffer_s=4.0),
    "new, no re-id by colour": functools.partial(tracker_for, buffer_s=2.0, reid_distance=0.0),
    "new, no motion model": functools.partial(tracker_for, buffer_s=2.0, motion=False),
    "new, no appearance": functools.partial(tracker_for, buffer_s=2.0, appearance_weight=0.0),
}

NO_PART_RULES = dataclasses.replace(DEFAULT_TILING, fill=2.0, part_inside=2.0)
DETECTORS: dict[str, tuple[str, Tiling]] = {
    "ssdlite": ("ssdlite", DEFAULT_TILING),
    "oidv4": ("oidv4", DEFAULT_TILING),
    "both": ("both", DEFAULT_TILING),
    "both-parts": ("both", NO_PART_RULES),  # before the part rules
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, default=ROOT / "tests/data/videos")
    parser.add_argument("--step", type=float, default=0.25, help="seconds between frames")
    parser.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=DETECTORS)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    providers = ["CPUExecutionProvider"]
    if args.device == "cuda":
        providers = ["CUDAExecutionProvider", *providers]
    clips = [read_clip(v, args.videos, args.step) for v in load_labels()]
    frames = sum(len(c.frames) for c in clips)
    keyframes = sum(len(c.keyframes) for c in clips)
    print(f"{frames} frames ({keyframes} keyframes), step {args.step} s, threshold "
          f"{DEFAULT_THRESHOLD}, device {args.device}, threads {args.threads}")  # fmt: skip
    header = (f"{'detector':>10} | {'tracker':>42} | {'recall':>6} | {'precision':>9} | "
              f"{'parts':>5} | "
              f"{'id sw':>5} | {'carried':>7} | {'ms/frame':>8} | {'ratio':>5}")  # fmt: skip
    print(header)
    print("-" * len(header))
    base = None
    for name in args.detectors:
        bundled, tiling = DETECTORS[name]
        detector = load_bundled_detector(
            bundled, providers=providers, num_threads=args.threads, tiling=tiling
        )
        detector.detect([clips[0].frames[min(clips[0].frames)]], DEFAULT_THRESHOLD)  # warm up
        found, seconds = [], 0.0
        for clip in clips:
            people, s = detect_clip(clip, detector, 0.1)
            found.append(people)
            seconds += s
        ms = seconds / frames * 1e3
        base = base or ms
        for label, make in TRACKERS.items():
            total = Score()
            for clip, people in zip(clips, found, strict=True):
                total = total.add(score(clip, people, DEFAULT_THRESHOLD, make))
            track_ms = total.track_s / frames * 1e3
            print(f"{name:>10} | {label:>42} | {total.recall:>6.3f} | {total.precision:>9.3f} | "
                  f"{total.parts:>5} | "
                  f"{total.switches:>5} | {total.carried:>7} | {ms:>8.1f} | {ms / base:>4.2f}x"
                  f"  (tracker {track_ms:.1f} ms/frame)")  # fmt: skip


if __name__ == "__main__":
    main()
