"""A real ``fbil-serve`` process on 127.0.0.1 (random free port) answers real videos with the
scores of running the model directly on the same clips (tiny random checkpoint and the
published parity_tiny model exported to ONNX)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import torch
from serving import TinyModel

from fbil import model
from fbil.export.onnx_export import export_onnx
from fbil.model.video import VideoLimits, decode_clips
from fbil.service.boxes import normalize_boxes

LIMITS = VideoLimits(max_duration_s=90)
PARITY = Path(__file__).resolve().parents[3] / "shared" / "reference" / "parity_tiny"


@contextmanager
def fbil_serve(model_path: Path, log: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FBIL_")}
    env.update(FBIL_MODEL_PATH=str(model_path), FBIL_PORT=str(port), FBIL_HOST="127.0.0.1")
    env.update(FBIL_MAX_DURATION_S="90")  # vtest.avi lasts 79.5 s
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fbil.service.cli"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"fbil-serve exited {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"fbil-serve not ready: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        # graceful shutdown: uvicorn re-raises the SIGTERM it handled once it has drained
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)


REQUESTS = {
    "vtest.avi": {  # 768x576, 10 fps: pedestrians
        "keyframes": [
            {"time": 3.0, "boxes": [{"box": [400, 150, 470, 330], "id": "a"},
                                    {"box": [90, 250, 170, 430], "id": "b"}]},
            {"time": 20.5, "boxes": [{"box": [300, 100, 380, 300]}]},
            {"time": 21.0, "boxes": [{"box": [77, 115, 230, 518]}]},
        ],
    },
    "Megamind.avi": {  # 720x528, 23.976 fps
        "keyframes": [
            {"time": 4.0, "boxes": [{"box": [200, 80, 420, 520], "id": 1},
                                    {"box": [450, 100, 700, 500], "id": 2},
                                    {"box": [10, 300, 120, 520], "id": 3}]},
        ],
    },
}  # fmt: skip


def _direct_scores(
    detector: model.FBILDetector, meta: model.ModelMetadata, video: Path, request: dict
) -> list[torch.Tensor]:
    """Per keyframe: the model run directly on the clips the video module makes."""
    times = [k["time"] for k in request["keyframes"]]
    info, keyframes = decode_clips(video, times, meta.preprocess, LIMITS)
    out = []
    for spec, keyframe in zip(request["keyframes"], keyframes, strict=True):
        boxes = [b["box"] for b in spec["boxes"]]
        norm = normalize_boxes(boxes, "pixels", info.width, info.height)
        rois = torch.cat((torch.zeros(len(norm), 1), norm), dim=1)
        with torch.inference_mode():
            out.append(detector.scores(detector(keyframe.clip.unsqueeze(0), rois)))
    return out


def _check_server(url: str, detector, meta, videos: Path, requests: dict = REQUESTS) -> None:
    for name, request in requests.items():
        request = {**request, "all_scores": True, "top_k": 3}
        response = httpx.post(
            f"{url}/detect",
            files={"video": (name, (videos / name).read_bytes(), "video/x-msvideo")},
            data={"request": json.dumps(request)},
            timeout=300,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        expected = _direct_scores(detector, meta, videos / name, request)
        assert len(body["keyframes"]) == len(request["keyframes"])
        for got, want, sent in zip(body["keyframes"], expected, request["keyframes"], strict=True):
            assert len(got["actors"]) == len(sent["boxes"])
            for j, actor in enumerate(got["actors"]):
                assert actor["box"] == sent["boxes"][j]["box"]
                assert actor["id"] == sent["boxes"][j].get("id", j)
                scores = torch.tensor(actor["scores"])
                assert (scores - want[j]).abs().max() < 1e-4
                top = sorted(range(len(scores)), key=lambda c: -scores[c])[:3]
                assert [a["id"] for a in actor["actions"]] == [meta.labels[c].id for c in top]


def test_tiny_checkpoint_served_by_a_real_process(tiny_model: TinyModel, test_videos, tmp_path):
    with fbil_serve(tiny_model.path, tmp_path / "serve.log") as url:
        card = httpx.get(f"{url}/v1/model").json()
        assert card["backend"] == "eager" and len(card["labels"]) == 60
        _check_server(url, tiny_model.detector, tiny_model.metadata, test_videos)


def test_parity_tiny_onnx_served_by_a_real_process(test_videos, tmp_path):
    if not PARITY.exists():
        pytest.fail(f"reference fixture {PARITY} is missing")
    detector, meta = model.load_model(PARITY / "checkpoint.pth.tar", PARITY / "config.yaml")
    onnx_path = export_onnx(detector, meta, tmp_path / "parity.onnx")
    with fbil_serve(onnx_path, tmp_path / "serve.log") as url:
        assert httpx.get(f"{url}/v1/model").json()["backend"] == "onnx"
        # the published model runs 32 frames at 256 px: one request keeps the test short
        _check_server(url, detector, meta, test_videos, {"vtest.avi": REQUESTS["vtest.avi"]})
