"""Memory of one ``/detect`` request without boxes on a 4K video: the process's peak RSS with
the detector's frames held at full size (before issue 27) and scaled to what it needs (now).
Each variant runs in a fresh process: ``python -m benchmarks.detect_memory``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FRAMES, HEIGHT, WIDTH = 40, 2160, 3840  # 4 s at 10 fps: the detector looks at ~16 frames


def _video() -> bytes:
    from tests.support.synthetic_video import encode

    images = []
    for i in range(FRAMES):
        image = np.full((HEIGHT, WIDTH, 3), 200, np.uint8)
        image[700:1700, 1200 + 20 * i : 1550 + 20 * i] = (40, 40, 60)
        images.append(image)
    return encode(list(range(0, FRAMES * 100, 100)), codec="mjpeg", fmt="avi", images=images)


async def _one(full_size: bool, path: Path) -> dict:
    import torch

    from fbil.model import ModelMetadata, build_detector, save_model
    from fbil.model.persons import OnnxPersonDetector
    from tests.support.serving import TINY_CONFIG, detect_files, serve

    if full_size:  # what the service did before: frames held at the video's size
        OnnxPersonDetector.needed_size = lambda self, h, w: (h, w)  # type: ignore[method-assign]
    folder = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    model = folder / "tiny.safetensors"
    save_model(
        build_detector(TINY_CONFIG), ModelMetadata(config=TINY_CONFIG, name="t", version="t"), model
    )
    video = path.read_bytes()
    request = json.dumps({"keyframes": [{"time": 3.5}]})
    async with serve(model, data_dir=folder / "data", max_duration_s=10) as s:
        before = _high_water_mb()
        r = await s.client.post("/detect", files=detect_files(video, request))
        assert r.status_code == 200, r.text
        peak = _high_water_mb()
    return {"before_mb": before, "peak_mb": peak, "timing": r.json()["timing_ms"]}


def _high_water_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def main() -> None:
    if len(sys.argv) > 1:
        print(json.dumps(asyncio.run(_one(sys.argv[1] == "full", Path(sys.argv[2])))))
        return
    path = Path(tempfile.mkdtemp()) / "uhd.avi"
    path.write_bytes(_video())  # made here: the measured processes only read it
    rows = {}
    for variant in ("full", "fitted"):
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.detect_memory", variant, str(path)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        rows[variant] = json.loads(out.strip().splitlines()[-1])
    base = rows["full"]["peak_mb"] - rows["full"]["before_mb"]
    print(f"one /detect without boxes, {WIDTH}x{HEIGHT}, {FRAMES} frames")
    head = ("frames held", "peak RSS MB", "request adds MB", "ratio", "detect ms")
    print(f"{head[0]:14} {head[1]:>12} {head[2]:>16} {head[3]:>6} {head[4]:>10}")
    for variant, row in rows.items():
        added = row["peak_mb"] - row["before_mb"]
        print(
            f"{variant:14} {row['peak_mb']:12.0f} {added:16.0f} {added / base:6.2f} "
            f"{row['timing']['detect']:10.0f}"
        )


if __name__ == "__main__":
    main()
