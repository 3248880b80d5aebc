"""fbil.client.Client against a fake loopback service: the form it sends, the documents it
reads, the errors it raises; and what importing it costs."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
from pathlib import Path

import pytest

from fbil.client import (
    DETECT_FIELDS,
    AuthenticationError,
    Box,
    Client,
    DetectResult,
    FBILConnectionError,
    FBILError,
    Keyframe,
    ModelInfo,
    ServerError,
    ServiceUnavailableError,
    UnprocessableVideoError,
    schemas,
)
from fbil.service import schemas as service_schemas
from fbil.service.errors import error_body
from tests.support.fake_service import FakeService

RESPONSE = service_schemas.DetectResponse.model_validate(service_schemas.EXAMPLE_RESPONSE)
CARD = service_schemas.ModelCard(
    name="fbil-tiny",
    version="test",
    description="a tiny model",
    demo=False,
    backend="eager",
    runtime={"device": "cpu"},
    labels=[
        service_schemas.LabelOut(index=0, id=1, name="bend/bow (at the waist)", type="pose"),
        service_schemas.LabelOut(index=1, id=80, name="watch (a person)", type="person"),
    ],
    preprocess={"num_frames": 8},
    limits={"max_keyframes": 16},
    batching={"max_batch_size": 8},
)


def test_importing_the_client_loads_neither_torch_nor_pyav_nor_the_service() -> None:
    code = (
        "import sys, fbil.client, fbil.client.local; "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'torch', 'av', 'numpy', 'PIL', 'fastapi', 'pydantic'} "
        "or m.startswith(('fbil.service', 'fbil.model', 'fbil.export')))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    # the check sees such imports: the demo module does load PyAV
    code = code.replace("fbil.client.local;", "fbil.client.demo;")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "av" in out.stdout.split()


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (schemas.Box, service_schemas.BoxIn),
        (schemas.Keyframe, service_schemas.KeyframeIn),
        (schemas.ModelRef, service_schemas.ModelRef),
        (schemas.VideoMeta, service_schemas.VideoOut),
        (schemas.Action, service_schemas.ActionOut),
        (schemas.Actor, service_schemas.ActorOut),
        (schemas.KeyframeResult, service_schemas.KeyframeOut),
        (schemas.Timing, service_schemas.Timing),
        (schemas.DetectResult, service_schemas.DetectResponse),
        (schemas.Label, service_schemas.LabelOut),
        (schemas.ModelInfo, service_schemas.ModelCard),
    ],
    ids=lambda c: c.__name__,
)
def test_documents_have_the_service_schemas_fields(ours: type, theirs: type) -> None:
    assert [f.name for f in dataclasses.fields(ours)] == list(theirs.model_fields)


def test_detect_fields_are_the_request_documents() -> None:
    assert tuple(service_schemas.DetectRequest.model_fields) == DETECT_FIELDS


def test_detect_posts_the_form_the_service_reads(fake: FakeService, tmp_path: Path) -> None:
    fake.answer("/detect", 200, RESPONSE.model_dump(mode="json"))
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not decoded by the fake")
    keyframes = [
        Keyframe(2.0, [Box((120, 40, 260, 400), "person-1"), (400, 60, 520, 410)]),
        {"time": 3.5, "boxes": [{"box": [0.1, 0.2, 0.3, 0.4], "id": 7}]},
        Keyframe(None, [Box((1, 2, 3, 4))]),
    ]
    with Client(fake.url + "/", api_key="KEY", timeout=10) as client:
        result = client.detect(video, keyframes, top_k=3, min_score=0.05, all_scores=True)
        client.detect(video.read_bytes(), keyframes[:1])
        with video.open("rb") as f:
            client.detect(f, keyframes[:1], box_format="normalized")
        client.detect(io.BytesIO(b"v"), keyframes[:1])
    first, as_bytes, as_file, as_buffer = fake.received
    assert (first.method, first.path) == ("POST", "/detect")
    assert first.headers["authorization"] == "Bearer KEY"
    assert first.parts["video"] == ("clip.mp4", "video/mp4", video.read_bytes())
    sent = first.request_json()
    assert sent == {
        "keyframes": [
            {"time": 2.0, "boxes": [{"box": [120, 40, 260, 400], "id": "person-1"},
                                    {"box": [400, 60, 520, 410]}]},
            {"time": 3.5, "boxes": [{"box": [0.1, 0.2, 0.3, 0.4], "id": 7}]},
            {"time": None, "boxes": [{"box": [1, 2, 3, 4]}]},
        ],
        "box_format": "pixels",
        "all_scores": True,
        "top_k": 3,
        "min_score": 0.05,
    }  # fmt: skip
    parsed = service_schemas.DetectRequest.model_validate_json(first.parts["request"][2])
    assert parsed.top_k == 3 and parsed.keyframes[0].boxes[0].id == "person-1"
    # server defaults are left to the server
    assert as_bytes.request_json() == {"keyframes": sent["keyframes"][:1], "box_format": "pixels"}
    assert as_bytes.parts["video"] == ("video", "application/octet-stream", video.read_bytes())
    assert as_file.parts["video"][:2] == ("clip.mp4", "video/mp4")
    assert as_file.request_json()["box_format"] == "normalized"
    assert as_buffer.parts["video"] == ("video", "application/octet-stream", b"v")

    assert isinstance(result, DetectResult)
    assert result.model.backend == "onnx" and result.video.width == 720
    assert result.video.fps == pytest.approx(23.976)
    actor = result.keyframes[0].actors[0]
    assert (actor.id, actor.box) == ("person-1", (120, 40, 260, 400))
    assert [(a.id, a.name) for a in actor.actions][:2] == [(12, "stand"), (80, "watch (a person)")]
    assert actor.actions[0].score == pytest.approx(0.91) and actor.scores is None
    assert result.keyframes[0].actors[1].id == 7
    assert result.timing_ms.total == pytest.approx(135.0)


def test_all_scores_are_read() -> None:
    document = RESPONSE.model_dump(mode="json")
    document["keyframes"][0]["actors"][0]["scores"] = [0.5, 0.25]
    result = DetectResult.from_json(document)
    assert result.keyframes[0].actors[0].scores == (0.5, 0.25)
    assert result.keyframes[0].actors[1].scores is None


def test_model_info(fake: FakeService) -> None:
    document = CARD.model_dump(mode="json")
    document["added_by_a_newer_service"] = True  # ignored
    fake.answer("/v1/model", 200, document)
    with Client(fake.url) as client:
        info = client.model_info()
    assert isinstance(info, ModelInfo)
    assert (info.name, info.version, info.backend) == ("fbil-tiny", "test", "eager")
    assert info.demo is False
    assert [(label.index, label.id, label.type) for label in info.labels] == [
        (0, 1, "pose"),
        (1, 80, "person"),
    ]
    assert info.runtime == {"device": "cpu"} and info.limits == {"max_keyframes": 16}
    assert fake.received[0].method == "GET"
    assert "authorization" not in fake.received[0].headers


def test_health_and_readiness(fake: FakeService) -> None:
    fake.answer("/healthz", 200, {"status": "ok"})
    fake.answer("/readyz", 503, error_body("not_ready", "the model is loading"))
    fake.answer("/metrics", 200, b"fbil_requests_total 3.0\n")
    with Client(fake.url) as client:
        assert client.health() is True
        assert client.ready() is False
        fake.answer("/readyz", 200, {"status": "ready"})
        assert client.ready() is True
        assert client.metrics() == "fbil_requests_total 3.0\n"
        fake.answer("/healthz", 401, error_body("unauthorized", "no"))
        with pytest.raises(AuthenticationError):
            client.health()


def test_errors_carry_the_service_code_message_and_request_id(fake: FakeService) -> None:
    with Client(fake.url) as client:
        fake.answer(
            "/detect",
            422,
            error_body("keyframe_out_of_range", "keyframe 9 s is past the end (6 s)"),
            {"X-Request-ID": "abc123"},
        )
        with pytest.raises(UnprocessableVideoError) as caught:
            client.detect(b"v", [Keyframe(9.0, [(1, 2, 3, 4)])])
        error = caught.value
        assert (error.status, error.code) == (422, "keyframe_out_of_range")
        assert error.request_id == "abc123"
        assert error.message == "keyframe 9 s is past the end (6 s)"
        assert str(error) == "HTTP 422 keyframe_out_of_range: keyframe 9 s is past the end (6 s)"

        fake.answer("/detect", 503, error_body("overloaded", "queue full"), {"Retry-After": "2"})
        with pytest.raises(ServiceUnavailableError) as caught:
            client.detect(b"v", [Keyframe(1.0, [(1, 2, 3, 4)])])
        assert (caught.value.code, caught.value.retry_after) == ("overloaded", 2.0)

        # the bare 500 names the request id in its details
        body = error_body("internal_error", "internal server error", {"request_id": "r9"})
        fake.answer("/v1/model", 500, body)
        with pytest.raises(ServerError) as caught:
            client.model_info()
        assert (caught.value.code, caught.value.request_id) == ("internal_error", "r9")

        fake.answer("/v1/model", 502, b"<html>Bad Gateway</html>")  # a proxy's page
        with pytest.raises(ServerError) as caught:
            client.model_info()
        assert (caught.value.code, caught.value.message) == ("http_502", "<html>Bad Gateway</html>")

        fake.answer("/v1/model", 409, error_body("conflict", "?"))
        with pytest.raises(FBILError) as caught:
            client.model_info()
        assert (caught.value.status, caught.value.code) == (409, "conflict")


def test_no_answer_is_a_connection_error() -> None:
    with (
        Client("http://127.0.0.1:9", timeout=5) as client,  # nothing listens there
        pytest.raises(FBILConnectionError) as caught,
    ):
        client.ready()
    error = caught.value
    assert isinstance(error, FBILError)
    assert (error.status, error.code) == (None, "connection_error")
    assert str(error).startswith("cannot reach http://127.0.0.1:9: ")
    assert "\n" not in str(error)
