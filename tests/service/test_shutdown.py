"""A real ``fbil-serve`` stopped (SIGTERM) while requests are in flight past the graceful-shutdown
time (issue 14, item 9): they are answered 503 ``shutting_down`` with ``Retry-After``, and the
process exits about then, not when the work in flight is over."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx

from fbil.client.local import local_service
from tests.support.serving import TinyModel, metric_value, multipart

GRACE_S = 1.0
# The request's 4 clips wait for a batch of 8 to fill for up to BATCH_WAIT_MS: in flight, for
# a known time, long after SIGTERM (sent as soon as its upload is in and it is being served)
BATCH_WAIT_MS = 30_000
SLOW_REQUEST = {
    "keyframes": [{"time": 3.0 + 15 * i, "boxes": [{"box": [0, 0, 50, 50]}]} for i in range(4)]
}


def test_requests_past_the_grace_are_503_and_the_process_exits(
    tiny_model: TinyModel, test_videos: Path, tmp_path: Path
) -> None:
    env = {"FBIL_GRACEFUL_SHUTDOWN_S": str(GRACE_S), "FBIL_MAX_DURATION_S": "90"}
    env |= {"FBIL_MAX_BATCH_SIZE": "8", "FBIL_MAX_BATCH_DELAY_MS": str(BATCH_WAIT_MS)}
    log = tmp_path / "serve.log"
    with local_service(
        tiny_model.path, env=env, hermetic=True, log_file=log, startup_timeout=120
    ) as served:
        decoding: dict = {}

        def slow_detect() -> None:
            files = {
                "video": ("vtest.avi", (test_videos / "vtest.avi").read_bytes()),
                "request": (None, json.dumps(SLOW_REQUEST)),
            }
            with httpx.Client(base_url=served.url, timeout=60) as client:
                response = client.post("/detect", files=files)
            decoding.update(status=response.status_code, headers=response.headers)
            decoding.update(body=response.json(), at=time.monotonic())

        detect = threading.Thread(target=slow_detect)
        detect.start()
        # a second request whose upload has stopped half-way
        body, content_type = multipart(bytes(100_000), SLOW_REQUEST)
        url = httpx.URL(served.url)
        paused = socket.create_connection((url.host, url.port))
        paused.sendall(
            f"POST /detect HTTP/1.1\r\nHost: fbil\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:50_000]
        )
        _wait_until_in_flight(served.url)  # the upload is in (8 MB on loopback)
        assert "status" not in decoding

        terminated = time.monotonic()
        served.process.terminate()
        detect.join(30)
        exit_code = served.process.wait(30)
        exited = time.monotonic()
        paused.settimeout(5)
        answer = b""
        while chunk := paused.recv(65536):
            answer += chunk
        paused.close()

    assert exit_code == served.returncode and served.graceful, log.read_text()[-2000:]
    assert decoding["status"] == 503, decoding
    assert decoding["body"]["error"]["code"] == "shutting_down"
    assert decoding["headers"]["retry-after"] == "1"
    assert GRACE_S <= decoding["at"] - terminated < GRACE_S + 2
    assert exited - terminated < GRACE_S + 2.5, exited - terminated
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), answer[:300]
    assert b"retry-after: 1" in head.lower()
    assert json.loads(rest)["error"]["code"] == "shutting_down"


def _wait_until_in_flight(url: str, timeout: float = 30.0) -> None:
    """Until ``fbil_inflight_requests`` says one /detect request is being decoded or run."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=5) as client:
        while time.monotonic() < deadline:
            if metric_value(client.get("/metrics").text, "fbil_inflight_requests") >= 1:
                return
            time.sleep(0.02)
    raise AssertionError("the /detect request never got in flight")
