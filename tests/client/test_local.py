"""local_service and Client against a real ``fbil-serve`` process (tiny random model)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fbil.client import (
    AuthenticationError,
    BadRequestError,
    Box,
    Client,
    FBILConnectionError,
    Keyframe,
    UnsupportedVideoError,
)
from fbil.client.local import LocalServiceError, local_service
from fbil.model import ModelMetadata, build_detector, save_model
from tests.support.serving import TINY_CONFIG
from tests.support.synthetic_video import encode


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(build_detector(TINY_CONFIG), ModelMetadata(config=TINY_CONFIG, name="tiny"), path)
    return path


def test_a_served_tiny_model_answers_the_client_and_stops_gracefully(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # hermetic: the caller's FBIL_ variables do not reach the service
    monkeypatch.setenv("FBIL_MAX_KEYFRAMES", "1")
    video = encode([round(i * 1000 / 30) for i in range(60)])  # 2 s, 160x96
    log = tmp_path / "serve.log"
    env = {"FBIL_API_KEYS": "local-service-key-1"}
    with local_service(tiny_model, env=env, hermetic=True, log_file=log, log_level=None) as served:
        assert served.url.startswith("http://127.0.0.1:")
        with served.client(api_key="local-service-key-1") as client:
            assert client.ready() and client.health()
            info = client.model_info()
            assert (info.name, info.backend, len(info.labels)) == ("tiny", "eager", 60)
            keyframes = [
                Keyframe(0.5, [Box((10, 10, 60, 90), "a"), (70, 5, 150, 95)]),
                Keyframe(1.5, [Box((0.1, 0.1, 0.5, 0.9))]),
            ]
            result = client.detect(video, keyframes[:1], top_k=2, all_scores=True)
            (keyframe,) = result.keyframes
            assert [a.id for a in keyframe.actors] == ["a", 1]
            assert all(len(a.actions) == 2 and len(a.scores) == 60 for a in keyframe.actors)
            assert (result.video.width, result.video.height) == (160, 96)
            with pytest.raises(BadRequestError) as caught:  # a pixel box on a 0..1 request
                client.detect(video, keyframes, box_format="normalized")
            assert caught.value.code == "bad_box" and caught.value.request_id
            with pytest.raises(UnsupportedVideoError) as caught:
                client.detect(b"not a video at all", keyframes[1:])
            assert caught.value.code == "not_a_video"
        with Client(served.url) as anonymous, pytest.raises(AuthenticationError) as caught:
            anonymous.detect(video, keyframes)
        assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    assert served.returncode is not None and served.graceful, served.returncode
    with Client(served.url, timeout=5) as client, pytest.raises(FBILConnectionError):
        client.ready()
    assert log.stat().st_size > 0  # the service's own log, at its default level


def test_a_service_that_cannot_start_is_reported_with_the_end_of_its_log(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    missing = tmp_path / "missing.onnx"
    with pytest.raises(LocalServiceError) as caught, local_service(missing, log_file=log):
        pytest.fail("the service should not have become ready")
    message = str(caught.value)
    assert message.startswith("the local fbil-serve exited with code 2; the end of ")
    assert str(missing) in message  # fbil-serve's own complaint, from the log
