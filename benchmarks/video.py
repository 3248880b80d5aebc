"""Bytes -> clip tensors for vtest.avi keyframes: windowed decode against decoding everything.

Run on demand: ``python benchmarks/video.py [--repeat 3]``. Needs the real test videos
(``./scripts/fetch_test_videos.sh``). Every method and request runs in a fresh subprocess, so
that its peak memory is its own: the peak resident set (``VmHWM``, reset just before the call
where the kernel allows it, else ``ru_maxrss``) minus the resident set before the call. That
sees the C allocations of ffmpeg and torch, which ``tracemalloc`` does not.

Methods, all from the file's bytes, all producing the same ``(3, T, H, W)`` clips:

* ``naive``: decode the whole file and convert every frame, then pick the samples (the
  baseline the ratios are against);
* ``no seek``: the service's sampler decoding from the start of the file, converting only
  the frames it picks (it stops after the last needed frame);
* ``windowed``: ``service.video.decode_keyframes`` (seek to the key frame before the first
  sample, decode to the last, convert only the picked frames).

Timings split into decoding (demux + decode, waiting on ffmpeg's threads) and preprocessing
(RGB conversion, resize, normalisation); the rest is sampling and copying into the clips.
Times are medians over ``--repeat`` warm runs after the cold run that measures memory.
``--threads`` sets torch's intra-op threads in the workers (default: torch's own choice); on a
machine already busy, 1 thread avoids OpenMP oversubscription, which can slow the resize ~10x.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import av
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.baseline import nearest_clips  # noqa: E402
from fbil.model.preprocess import PreprocessSpec  # noqa: E402
from fbil.service import video  # noqa: E402

VIDEO = Path(__file__).resolve().parents[1] / "tests" / "data" / "videos" / "vtest.avi"
REQUESTS = {  # name: keyframe times in seconds (vtest.avi: 79.5 s, 10 fps, a key frame each 25 s)
    "t=10": [10.0],
    "t=40": [40.0],
    "t=70": [70.0],
    "t=10,40,70": [10.0, 40.0, 70.0],
}
METHODS = ("naive", "no seek", "windowed")
SPEC = PreprocessSpec()
LIMITS = video.VideoLimits(max_duration_s=120.0)


# --------------------------------------------------------------------------- instrumentation


class Counters:
    """Seconds spent in decoding and preprocessing, and frames decoded and converted."""

    def __init__(self) -> None:
        self.decode_s = self.preprocess_s = 0.0
        self.decoded = self.converted = 0


COUNTERS = Counters()


def _instrument() -> None:
    """Wrap the service's frame source and converter with timers (per-frame overhead ~1 us)."""
    frames, call = video._decoded_frames, video._Converter.__call__

    def timed_frames(*args):
        source = frames(*args)
        while True:
            start = time.perf_counter()
            try:
                frame = next(source)
            except StopIteration:
                COUNTERS.decode_s += time.perf_counter() - start
                return
            COUNTERS.decode_s += time.perf_counter() - start
            COUNTERS.decoded += 1
            yield frame

    def timed_call(self, frame):
        start = time.perf_counter()
        out = call(self, frame)
        COUNTERS.preprocess_s += time.perf_counter() - start
        COUNTERS.converted += 1
        return out

    video._decoded_frames = timed_frames
    video._Converter.__call__ = timed_call


def naive(data: bytes, times: list[float]) -> list[torch.Tensor]:
    """Decode the whole file, convert and resize every frame, then pick the samples."""
    convert = video._Converter(SPEC)
    frames = []
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        origin = stream.start_time or 0
        for frame in video._decoded_frames(container, stream):
            frames.append((float((frame.pts - origin) * stream.time_base), convert(frame)))
    return nearest_clips(frames, times, SPEC)


def no_seek(data: bytes, times: list[float]) -> list[torch.Tensor]:
    result = video._decode(data, times, SPEC, LIMITS, "torch", seek=False, gap_s=math.inf)
    return [kf.clip for kf in result[1]]


