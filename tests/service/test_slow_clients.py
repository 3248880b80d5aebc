"""A real ``fbil-serve`` against abusive sockets: slow and stalled uploads, huge and slow headers
(issue 14, items 3 and 4). Small limits keep each abuse to a few seconds; an ordinary request is
still answered, in about its normal time, while the abuse goes on."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from fbil.client.local import LocalService, local_service
from tests.support.serving import TinyModel, multipart

MEGAMIND_REQUEST = {"keyframes": [{"time": 4.0, "boxes": [{"box": [200, 80, 420, 520]}]}]}
LIMITS = {
    "FBIL_MAX_INFLIGHT_REQUESTS": "4",
    "FBIL_MAX_PENDING_UPLOADS": "16",
    "FBIL_UPLOAD_IDLE_TIMEOUT_S": "2",
    "FBIL_MIN_UPLOAD_BYTES_PER_S": "1000",
    "FBIL_UPLOAD_GRACE_S": "5",
    "FBIL_REQUEST_TIMEOUT_S": "7",
    "FBIL_HEADER_TIMEOUT_S": "1",
    "FBIL_MAX_HEADER_BYTES": "16384",
}


@pytest.fixture(scope="module")
def served(
    tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalService]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with local_service(
        tiny_model.path, env=LIMITS, hermetic=True, log_file=log, startup_timeout=120
    ) as service:
        yield service
    assert service.graceful, log.read_text()[-2000:]


def _address(service: LocalService) -> tuple[str, int]:
    url = httpx.URL(service.url)
    assert url.port is not None
    return url.host, url.port


def _read_response(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the one response on ``sock`` (read until the server closes
    or the declared length arrived)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _error_code(body: bytes) -> str:
    return json.loads(body)["error"]["code"]


@dataclass
class Uploader:
    """One socket posting a /detect body of ``total`` bytes: ``chunk`` bytes every ``every``
    seconds (``stop_after`` bytes, then silence); what the server answered, and when."""

    address: tuple[str, int]
    body: bytes
    content_type: str
    chunk: int
    every: float
    stop_after: int | None = None
    status: int | None = None
    code: str | None = None
    answered_after: float | None = None
    sent: int = 0
    _thread: threading.Thread = field(init=False, repr=False)

    def start(self) -> Uploader:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        with socket.create_connection(self.address) as sock:
            head = (
                f"POST /detect HTTP/1.1\r\nHost: fbil\r\nContent-Type: {self.content_type}\r\n"
                f"Content-Length: {len(self.body)}\r\n\r\n"
            )
            sock.sendall(head.encode())
            sock.setblocking(False)
            limit = len(self.body) if self.stop_after is None else self.stop_after
            answer = b""
            while not answer:
                if self.sent < limit:
                    piece = self.body[self.sent : min(self.sent + self.chunk, limit)]
                    with contextlib.suppress(
                        BlockingIOError, BrokenPipeError, ConnectionResetError
                    ):
                        self.sent += sock.send(piece)
                time.sleep(self.every)
                try:
                    answer = sock.recv(1, socket.MSG_PEEK)
                except BlockingIOError:
                    continue
                if not answer:
                    return  # closed without an answer
            sock.setblocking(True)
            self.answered_after = time.monotonic() - started
            self.status, _, body = _read_response(sock, 5)
            self.code = _error_code(body)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"no answer in {timeout} s: {self}"


def _ordinary_detect(service: LocalService, video: Path) -> tuple[int, float]:
    started = time.monotonic()
    with httpx.Client(base_url=service.url, timeout=60) as client:
        files = {
            "video": ("m.avi", video.read_bytes()),
            "request": (None, json.dumps(MEGAMIND_REQUEST)),
        }
        response = client.post("/detect", files=files)
    return response.status_code, time.monotonic() - started


def test_slow_uploads_neither_block_others_nor_stay(served: LocalService, megamind: Path) -> None:
    status, normal_s = _ordinary_detect(served, megamind)  # the normal time of this request
    assert status == 200
    body, content_type = multipart(bytes(200_000), MEGAMIND_REQUEST)
    address = _address(served)
    dribblers = [Uploader(address, body, content_type, 1, 0.2).start() for _ in range(6)]  # 5 B/s
    steady = Uploader(address, body, content_type, 400, 0.2).start()  # 2000 B/s: over the rate
    stalled = Uploader(address, body, content_type, 4000, 0.05, stop_after=4000).start()
    time.sleep(0.5)

    status, during_s = _ordinary_detect(served, megamind)
    assert status == 200
    assert during_s < 3 * normal_s + 2, (normal_s, during_s)
    # the abuse was still going on: 6 slow uploads > max_inflight_requests=4
    assert all(u.status is None for u in (*dribblers, steady)), dribblers

    for uploader in (*dribblers, steady, stalled):
        uploader.join(15)
    for dribbler in dribblers:  # below the minimum rate once the grace period is over
        assert (dribbler.status, dribbler.code) == (408, "upload_too_slow")
        assert 5 <= dribbler.answered_after < 10
    assert (stalled.status, stalled.code) == (408, "upload_idle_timeout")
    assert 2 <= stalled.answered_after < 6
    assert (steady.status, steady.code) == (408, "request_timeout")
    assert 7 <= steady.answered_after < 12
    assert steady.sent < len(body)


def test_oversized_headers_are_431(served: LocalService) -> None:
    with socket.create_connection(_address(served)) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: fbil\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n"
        )
        status, headers, body = _read_response(sock, 5)
    assert status == 431
    assert _error_code(body) == "headers_too_large"
    assert json.loads(body)["error"]["details"] == {"max_header_bytes": 16384}
    assert headers["connection"] == "close"


def _stream_header(address: tuple[str, int], total: int, result: dict) -> None:
    """Send a ``total``-byte header on ``GET /healthz`` as fast as the server reads it."""
    with socket.create_connection(address) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: fbil\r\nX-Big: ")
        piece = b"a" * 1024 * 1024
        sent = 0
        try:
            while sent < total:
                sock.sendall(piece)
                sent += len(piece)
            sock.sendall(b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        result["sent"] = sent
        try:
            result["status"] = _read_response(sock, 10)[0]
        except (ConnectionError, OSError) as e:
            result["status"] = repr(e)


def test_a_huge_header_is_cut_short_and_others_are_answered(served: LocalService) -> None:
    total = 120 * 1024 * 1024
    result: dict = {}
    streamer = threading.Thread(target=_stream_header, args=(_address(served), total, result))
    streamer.start()
    slowest = 0.0
    with httpx.Client(base_url=served.url, timeout=30) as client:
        for _ in range(10):
            started = time.monotonic()
            assert client.get("/readyz").status_code == 200
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.05)
    streamer.join(60)
    assert slowest < 2.0  # before: 7-9 s while a 120 MiB header streamed in
    assert result["status"] == 431, result
    assert result["sent"] < total


def test_slow_headers_are_cut_at_the_header_timeout(served: LocalService) -> None:
    with socket.create_connection(_address(served)) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: fbil\r\n")
        sock.setblocking(False)
        answered = b""
        for _ in range(80):  # one byte of a header every 0.1 s, for up to 8 s
            try:
                sock.send(b"x")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
            try:
                answered = sock.recv(1, socket.MSG_PEEK)
                break
            except BlockingIOError:
                continue
        elapsed = time.monotonic() - started
        sock.setblocking(True)
        status, _, body = _read_response(sock, 5)
    assert (status, _error_code(body)) == (408, "header_timeout")
    # the server's timer starts on accept, a moment before `started`: hence 0.95, not 1
    assert 0.95 <= elapsed < 5, elapsed  # before: never cut
    assert answered


def test_a_silent_connection_is_closed_at_the_header_timeout(served: LocalService) -> None:
    with socket.create_connection(_address(served)) as sock:
        started = time.monotonic()
        sock.settimeout(10)
        assert sock.recv(1) == b""  # closed, nothing sent
        # the server's timer starts on accept, a moment before `started`: hence 0.95, not 1
        assert 0.95 <= time.monotonic() - started < 8  # before: never closed
