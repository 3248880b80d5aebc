"""A loopback HTTP server standing in for fbil-serve: records each request, gives canned answers."""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    parts: dict[str, tuple[str | None, str, bytes]]  # name -> (filename, content type, content)

    def request_json(self) -> Any:
        return json.loads(self.parts["request"][2])


@dataclass
class FakeService:
    """Answers ``(status, body, headers)`` for each path (``body``: JSON, or bytes as is)."""

    url: str = ""
    answers: dict[str, tuple[int, Any, dict[str, str]]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)

    def answer(self, path: str, status: int, body: Any, headers: dict[str, str] | None = None):
        self.answers[path] = (status, body, headers or {})


def _parts(content_type: str, body: bytes) -> dict[str, tuple[str | None, str, bytes]]:
    if not content_type.startswith("multipart/"):
        return {}
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    return {
        part.get_param("name", header="content-disposition"): (
            part.get_filename(),
            part.get_content_type(),
            part.get_payload(decode=True),
        )
        for part in message.iter_parts()
    }


@contextmanager
def fake_service() -> Iterator[FakeService]:
    service = FakeService()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            service.received.append(
                Received(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    _parts(self.headers.get("Content-Type", ""), body),
                )
            )
            status, answer, headers = service.answers.get(self.path, (404, {}, {}))
            data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _handle  # noqa: N815 (http.server's names)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    service.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield service
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
