"""A real ``fbil-serve`` stopped (SIGTERM) while requests are in flight past the graceful-shutdown
time (issue 14, item 9): they are answered 503 ``shutting_down`` with ``Retry-After``, and the
process exits about then, not when a long decode is over."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
from serving import TinyModel, multipart

from fbil.client.local import local_service

GRACE_S = 1.0
# vtest.avi (79.5 s, 4 key frames) with keyframes spread over it: a decode of several seconds
SLOW_REQUEST = {
    "keyframes": [{"time": 3.0 + 5 * i, "boxes": [{"box": [0, 0, 50, 50]}]} for i in range(16)]
}


def test_requests_past_the_grace_are_503_and_the_process_exits(
    tiny_model: TinyModel, test_videos: Path, tmp_path: Path
) -> None:
    env = {"FBIL_GRACEFUL_SHUTDOWN_S": str(GRACE_S), "FBIL_MAX_DURATION_S": "90"}
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
        time.sleep(2.0)  # the upload is in (8 MB on loopback); the decode has begun
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