def windowed(data: bytes, times: list[float]) -> list[torch.Tensor]:
    return [kf.clip for kf in video.decode_keyframes(data, times, SPEC, LIMITS)[1]]


RUNNERS: dict[str, Callable[[bytes, list[float]], list[torch.Tensor]]] = {
    "naive": naive,
    "no seek": no_seek,
    "windowed": windowed,
}


# --------------------------------------------------------------------------- worker


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker(method: str, times: list[float], repeat: int, threads: int) -> dict[str, object]:
    if threads:
        torch.set_num_threads(threads)
    _instrument()
    data = VIDEO.read_bytes()
    run = RUNNERS[method]
    # warm-up (codecs, thread pools, torch kernels) through the windowed path for every method:
    # little memory, so the measured run's peak is not hidden by pages the allocator kept
    windowed(data, [1.0])
    before_kb = _status_kb("VmRSS")
    reset = _reset_peak()
    if not reset:  # ru_maxrss cannot be reset: count from the larger of the two
        before_kb = max(before_kb or 0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    runs = []
    for i in range(max(1, repeat) + 1):
        COUNTERS.__init__()
        start = time.perf_counter()
        clips = run(data, times)
        wall = time.perf_counter() - start
        if i == 0:  # the cold run: memory only
            peak_kb = _status_kb("VmHWM") if reset else None
            peak_kb = peak_kb or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            shape = list(clips[0].shape)
            checksum = float(sum(c.double().sum() for c in clips))
            del clips
            continue
        runs.append((wall, COUNTERS.decode_s, COUNTERS.preprocess_s))
    wall, decode_s, preprocess_s = (statistics.median(r[k] for r in runs) for k in range(3))
    return {
        "wall_s": wall,
        "decode_s": decode_s,
        "preprocess_s": preprocess_s,
        "decoded": COUNTERS.decoded,
        "converted": COUNTERS.converted,
        "clip_frames": SPEC.num_frames * len(times),
        "peak_delta_mb": max(0, peak_kb - before_kb) / 1024,
        "shape": shape,
        "checksum": checksum,
    }


def measure(method: str, times: list[float], repeat: int, threads: int) -> dict[str, object]:
    args = [sys.executable, __file__, "--worker", method, "--times", ",".join(map(str, times))]
    args += ["--repeat", str(repeat), "--threads", str(threads)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


# --------------------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--times", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        times = [float(t) for t in args.times.split(",")]
        print(json.dumps(worker(args.worker, times, args.repeat, args.threads)))
        return
    threads = args.threads or torch.get_num_threads()
    print(
        f"{VIDEO.name}: PyAV {av.__version__}, torch {torch.__version__} ({threads} threads), "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, repeat {args.repeat}\n"
    )
    print(
        "| request | method | ms | speed-up vs naive | frames decoded | decoded frames/s "
        "| clip frames/s | decode ms | preprocess ms | other ms | preprocess / decode "
        "| peak RSS delta MB | RSS vs naive |"
    )
    print("|---" * 13 + "|")
    for name, times in REQUESTS.items():
        results = {m: measure(m, times, args.repeat, args.threads) for m in METHODS}
        base = results["naive"]
        for method, r in results.items():
            if r["shape"] != base["shape"] or abs(r["checksum"] - base["checksum"]) > 1e-3 * abs(
                base["checksum"]
            ):
                print(f"<!-- {name} {method}: clips differ from naive -->")
            wall, decode, prep = r["wall_s"], r["decode_s"], r["preprocess_s"]
            other = max(0.0, wall - decode - prep)
            print(
                f"| {name} | {method} | {wall * 1000:.0f} | {base['wall_s'] / wall:.1f}x "
                f"| {r['decoded']} | {r['decoded'] / wall:.0f} | {r['clip_frames'] / wall:.0f} "
                f"| {decode * 1000:.0f} | {prep * 1000:.0f} | {other * 1000:.0f} "
                f"| {prep / decode:.2f} | {r['peak_delta_mb']:.0f} "
                f"| {r['peak_delta_mb'] / max(base['peak_delta_mb'], 1e-9):.2f} |"
            )


if __name__ == "__main__":
    main()
