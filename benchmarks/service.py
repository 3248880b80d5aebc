"""Load test of the HTTP service on loopback: throughput and p50/p95 latency, batching on vs off,
against the same work done in-process.

Starts ``fbil-serve`` on 127.0.0.1 (a free port, :func:`fbil.client.local.local_service`) once per
batching mode, fires ``--requests`` POST /detect calls at each concurrency level (that many
threads sharing one :class:`fbil.client.Client`) and prints one table with the batching-on /
batching-off ratios. The baseline is what each request costs without HTTP: the same
``decode_clips`` + ``normalize_boxes`` + ``runtime.predict`` on the same bytes, in this process,
with the same number of threads calling it at once (one clip a call, no batching; torch's own
threads, as the server has them), measured in the same run right before each level of each
server (which idles meanwhile). Without ``--model`` a small random model (R50 depth with one
block a stage, width 32, 16 frames, short side 128) is written to a temporary folder.

    python -m benchmarks.service [--model PATH] [--concurrency 1 4 16] [--requests 48]
"""

from __future__ import annotations

import argparse
import math
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from benchmarks.timing import Stopwatch
from fbil.client import Client, FBILError
from fbil.client.local import local_service
from fbil.model import ModelMetadata, build_detector, save_model
from fbil.model.config import FBILConfig
from fbil.model.preprocess import PreprocessSpec
from fbil.model.video import decode_clips
from fbil.service.boxes import normalize_boxes
from fbil.service.runtimes import Runtime, load_runtime
from fbil.service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT / "tests" / "data" / "videos" / "Megamind.avi"
SMALL = FBILConfig.tiny(
    width=32,
    reduce_dim=64,
    num_heads=4,
    ffn_dim=128,
    preprocess=PreprocessSpec(num_frames=16, frame_interval=2, short_side=128),
)


def small_model(folder: Path) -> Path:
    torch.manual_seed(0)
    path = folder / "bench.safetensors"
    save_model(build_detector(SMALL), ModelMetadata(config=SMALL, name="bench"), path)
    return path


def metric(client: Client, name: str) -> float:
    """One sample of the service's Prometheus text (NaN when absent)."""
    for line in client.metrics().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return float("nan")


def requests_for(n: int, duration: float) -> list[list[dict]]:
    """``n`` different one-keyframe requests (2 actors each) spread over the segment."""
    out = []
    for i in range(n):
        time_s = 1.0 + (i * 0.37) % max(duration - 2.0, 0.5)
        boxes = [{"box": [100, 40, 300, 500]}, {"box": [350, 30 + i % 50, 700, 520]}]
        out.append([{"time": round(time_s, 3), "boxes": boxes}])
    return out


def load(client: Client, video: bytes, requests: list[list[dict]], concurrency: int):
    """Send every request with ``concurrency`` in flight: (latencies s, wall s, failures)."""

    def one(keyframes: list[dict]) -> float | None:
        watch = Stopwatch()
        try:
            client.detect(video, keyframes)
        except FBILError:
            return None
        return watch.elapsed()

    wall = Stopwatch()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, requests))
    latencies = [r for r in results if r is not None]
    return latencies, wall.elapsed(), len(results) - len(latencies)


def in_process(
    runtime: Runtime, video: bytes, requests: list[list[dict]], concurrency: int
) -> tuple[list[float], float, int]:
    """What :func:`load` measures, without HTTP: each request decoded and predicted here."""
    spec, limits = runtime.metadata.preprocess, Settings().video_limits()

    def one(keyframes: list[dict]) -> float:
        watch = Stopwatch()
        info, clips = decode_clips(video, [k["time"] for k in keyframes], spec, limits)
        for keyframe, clip in zip(keyframes, clips, strict=True):
            boxes = normalize_boxes(
                [b["box"] for b in keyframe["boxes"]], "pixels", info.width, info.height
            )
            rois = torch.cat((torch.zeros(len(boxes), 1), boxes), dim=1)
            runtime.predict(clip.clip[None], rois)
        return watch.elapsed()

    wall = Stopwatch()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(one, requests))
    return latencies, wall.elapsed(), 0


def measure(lat: list[float], wall: float, failed: int) -> dict[str, float]:
    return {
        "rps": len(lat) / wall,
        "p50": percentile(lat, 50) * 1000,
        "p95": percentile(lat, 95) * 1000,
        "failed": failed,
    }


