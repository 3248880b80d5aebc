"""Long-video jobs against ``/detect``: keyframes per second of one job over a whole video vs
the same keyframes sent one by one to ``/detect`` (in one run, with the ratio), and the
service's peak RSS running a job over a 10-minute video vs a 1-minute one; and (``--long``) a
10-minute real video with automatic boxes run in-process (``fbil.service.batch.detect_video``,
what ``fbil-detect`` and a job run): the time per keyframe over its last tenth against its first
tenth (goal <= 1.2x: no cost that grows with the position in the video), and the packets demuxed
and frames decoded per video frame (goal <= 1 each: one pass, nothing decoded twice).

Starts ``fbil-serve`` on loopback (:func:`fbil.client.local.local_service`) with a small random
model (the one of ``benchmarks/service.py``) unless ``--model``; every keyframe carries one box.
The RSS videos are synthetic (PyAV, 320x240, 25 fps, mpeg4), each run on a fresh process (its
``VmHWM``). Goals (issue 17): ratio >= 3x; 10-minute peak within 10 % of the 1-minute one.

    python -m benchmarks.jobs [--model PATH] [--video tests/data/videos/vtest.avi] [--no-rss]
    python -m benchmarks.jobs --long [--minutes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from benchmarks.service import SMALL
from fbil.client import Client
from fbil.client.local import local_service
from fbil.model import ModelMetadata, build_detector, save_model
from fbil.model.video import (
    VideoLimits,
    probe,
    segment_end,
)
from fbil.service.keyframes import keyframe_times

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT / "tests" / "data" / "videos" / "vtest.avi"


def _request(video: Path) -> dict:
    info = probe(video, VideoLimits())
    times = keyframe_times(segment_end(video), 1.0)
    box = [info.width * 0.3, info.height * 0.2, info.width * 0.6, info.height * 0.9]
    return {"keyframes": [{"time": t, "boxes": [{"box": box, "id": 1}]} for t in times]}


def _job(client: Client, video: Path, request: dict) -> tuple[int, float]:
    started = time.perf_counter()
    job = client.submit_job(video, request)
    done = client.wait_job(job["id"], poll_s=0.05)
    assert done["state"] == "succeeded", done
    return done["progress"]["total"], time.perf_counter() - started


def _one_by_one(client: Client, video: Path, request: dict) -> float:
    started = time.perf_counter()
    for keyframe in request["keyframes"]:
        client.detect(video, [keyframe])
    return time.perf_counter() - started


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def _synthetic(path: Path, seconds: int, fps: int = 25) -> Path:
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        base = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        for i in range(seconds * fps):
            img = np.roll(base, i, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _repeated(video: Path, out: Path, minutes: float) -> tuple[Path, int]:
    """``video`` played again and again for ``minutes``, its packets copied (no re-encoding,
    real footage); the count of video packets (frames) written."""
    written = 0
    with av.open(str(out), "w") as dst:
        offset = 0
        while True:
            with av.open(str(video)) as src:
                stream = src.streams.video[0]
                if not written:
                    copy = dst.add_stream_from_template(stream)
                last = 0
                for packet in src.demux(stream):
                    if packet.pts is None:
                        continue
                    if (packet.pts + offset) * stream.time_base >= minutes * 60:
                        return out, written
                    last = max(last, packet.pts + (packet.duration or 1))
                    packet.pts += offset
                    packet.dts = packet.pts if packet.dts is None else packet.dts + offset
                    packet.stream = copy
                    dst.mux(packet)
                    written += 1
                offset += last


def _long_video(model: Path, folder: Path, minutes: float) -> None:
    """Time per keyframe along a long video with automatic boxes, and decode work per frame."""
    from fbil.model.video.decode import decode_counts
    from fbil.service.batch import detect_video
    from fbil.service.engine import Engine
    from fbil.service.jobs.schemas import JobRequest
    from fbil.service.settings import Settings

    video, frames = _repeated(VIDEO, folder / "long.avi", minutes)
    request = JobRequest.model_validate({"outputs": ["json"]})  # every 1 s, people detected
    stamps: list[float] = []

    async def run() -> tuple[float, object, object]:
        engine = await asyncio.to_thread(Engine.load, Settings(model_path=model))
        engine.start()
        try:
            before = decode_counts()
            started = time.perf_counter()
            await detect_video(
                engine,
                video,
                folder,
                request,
                on_keyframe=lambda d, t: stamps.append(time.perf_counter()),
            )
            return started, before, decode_counts()
        finally:
            await engine.stop(wait_s=None)

    started, before, after = asyncio.run(run())
    gaps = np.diff(stamps)  # from the first answer on: start-up and the pipeline's fill apart
    tenth = max(len(gaps) // 10, 1)
    first, last = gaps[:tenth].mean(), gaps[-tenth:].mean()
    packets = after.packets - before.packets  # type: ignore[attr-defined]
    decoded = after.frames - before.frames  # type: ignore[attr-defined]
    size = video.stat().st_size / 2**20
    print(f"{minutes:g} min of {VIDEO.name} ({frames} frames, {size:.0f} MiB), automatic boxes:")
    print(
        f"  {len(stamps)} keyframes in {stamps[-1] - started:.1f} s "
        f"(the first answered after {stamps[0] - started:.1f} s)"
    )
    print(
        f"  first tenth {first * 1000:7.1f} ms/keyframe, last tenth {last * 1000:7.1f} ms/keyframe"
    )
    print(f"  last / first: {last / first:.2f}x (goal <= 1.2x)")
    print(
        f"  per video frame: {packets / frames:.3f} packets demuxed, {decoded / frames:.3f} frames "
        "decoded (goal <= 1 each; the demux-only scan that finds the end before keyframes are "
        "planned is not counted: it decodes nothing)"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path)
    p.add_argument("--video", type=Path, default=VIDEO)
    p.add_argument("--no-rss", action="store_true", help="skip the 1 vs 10 minute RSS runs")
    p.add_argument("--long", action="store_true", help="only the long video with automatic boxes")
    p.add_argument("--minutes", type=float, default=10.0, help="length of the long video")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = args.model
        if model is None:
            model = folder / "small.safetensors"
            save_model(build_detector(SMALL), ModelMetadata(config=SMALL, name="small"), model)
        if args.long:
            _long_video(model, folder, args.minutes)
            return 0
        env = {"FBIL_DATA_DIR": str(folder / "data"), "FBIL_MAX_DURATION_S": "900"}
        request = _request(args.video)
        with local_service(model, env=env, hermetic=True) as served, served.client() as client:
            client.detect(args.video, request["keyframes"][:1])  # warm
            count, job_s = _job(client, args.video, request)
            detect_s = _one_by_one(client, args.video, request)
        job_kps, detect_kps = count / job_s, count / detect_s
        print(f"{args.video.name}: {count} keyframes")
        print(f"  job:                {job_s:8.2f} s  {job_kps:7.2f} keyframes/s")
        print(f"  /detect one by one: {detect_s:8.2f} s  {detect_kps:7.2f} keyframes/s")
        print(f"  ratio: {job_kps / detect_kps:.2f}x (goal >= 3x)")
        if args.no_rss:
            return 0
        peaks = {}
        for minutes in (1, 10):
            video = _synthetic(folder / f"{minutes}min.mp4", minutes * 60)
            with local_service(model, env=env, hermetic=True) as served, served.client() as client:
                _job(client, video, _request(video))
                peaks[minutes] = _peak_rss_mib(served.process.pid)  # before it exits
        print(
            f"peak RSS: 1 min {peaks[1]:.0f} MiB, 10 min {peaks[10]:.0f} MiB "
            f"({(peaks[10] / peaks[1] - 1) * 100:+.1f} %, goal within 10 %)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
