"""A real ``fbil-serve`` process on 127.0.0.1 (random free port) answers real videos with the
scores of running the model directly on the same clips (tiny random checkpoint and the
published parity_tiny model exported to ONNX)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from fbil import model
from fbil.client import Client
from fbil.client.local import local_service
from fbil.export.onnx_export import export_onnx
from fbil.model.video import VideoLimits, decode_clips
from fbil.service.boxes import normalize_boxes
from tests.support.serving import TinyModel

LIMITS = VideoLimits(max_duration_s=90)
PARITY = Path(__file__).resolve().parents[3] / "shared" / "reference" / "parity_tiny"


@contextmanager
def fbil_serve(model_path: Path, log: Path) -> Iterator[Client]:
    """The service in a hermetic environment (no FBIL_ variable of ours), logging to ``log``;
    it must stop gracefully (drain, then exit on its SIGTERM)."""
    env = {"FBIL_MAX_DURATION_S": "90"}  # vtest.avi lasts 79.5 s
    with (
        local_service(
            model_path, env=env, hermetic=True, log_file=log, log_level=None, startup_timeout=120
        ) as served,
        served.client(timeout=300) as client,
    ):
        yield client
    assert served.graceful, f"fbil-serve exited {served.returncode}: {log.read_text()[-2000:]}"


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
        rois = torch.cat((torch.zeros(len(norm), 1), torch.from_numpy(norm)), dim=1)
        with torch.inference_mode():
            out.append(detector.scores(detector(keyframe.clip.unsqueeze(0), rois)))
    return out


def _check_server(client: Client, detector, meta, videos: Path, requests: dict = REQUESTS) -> None:
    for name, request in requests.items():
        result = client.detect(videos / name, request["keyframes"], all_scores=True, top_k=3)
        expected = _direct_scores(detector, meta, videos / name, request)
        assert len(result.keyframes) == len(request["keyframes"])
        for got, want, sent in zip(result.keyframes, expected, request["keyframes"], strict=True):
            assert len(got.actors) == len(sent["boxes"])
            for j, actor in enumerate(got.actors):
                assert list(actor.box) == sent["boxes"][j]["box"]
                assert actor.id == sent["boxes"][j].get("id", j)
                scores = torch.tensor(actor.scores)
                assert (scores - want[j]).abs().max() < 1e-4
                top = sorted(range(len(scores)), key=lambda c: -scores[c])[:3]
                assert [a.id for a in actor.actions] == [meta.labels[c].id for c in top]


def test_tiny_checkpoint_served_by_a_real_process(tiny_model: TinyModel, test_videos, tmp_path):
    with fbil_serve(tiny_model.path, tmp_path / "serve.log") as client:
        card = client.model_info()
        assert card.backend == "eager" and len(card.labels) == 60
        _check_server(client, tiny_model.detector, tiny_model.metadata, test_videos)


def test_parity_tiny_onnx_served_by_a_real_process(test_videos, tmp_path):
    if not PARITY.exists():
        pytest.fail(f"reference fixture {PARITY} is missing")
    detector, meta = model.load_model(PARITY / "checkpoint.pth.tar", PARITY / "config.yaml")
    onnx_path = export_onnx(detector, meta, tmp_path / "parity.onnx")
    with fbil_serve(onnx_path, tmp_path / "serve.log") as client:
        assert client.model_info().backend == "onnx"
        # the published model runs 32 frames at 256 px: one request keeps the test short
        _check_server(client, detector, meta, test_videos, {"vtest.avi": REQUESTS["vtest.avi"]})