def percentile(values: list[float], q: int) -> float:
    """Nearest-rank percentile (NaN when empty)."""
    if not values:
        return float("nan")
    ranked = sorted(values)
    return ranked[max(0, math.ceil(q / 100 * len(ranked)) - 1)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, help="model file (default: a small random model)")
    p.add_argument("--video", type=Path, default=VIDEO)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests", type=int, default=48, help="requests per concurrency level")
    p.add_argument("--max-batch-size", type=int, default=8, help="with batching on")
    p.add_argument("--max-batch-delay-ms", type=float, default=5.0, help="with batching on")
    p.add_argument("--decode-workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    args = p.parse_args()

    video = args.video.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        model_path = args.model or small_model(Path(tmp))
        modes = {
            "off": {"FBIL_MAX_BATCH_SIZE": "1", "FBIL_MAX_BATCH_DELAY_MS": "0"},
            "on": {
                "FBIL_MAX_BATCH_SIZE": str(args.max_batch_size),
                "FBIL_MAX_BATCH_DELAY_MS": str(args.max_batch_delay_ms),
            },
        }
        results: dict[tuple[str, int], dict[str, float]] = {}
        requests = requests_for(args.requests, 9.0)
        runtime = load_runtime(model_path, device=args.device)
        runtime.warmup()
        in_process(runtime, video, requests[:2], 1)  # warm
        for mode, env in modes.items():
            env = {
                **env,
                "FBIL_DEVICE": args.device,
                "FBIL_DECODE_WORKERS": str(args.decode_workers),
                "FBIL_MAX_QUEUE_SIZE": str(max(64, 4 * max(args.concurrency))),
                "FBIL_MAX_INFLIGHT_REQUESTS": str(max(64, 4 * max(args.concurrency))),
            }
            with (
                local_service(model_path, env=env, startup_timeout=300) as server,
                server.client(timeout=args.timeout) as client,
            ):
                load(client, video, requests[:2], 1)  # warm
                for c in args.concurrency:
                    # the baseline right before each level (the server idles meanwhile): a
                    # shared machine's load drifts less between the two than over the run
                    base = measure(*in_process(runtime, video, requests, c))
                    results[f"in-process ({mode})", c] = base
                    count0 = metric(client, "fbil_batch_size_count")
                    sum0 = metric(client, "fbil_batch_size_sum")
                    lat, wall, failed = load(client, video, requests, c)
                    batches = metric(client, "fbil_batch_size_count") - count0
                    clips = metric(client, "fbil_batch_size_sum") - sum0
                    results[mode, c] = measure(lat, wall, failed)
                    results[mode, c]["batch"] = clips / batches if batches else float("nan")

    print(
        f"\nPOST /detect on loopback, {args.requests} requests a level, {args.video.name}, "
        f"model {args.model or 'small random'}, batching on = max_batch_size "
        f"{args.max_batch_size}, max_batch_delay_ms {args.max_batch_delay_ms}\n"
    )
    head = (
        "| conc | in-process req/s | off req/s | off p50 ms | off p95 ms | on req/s | on p50 ms "
        "| on p95 ms | on mean batch | off/in-process | on/in-process | req/s on/off "
        "| p95 on/off |"
    )
    print(head)
    print("|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|")
    for c in args.concurrency:
        off, on = results["off", c], results["on", c]
        base_off, base_on = results["in-process (off)", c], results["in-process (on)", c]
        print(
            f"| {c} | {base_off['rps']:.2f} / {base_on['rps']:.2f} "
            f"| {off['rps']:.2f} | {off['p50']:.0f} | {off['p95']:.0f} | {on['rps']:.2f} "
            f"| {on['p50']:.0f} | {on['p95']:.0f} | {on['batch']:.2f} "
            f"| {off['rps'] / base_off['rps']:.2f}x | {on['rps'] / base_on['rps']:.2f}x "
            f"| {on['rps'] / off['rps']:.2f}x | {on['p95'] / off['p95']:.2f}x |"
        )
    print(
        "\nin-process: the same decode + predict in this process at the same concurrency, "
        "measured right before the off / on level; off/in-process and on/in-process are req/s "
        "ratios against it"
    )
    failed = sum(r["failed"] for r in results.values())
    if failed:
        print(f"\n{failed:.0f} requests failed (not counted in the latencies)")


if __name__ == "__main__":
    main()
