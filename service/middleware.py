"""Pure ASGI middleware: request ids, access logs, request metrics, the bare 500, the 503 of
requests cut at shutdown, upload limit, upload deadlines."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fbil.service.errors import (
    OverloadedError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ServiceError,
    ShuttingDownError,
    UploadIdleTimeoutError,
    UploadTooSlowError,
    error_body,
)
from fbil.service.http_limits import REQUEST_STARTED
from fbil.service.logs import request_id_var
from fbil.service.metrics import Metrics
from fbil.service.settings import Settings

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


async def run_or_answer(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    errors: type[ServiceError],
    headers: list[tuple[bytes, bytes]],
) -> None:
    """Run ``app``; a guard's error (one of ``errors``, raised from ``receive``) becomes its
    shaped answer with ``headers`` when no response has started yet, else propagates."""
    started = False

    async def tracking_send(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, receive, tracking_send)
    except errors as error:
        if started:
            raise
        body = error_body(error.code, error.message, error.details)
        await send_json(send, error.status, body, headers)


class RequestContextMiddleware:
    """Request id (taken from ``X-Request-ID`` when sane, else new; always returned), one
    access log line, request count/latency by route and status, a bare 500 for anything
    unexpected (logged with the request id and traceback), and a 503 ``shutting_down`` with
    ``Retry-After`` for a request cancelled before its answer (uvicorn cancels the requests
    still running when the graceful-shutdown time is over)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, retry_after_s: int = 1) -> None:
        self.app = app
        self.metrics = metrics
        self.retry_after_s = retry_after_s

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
        except asyncio.CancelledError:
            if status != 0:
                raise
            log.warning("cancelled at shutdown: %s %s", scope["method"], scope["path"])
            status = 503
            body = error_body(
                ShuttingDownError.code,
                "the service stopped before this request was answered; retry it",
                {"request_id": request_id},
            )
            retry = (b"retry-after", str(self.retry_after_s).encode())
            await send_json(send, 503, body, [header, retry, (b"connection", b"close")])
            # the task ends here: uvicorn cancels it only to end it
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

    def __init__(self, app: ASGIApp, limit: int, path_limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.path_limits = path_limits or {}  # exact paths with a limit of their own

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get(scope["path"].rstrip("/") or "/", self.limit)
        if limit != self.limit:
            await BodyLimitMiddleware(self.app, limit)(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            error = self._error(f"the request body is {int(declared)} bytes")
            await send_json(send, 413, error_body(error.code, error.message, error.details), [])
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise self._error(f"the request body exceeds {self.limit} bytes")
            return message

        await run_or_answer(self.app, scope, counting_receive, send, PayloadTooLargeError, [])

    def _error(self, what: str) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"{what}; the limit is {self.limit} bytes", {"max_upload_bytes": self.limit}
        )


@dataclass(frozen=True)
class UploadLimits:
    """How many request bodies may arrive at once and how slowly (see :class:`UploadGuard`)."""

    max_pending: int
    idle_timeout_s: float
    min_bytes_per_s: float
    grace_s: float
    request_timeout_s: float
    retry_after_s: int
    path_request_timeouts: tuple[tuple[str, float], ...] = ()  # exact paths with their own

    @classmethod
    def from_settings(cls, s: Settings) -> UploadLimits:
        return cls(
            s.max_pending_uploads,
            s.upload_idle_timeout_s,
            s.min_upload_bytes_per_s,
            s.upload_grace_s,
            s.request_timeout_s,
            s.retry_after_s,
            (("/v1/jobs", s.job_upload_timeout_s),),
        )

    def for_path(self, path: str) -> UploadLimits:
        timeout = dict(self.path_request_timeouts).get(path.rstrip("/") or "/")
        return self if timeout is None else replace(self, request_timeout_s=timeout)


class _BodyClock:
    """The deadlines of one body: the next piece within ``idle_timeout_s`` of the last; on
    average ``min_bytes_per_s`` once ``grace_s`` has passed (Kestrel's MinRequestBodyDataRate);
    all of it within ``request_timeout_s`` of the request's first byte."""

    def __init__(self, limits: UploadLimits, request_started: float, now: float) -> None:
        self.limits = limits
        self.request_started = request_started
        self.body_started = self.last = now
        self.received = 0

    def add(self, size: int, now: float) -> None:
        self.received += size
        self.last = now

    def next_deadline(self) -> tuple[float, RequestTimeoutError]:
        """The earliest deadline (a ``time.monotonic()`` time) and the error it raises."""
        lim = self.limits
        deadlines = [
            (
                self.request_started + lim.request_timeout_s,
                RequestTimeoutError(
                    f"the request did not arrive within {lim.request_timeout_s:g} s",
                    {"request_timeout_s": lim.request_timeout_s},
                ),
            ),
            (
                self.last + lim.idle_timeout_s,
                UploadIdleTimeoutError(
                    f"no byte of the request body for {lim.idle_timeout_s:g} s",
                    {"upload_idle_timeout_s": lim.idle_timeout_s},
                ),
            ),
        ]
        if lim.min_bytes_per_s > 0:
            in_time = self.received / lim.min_bytes_per_s  # seconds these bytes may have taken
            deadlines.append(
                (
                    self.body_started + max(lim.grace_s, in_time),
                    UploadTooSlowError(
                        f"the request body arrives slower than {lim.min_bytes_per_s:g} bytes/s",
                        {"min_upload_bytes_per_s": lim.min_bytes_per_s, "received": self.received},
                    ),
                )
            )
        deadline, error = min(deadlines, key=lambda d: d[0])
        error.headers["Connection"] = "close"  # stop reading the rest of it
        return deadline, error


def _has_body(scope: Scope) -> bool:
    headers = dict(scope["headers"])
    length = headers.get(b"content-length", b"")
    return (length.isdigit() and int(length) > 0) or b"transfer-encoding" in headers


class UploadGuard:
    """Request bodies: at most ``max_pending`` arriving at once (beyond it: 503 ``overloaded``
    before reading), each within the deadlines of :class:`_BodyClock` (408 ``request_timeout``,
    ``upload_idle_timeout`` or ``upload_too_slow``; the connection is then closed).

    A body holds its pending slot until its last byte has arrived (or the request ends), so a
    slow upload holds no ``/detect`` processing slot: routes count those once the body is in.
    """

    def __init__(self, app: ASGIApp, limits: UploadLimits) -> None:
        self.app = app
        self.limits = limits
        self.pending = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        if self.pending >= self.limits.max_pending:
            error = OverloadedError(
                f"{self.pending} request bodies arriving, the limit is {self.limits.max_pending}"
            )
            headers = [
                (b"retry-after", str(self.limits.retry_after_s).encode()),
                (b"connection", b"close"),
            ]
            await send_json(send, 503, error_body(error.code, error.message), headers)
            return
        now = time.monotonic()
        clock = _BodyClock(
            self.limits.for_path(scope["path"]),
            scope.get("extensions", {}).get(REQUEST_STARTED, now),
            now,
        )
        self.pending += 1
        holding = True

        def release() -> None:
            nonlocal holding
            if holding:
                holding = False
                self.pending -= 1

        async def guarded_receive() -> Message:
            if not holding:  # the body is in: what follows is the disconnect
                return await receive()
            deadline, error = clock.next_deadline()
            if deadline <= time.monotonic():
                raise error
            try:
                async with asyncio.timeout(deadline - time.monotonic()):
                    message = await receive()
            except TimeoutError:
                raise error from None
            if message["type"] == "http.request":
                clock.add(len(message.get("body", b"")), time.monotonic())
                if message.get("more_body", False):
                    return message
            release()
            return message

        try:
            close = [(b"connection", b"close")]
            await run_or_answer(self.app, scope, guarded_receive, send, RequestTimeoutError, close)
        finally:
            release()
