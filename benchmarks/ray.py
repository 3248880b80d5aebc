"""``fbil-detect --ray`` against plain ``fbil-detect`` on the same videos, in one run: videos/s
and keyframes/s of plain ``fbil-detect`` (one process) and of a local Ray with 1 and 2
workers (ratios against plain), what ``ray.init`` of a local Ray costs, and the peak RSS of each
process (plain's, each Ray worker's ``VmHWM``, sampled while it runs).

Every run starts from an empty output folder and includes loading the model (plain: once; Ray:
once per worker). The model is the small random one of ``benchmarks/service.py`` unless
``--model``; the videos are the repository's test videos unless given.

    python -m benchmarks.ray [--model PATH] [--keyframe-interval 2] [VIDEO ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.service import small_model

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = [
    ROOT / "tests" / "data" / "videos" / name
    for name in ("Megamind.avi", "Megamind_bugy.avi", "tree.avi", "vtest.avi")
]
WORKER_TITLE = b"ray::MapWorker"  # the process title of a Ray Data actor


class WorkerPeaks:
    """Peak RSS (``VmHWM``) of every Ray Data actor process seen while running."""

    def __init__(self, every_s: float = 0.1) -> None:
        self.every_s, self.peaks = every_s, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> WorkerPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    if not (proc / "cmdline").read_bytes().startswith(WORKER_TITLE):
                        continue
                    kib = next(
                        int(line.split()[1])
                        for line in (proc / "status").read_text().splitlines()
                        if line.startswith("VmHWM:")
                    )
                except (OSError, StopIteration, ValueError):
                    continue
                self.peaks[proc.name] = max(self.peaks.get(proc.name, 0), kib)


def keyframes(out: Path) -> int:
    videos = json.loads((out / "manifest.json").read_text())["videos"].values()
    assert all(v["status"] == "done" for v in videos), videos
    return sum(v["keyframes"] for v in videos)


def run_plain(videos: list[Path], out: Path, options: list[str]) -> tuple[float, int]:
    """Seconds of plain fbil-detect in a child process, and its peak RSS (KiB)."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "fbil.service.detect_cli", *map(str, videos)]
    subprocess.run([*command, "--out", str(out), *options], check=True, capture_output=True)
    seconds = time.perf_counter() - started
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", type=Path, nargs="*", default=VIDEOS)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--keyframe-interval", type=float, default=2.0)
    args = parser.parse_args(argv)
    import ray

    from fbil.service.cluster import detect_archive

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        model = args.model or small_model(tmp)
        options = ["--model", str(model), "--keyframe-interval", str(args.keyframe_interval)]
        plain_s, plain_kib = run_plain(args.videos, tmp / "plain", options)
        count = keyframes(tmp / "plain")
        rows = [("plain fbil-detect", plain_s, count, f"{plain_kib / 2**20:.2f} (1 process)")]

        started = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="warning")
        init_s = time.perf_counter() - started
        request = {"keyframe_interval": args.keyframe_interval, "outputs": ["json", "ava_csv"]}
        for workers in (1, 2):
            out = tmp / f"ray{workers}"
            with WorkerPeaks() as peaks:
                started = time.perf_counter()
                result = detect_archive(args.videos, out, request=request, model=model,
                                        workers=workers, progress=False)  # fmt: skip
                seconds = time.perf_counter() - started
            assert result["done"] == len(args.videos), result
            rss = ", ".join(f"{kib / 2**20:.2f}" for kib in sorted(peaks.peaks.values()))
            rows.append((f"ray, {workers} worker(s)", seconds, keyframes(out), rss))
        ray.shutdown()

    print(f"{len(args.videos)} videos, {count} keyframes, {os.cpu_count()} CPUs; "
          f"ray.init (local): {init_s:.1f} s (not in the rows)\n")  # fmt: skip
    print("| run | wall s | videos/s | keyframes/s | vs plain | peak RSS GiB per process |")
    print("|---|---:|---:|---:|---:|---|")
    for name, seconds, frames, rss in rows:
        print(
            f"| {name} | {seconds:.1f} | {len(args.videos) / seconds:.3f} | "
            f"{frames / seconds:.2f} | {plain_s / seconds:.2f}x | {rss} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
