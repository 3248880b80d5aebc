"""Bytes -> clip tensors for vtest.avi keyframes: windowed decode against decoding everything.

Run on demand: ``python -m benchmarks.video [--repeat 3]``. Needs the real test videos
(``./scripts/fetch_test_videos.sh``). Every method and request runs in a fresh subprocess, so
that its peak memory is its own: the peak resident set (``VmHWM``, reset just before the call
where the kernel allows it, else ``ru_maxrss``) minus the resident set before the call. That
sees the C allocations of ffmpeg and torch, which ``tracemalloc`` does not.

Methods, all from the file's bytes, all producing the same ``(3, T, H, W)`` clips:

* ``naive``: decode the whole file and convert every frame, then pick the samples (the
  baseline the ratios are against);
* ``no seek``: a streaming sampler (here) decoding from the start of the file, converting only
  the frames it picks (it stops after the last needed frame);
* ``windowed``: ``fbil.model.video.decode_clips`` (one forward pass that demuxes the whole file
  but decodes only from the key frame before each needed sample, skipping the GOPs no window
  needs; converts only the picked frames).

The first two convert frames as ``decode_clips`` does, with :mod:`fbil.model.preprocess`.
Timings split into decoding (demux + decode, waiting on ffmpeg's threads; timed around PyAV's
``demux`` and ``Packet.decode`` by wrapping ``av.open``) and the rest: RGB conversion, resize,
normalisation, sampling and copying into the clips. Times are medians over ``--repeat`` warm
runs after the cold run that measures memory.
``--threads`` sets torch's intra-op threads in the workers (default: torch's own choice); on a
machine already busy, 1 thread avoids OpenMP oversubscription, which can slow the resize ~10x.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import torch

from benchmarks.baseline import nearest_clips
from fbil.model.preprocess import PreprocessSpec, normalize, resize, scaled_size
from fbil.model.video import VideoLimits, decode_clips

VIDEO = Path(__file__).resolve().parents[1] / "tests" / "data" / "videos" / "vtest.avi"
REQUESTS = {  # name: keyframe times in seconds (vtest.avi: 79.5 s, 10 fps, a key frame each 25 s)
    "t=10": [10.0],
    "t=40": [40.0],
    "t=70": [70.0],
    "t=10,40,70": [10.0, 40.0, 70.0],
}
METHODS = ("naive", "no seek", "windowed")
SPEC = PreprocessSpec()
LIMITS = VideoLimits(max_duration_s=120.0)


# --------------------------------------------------------------------------- instrumentation


class Counters:
    """Seconds spent decoding, frames decoded and frames converted."""

    def __init__(self) -> None:
        self.decode_s = 0.0
        self.decoded = self.converted = 0


COUNTERS = Counters()
_OPEN = av.open


class _TimedPacket:
    """A packet whose ``decode`` is timed and counts the frames it gives."""

    def __init__(self, packet: av.Packet) -> None:
        self._packet = packet

    def __getattr__(self, name: str) -> Any:
        return getattr(self._packet, name)

    def decode(self) -> list:
        start = time.perf_counter()
        frames = self._packet.decode()
        COUNTERS.decode_s += time.perf_counter() - start
        COUNTERS.decoded += len(frames)
        return frames


class _TimedContainer:
    """A container whose ``demux`` is timed and yields :class:`_TimedPacket`."""

    def __init__(self, container: av.container.InputContainer) -> None:
        self._container = container

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def __enter__(self) -> _TimedContainer:
        self._container.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._container.__exit__(*exc)

    def demux(self, *args: Any, **kwargs: Any) -> Iterator[_TimedPacket]:
        packets = self._container.demux(*args, **kwargs)
        while True:
            start = time.perf_counter()
            try:
                packet = next(packets)
            except StopIteration:
                COUNTERS.decode_s += time.perf_counter() - start
                return
            COUNTERS.decode_s += time.perf_counter() - start
            yield _TimedPacket(packet)


def _instrument() -> None:
    """Every container PyAV opens (ours and ``decode_clips``'s) times its demuxing and
    decoding (per-packet overhead ~1 us)."""
    av.open = lambda *args, **kwargs: _TimedContainer(_OPEN(*args, **kwargs))


def _decoded(data: bytes) -> Iterator[tuple[float, av.VideoFrame]]:
    """``(seconds from the stream start, frame)`` for every frame, in order."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        origin = stream.start_time or 0
        for packet in container.demux(stream):
            for frame in packet.decode():
                yield float((frame.pts - origin) * stream.time_base), frame


class _Convert:
    """Decoded frame -> normalised ``(3, H, W)``, as ``decode_clips`` converts it (no rotation:
    vtest.avi has none)."""

    def __call__(self, frame: av.VideoFrame) -> torch.Tensor:
        COUNTERS.converted += 1
        size = scaled_size(frame.height, frame.width, SPEC.short_side)
        rgb = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
        return normalize(resize(rgb, size), SPEC)


def naive(data: bytes, times: list[float]) -> list[torch.Tensor]:
    """Decode the whole file, convert and resize every frame, then pick the samples."""
    convert = _Convert()
    frames = [(t, convert(frame)) for t, frame in _decoded(data)]
    return nearest_clips(frames, times, SPEC)


def no_seek(data: bytes, times: list[float]) -> list[torch.Tensor]:
    """Stream from the start; each sample time takes the nearest frame (ties to the earlier),
    converted once when first picked; stop once every sample time is settled."""
    convert = _Convert()
    offsets = SPEC.sample_offsets()
    samples = sorted((t + off, k, j) for k, t in enumerate(times) for j, off in enumerate(offsets))
    picks: list[list[torch.Tensor | None]] = [[None] * len(offsets) for _ in times]
    prev: list[Any] = []  # [time, frame, converted or None] of the previous frame
    n = 0
    for t, frame in _decoded(data):
        current: list[Any] = [t, frame, None]
        while n < len(samples) and samples[n][0] <= t:
            sample, k, j = samples[n]
            best = prev if prev and sample - prev[0] <= t - sample else current
            best[2] = best[2] if best[2] is not None else convert(best[1])
            picks[k][j] = best[2]
            n += 1
        prev = current
        if n == len(samples):
            break
    for _, k, j in samples[n:]:  # past the last frame: repeat it
        prev[2] = prev[2] if prev[2] is not None else convert(prev[1])
        picks[k][j] = prev[2]
    return [torch.stack(clip, dim=1) for clip in picks]  # type: ignore[arg-type]


def windowed(data: bytes, times: list[float]) -> list[torch.Tensor]:
    clips = decode_clips(data, times, SPEC, LIMITS)[1]
    COUNTERS.converted += len({t for c in clips for t in c.frame_times})  # each converted once
    return [c.clip for c in clips]


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
        runs.append((wall, COUNTERS.decode_s))
    wall, decode_s = (statistics.median(r[k] for r in runs) for k in range(2))
    return {
        "wall_s": wall,
        "decode_s": decode_s,
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
        "| frames converted | clip frames/s | decode ms | rest ms | peak RSS delta MB "
        "| RSS vs naive |"
    )
    print("|---" * 12 + "|")
    for name, times in REQUESTS.items():
        results = {m: measure(m, times, args.repeat, args.threads) for m in METHODS}
        base = results["naive"]
        for method, r in results.items():
            if r["shape"] != base["shape"] or abs(r["checksum"] - base["checksum"]) > 1e-3 * abs(
                base["checksum"]
            ):
                print(f"<!-- {name} {method}: clips differ from naive -->")
            wall, decode = r["wall_s"], r["decode_s"]
            rest = max(0.0, wall - decode)
            print(
                f"| {name} | {method} | {wall * 1000:.0f} | {base['wall_s'] / wall:.1f}x "
                f"| {r['decoded']} | {r['decoded'] / wall:.0f} | {r['converted']} "
                f"| {r['clip_frames'] / wall:.0f} | {decode * 1000:.0f} | {rest * 1000:.0f} "
                f"| {r['peak_delta_mb']:.0f} "
                f"| {r['peak_delta_mb'] / max(base['peak_delta_mb'], 1e-9):.2f} |"
            )


if __name__ == "__main__":
    main()
