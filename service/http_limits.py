"""uvicorn's httptools protocol with limits on request headers: size (431) and time (408).

uvicorn bounds neither: httptools accumulates a header however long it grows (a 120 MiB header
stalled the event loop for seconds) and a connection that never finishes its headers stays open.
Here the request line and headers may take ``max_header_bytes`` and ``header_timeout_s`` (from
the connection's start, or a keep-alive request's first byte); past either, the connection gets
the error shape and is closed. Each request's scope carries the time of its first byte under
:data:`REQUEST_STARTED`, for the body deadlines of :mod:`fbil.service.middleware`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from fbil.service.errors import HeadersTooLargeError, HeaderTimeoutError, error_body
from fbil.service.settings import Settings

REQUEST_STARTED = "fbil.request_started"  # scope["extensions"] key: time.monotonic() of byte 1
# after an error answer, what the client still sends is read and dropped (closing with unread
# input resets the connection, and the client may lose the answer), for this long at most
LINGER_S = 1.0
LINGER_BYTES = 1024 * 1024


@dataclass(frozen=True)
class HeaderLimits:
    max_bytes: int
    timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> HeaderLimits:
        return cls(settings.max_header_bytes, settings.header_timeout_s)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` refusing headers over ``limits`` (give it to uvicorn as
    ``http=functools.partial(LimitedHttpToolsProtocol, limits=...)``)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: HeaderLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._in_headers = True  # bytes arriving now belong to a request line or headers
        self._header_bytes = 0
        self._first_byte: float | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._dropped = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(self.limits.timeout_s, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # lingering: drop it
            self._dropped += len(data)
            if self._dropped > LINGER_BYTES:
                self.transport.close()
            return
        if self._in_headers:
            self._header_bytes += len(data)
            self._first_byte = self._first_byte or time.monotonic()
            if self._header_timer is None:  # a keep-alive connection's next request
                self._header_timer = self.loop.call_later(
                    self.limits.timeout_s, self._header_timeout
                )
        super().data_received(data)
        if self._in_headers and self._header_bytes > self.limits.max_bytes:
            self._too_large()

    # parser callbacks
    def on_url(self, url: bytes) -> None:
        if not self._refused:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._refused:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_headers = False
        self._stop_header_timer()
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.limits.max_bytes:
            self._too_large()
            return
        started = self._first_byte or time.monotonic()
        self.scope.setdefault("extensions", {})[REQUEST_STARTED] = started  # type: ignore[typeddict-item]
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        super().on_message_complete()
        self._in_headers, self._header_bytes, self._first_byte = True, 0, None

    # refusals
    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self._refused or self.transport.is_closing():
            return
        if self._header_bytes == 0:
            self.transport.close()  # an idle connection: nothing to answer
            return
        message = f"the request headers did not arrive within {self.limits.timeout_s:g} s"
        details = {"header_timeout_s": self.limits.timeout_s}
        self._refuse(408, error_body(HeaderTimeoutError.code, message, details))

    def _too_large(self) -> None:
        message = f"the request headers exceed {self.limits.max_bytes} bytes"
        details = {"max_header_bytes": self.limits.max_bytes}
        self._refuse(431, error_body(HeadersTooLargeError.code, message, details))

    def _refuse(self, status: int, body: dict[str, Any]) -> None:
        """Answer ``status`` (unless a response is under way), then close the connection once
        the client had time to read it (closing with unread input would reset it at once)."""
        self._refused = True
        self._stop_header_timer()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            data = json.dumps(body).encode()
            head = [STATUS_LINE[status]]
            head += [b"%s: %s\r\n" % pair for pair in self.server_state.default_headers]
            head += [
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(data),
                b"connection: close\r\n\r\n",
            ]
            self.transport.write(b"".join(head) + data)
            if self.transport.can_write_eof():
                self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER_S, self.transport.close)
