"""Pure ASGI middleware: request ids, access logs, request metrics, the bare 500, upload limit."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fbil.service.errors import PayloadTooLargeError, error_body
from fbil.service.logs import request_id_var
from fbil.service.metrics import Metrics

log = logging.getLogger("fbil.service.access")

REQUEST_ID_HEADER = "x-request-id"
_GOOD_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


async def send_json(send: Send, status: int, body: dict[str, Any], headers: list) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class RequestContextMiddleware:
    """Request id (taken from ``X-Request-ID`` when sane, else new; always returned), one
    access log line, request count/latency by route and status, and a bare 500 for anything
    unexpected (logged with the request id and traceback)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        request_id = incoming if _GOOD_ID.fullmatch(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 0
        header = (REQUEST_ID_HEADER.encode(), request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if status == 0:
                status = 500
                body = error_body(
                    "internal_error", "internal server error", {"request_id": request_id}
                )
                await send_json(send, 500, body, [header])
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            client_gone = status == 0
            label = "client_closed" if client_gone else str(status)
            self.metrics.requests.labels(route, label).inc()
            self.metrics.request_latency.labels(route).observe(elapsed)
            log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                label,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": label,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
            request_id_var.reset(token)


def _route_template(scope: Scope) -> str:
    """The matched route's path template (bounded label values), or ``unmatched``."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes before reading them all (413).

    A declared ``Content-Length`` over the limit is refused before any byte is read; otherwise
    the body is counted as it streams in, and the read that crosses the limit raises
    :class:`PayloadTooLargeError` (turned into the 413 response by the error handlers, or here).
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            error = self._error(f"the request body is {int(declared)} bytes")
            await send_json(send, 413, error_body(error.code, error.message, error.details), [])
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise self._error(f"the request body exceeds {self.limit} bytes")
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except PayloadTooLargeError as error:
            if started:
                raise
            await send_json(send, 413, error_body(error.code, error.message, error.details), [])

    def _error(self, what: str) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"{what}; the limit is {self.limit} bytes", {"max_upload_bytes": self.limit}
        )
