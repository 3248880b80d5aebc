"""Live streams: lag percentiles, the share of keyframe windows dropped and the keyframes per
second answered with 1, 2 and 4 concurrent live sources on this machine (the ratios against
1 source, measured in the same run), and the process's RSS growth over the last 3/4 of each
run (flat memory: windows are dropped, never queued).

Each source is ``vtest.avi`` (pedestrians, 768x576, 10 fps) served live over HTTP as MPEG-TS
by the ``ffmpeg`` command line at its own frame rate (``-re``), as a camera sends it; the app
(``fbil-serve``'s, the bundled demo model and person detector unless ``--model``) runs
in-process on uvicorn; each stream's events are read as SSE; ``lag_s`` of a keyframe is its
answer time minus the arrival of its window's last frame.

    python -m benchmarks.streams [--seconds 20] [--sources 1 2 4] [--interval 1.0]
                                 [--track-interval S] [--model PATH]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from fbil.service.settings import Settings
from tests.support.live_source import LiveSource, served_app, transcode

VTEST = Path(__file__).parents[1] / "tests" / "data" / "videos" / "vtest.avi"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def follow(base: str, stream_id: str, until: float, lags: list[float]) -> None:
    """Read a stream's keyframe events until the monotonic time ``until``."""
    path = f"/v1/streams/{stream_id}/events"
    with httpx.Client(base_url=base, timeout=30) as client, client.stream("GET", path) as r:
        kind = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "keyframe":
                lags.append(json.loads(line[6:])["lag_s"])
            if time.monotonic() > until:
                return


def run(base: str, ts: Path, sources: int, seconds: float, interval: float) -> dict:
    live = [LiveSource(ts) for _ in range(sources)]
    for source in live:
        source.start()
    client = httpx.Client(base_url=base, timeout=30)
    try:
        ids = []
        for source in live:
            r = client.post("/v1/streams", json={"url": source.url, "keyframe_interval": interval})
            r.raise_for_status()
            ids.append(r.json()["id"])
        began = time.monotonic()
        lags: list[list[float]] = [[] for _ in ids]
        readers = [
            threading.Thread(target=follow, args=(base, i, began + seconds, lag))
            for i, lag in zip(ids, lags, strict=True)
        ]
        for t in readers:
            t.start()
        rss = []  # sampled 8 times a run
        while any(t.is_alive() for t in readers):
            time.sleep(seconds / 8)
            rss.append(rss_mib())
        for t in readers:
            t.join()
        elapsed = time.monotonic() - began
        outs = [client.get(f"/v1/streams/{i}").json() for i in ids]
        for i in ids:
            client.delete(f"/v1/streams/{i}")
    finally:
        client.close()
        for source in live:
            source.kill()
    every = np.array([x for lag in lags for x in lag] or [np.nan])
    answered = sum(o["keyframes"] for o in outs)
    dropped = sum(o["dropped_keyframes"] for o in outs)
    return {
        "sources": sources,
        "kf_s": sum(len(lag) for lag in lags) / elapsed,
        "p50": float(np.percentile(every, 50)),
        "p90": float(np.percentile(every, 90)),
        "p99": float(np.percentile(every, 99)),
        "dropped": dropped / max(answered + dropped, 1),
        # warmed up at a quarter: the first keyframes allocate what later ones reuse
        "rss_q": rss[-1] - rss[len(rss) // 4],
        "rss_h": rss[-1] - rss[len(rss) // 2],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured per run")
    parser.add_argument("--sources", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--interval", type=float, default=1.0, help="keyframe_interval (s)")
    parser.add_argument("--model", type=Path, default=None, help="default: the demo model")
    parser.add_argument(
        "--track-interval", type=float, default=None, help="FBIL_TRACK_INTERVAL_S (0.25)"
    )
    args = parser.parse_args()
    settings = Settings(
        model_path=args.model,
        **({} if args.track_interval is None else {"track_interval_s": args.track_interval}),
        stream_allowed_hosts=["127.0.0.1"],
        max_streams=max(args.sources),
        max_streams_per_key=max(args.sources),
        log_level="warning",
    )
    with tempfile.TemporaryDirectory() as folder, served_app(settings) as base:
        ts = transcode(VTEST, Path(folder) / "vtest.ts", 79)
        rows = [run(base, ts, n, args.seconds, args.interval) for n in args.sources]
    first = rows[0]["kf_s"]
    print(
        f"keyframe_interval {args.interval} s, FBIL_TRACK_INTERVAL_S {settings.track_interval_s}, "
        f"{args.seconds:g} s per run"
    )
    print(
        "| sources | keyframes/s | vs 1 | lag p50 | lag p90 | lag p99 | dropped "
        "| RSS growth, last 3/4 | last 1/2 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['sources']} | {r['kf_s']:.2f} | {r['kf_s'] / first:.2f}x | {r['p50']:.2f} s "
            f"| {r['p90']:.2f} s | {r['p99']:.2f} s | {r['dropped']:.0%} | {r['rss_q']:+.0f} MiB "
            f"| {r['rss_h']:+.0f} MiB |"
        )


if __name__ == "__main__":
    main()
