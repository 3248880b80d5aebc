"""One error shape for every failure: ``{"error": {"code", "message", "details"}}``.

Domain exceptions map to 4xx/503 here (:class:`ServiceError` carries its status, decoding's
:class:`~fbil.model.video.VideoError` is mapped by :data:`VIDEO_ERROR_STATUS`); anything
unexpected becomes a bare 500 (logged with the request id by :mod:`fbil.service.middleware`,
never shown to the caller).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from fbil.model.video import (
    DecodeBudgetError,
    KeyframeOutOfRangeError,
    NotAVideoError,
    NoVideoStreamError,
    UndecodableVideoError,
    VideoError,
    VideoTooLargeError,
)

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """An error the caller is told about: HTTP ``status``, machine-readable ``code``, and what
    it means (README's "Errors" table and the OpenAPI document list it: :data:`ERROR_CODES`)."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    meaning: ClassVar[str] = "a malformed HTTP request not covered by a code below"

    def __init__(
        self,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


class BadMultipartError(ServiceError):
    status, code = 400, "bad_multipart"
    meaning = "the multipart body is broken (no boundary, truncated)"


class MissingPartError(ServiceError):
    status, code = 400, "missing_part"
    meaning = "the form lacks its `video` or `request` part"


class UnexpectedPartError(ServiceError):
    status, code = 400, "unexpected_part"
    meaning = "a form part other than `video` and `request`, or one twice"


class BadJSONError(ServiceError):
    status, code = 400, "bad_json"
    meaning = "the `request` part is not UTF-8 JSON"


class InvalidRequestError(ServiceError):
    status, code = 400, "invalid_request"
    meaning = "the JSON does not fit the request document (`details.errors`)"


class BadBoxError(ServiceError):
    """A box that is not 4 finite numbers, is empty or inverted, or lies outside the frame."""

    status, code = 400, "bad_box"
    meaning = "a box is not 4 finite numbers, is empty or lies outside the frame"


class BoxesRequiredError(ServiceError):
    status, code = 400, "boxes_required"
    meaning = "a keyframe without `boxes` while `FBIL_DETECTOR=none`"


class UnauthorizedError(ServiceError):
    status, code = 401, "unauthorized"
    meaning = "API key missing or wrong (when `FBIL_API_KEYS` is set)"


class NotFoundError(ServiceError):
    """Answered by the router (:data:`HTTP_ERROR_CODES`), not raised in the app."""

    status, code = 404, "not_found"
    meaning = "no such route"


class JobNotFoundError(ServiceError):
    status, code = 404, "job_not_found"
    meaning = "no job with this id for this API key (or it was deleted)"


class JobVideoUnavailableError(ServiceError):
    status, code = 404, "job_video_unavailable"
    meaning = (
        "the job has no annotated video: `video` not in its `outputs`, or the job has not "
        "succeeded yet"
    )


class MethodNotAllowedError(ServiceError):
    """Answered by the router (:data:`HTTP_ERROR_CODES`), not raised in the app."""

    status, code = 405, "method_not_allowed"
    meaning = "the route exists, not with this method"


class RequestTimeoutError(ServiceError):
    """The request did not arrive in time (the connection is closed after the answer)."""

    status, code = 408, "request_timeout"
    meaning = "headers and body took over `FBIL_REQUEST_TIMEOUT_S`"


class HeaderTimeoutError(RequestTimeoutError):
    """Sent by the HTTP protocol (:mod:`fbil.service.http_limits`), not raised in the app."""

    status, code = 408, "header_timeout"
    meaning = "the headers took over `FBIL_HEADER_TIMEOUT_S`; closed"


class UploadIdleTimeoutError(RequestTimeoutError):
    status, code = 408, "upload_idle_timeout"
    meaning = "the body paused over `FBIL_UPLOAD_IDLE_TIMEOUT_S`"


class UploadTooSlowError(RequestTimeoutError):
    status, code = 408, "upload_too_slow"
    meaning = "the body arrived below `FBIL_MIN_UPLOAD_BYTES_PER_S`"


class PayloadTooLargeError(ServiceError):
    status, code = 413, "payload_too_large"
    meaning = "the request body is over `FBIL_MAX_UPLOAD_BYTES`"


class RequestJSONTooLargeError(ServiceError):
    status, code = 413, "request_json_too_large"
    meaning = "the `request` part is over `FBIL_MAX_REQUEST_JSON_BYTES`"


class TooManyKeyframesError(ServiceError):
    status, code = 413, "too_many_keyframes"
    meaning = "more keyframes than `FBIL_MAX_KEYFRAMES` (a job: `FBIL_JOB_MAX_KEYFRAMES`)"


class TooManyBoxesError(ServiceError):
    status, code = 413, "too_many_boxes"
    meaning = "more boxes on a keyframe than `FBIL_MAX_BOXES_PER_KEYFRAME`"


class NotMultipartError(ServiceError):
    status, code = 415, "not_multipart"
    meaning = "the body is not `multipart/form-data`"


class OutsideEngineProfileError(ServiceError):
    """The clip's size or box count lies outside what the runtime's engine was built for."""

    status, code = 422, "outside_engine_profile"
    meaning = (
        "frames wider than `FBIL_TRT_MAX_ASPECT` or more boxes than the TensorRT engine covers"
    )


class HeadersTooLargeError(ServiceError):
    """Sent by the HTTP protocol (:mod:`fbil.service.http_limits`), not raised in the app."""

    status, code = 431, "headers_too_large"
    meaning = "the request headers are over `FBIL_MAX_HEADER_BYTES`"


class ClientDisconnectedError(ServiceError):
    """The caller went away; nobody reads the answer (logged and counted as 499)."""

    status, code = 499, "client_closed_request"
    meaning = "the caller left first (logged, never sent)"


class InternalError(ServiceError):
    """Anything unexpected: logged with the request id and traceback by
    :mod:`fbil.service.middleware`, answered without internals (never raised on purpose)."""

    status, code = 500, "internal_error"
    meaning = "unexpected: logged with the request id, no internals shown"


class OverloadedError(ServiceError):
    status, code = 503, "overloaded"
    meaning = "queue, in-flight or pending-upload limit reached; retry later"


class ShuttingDownError(ServiceError):
    """Sent by :class:`~fbil.service.middleware.RequestContextMiddleware` to requests still
    running when the graceful-shutdown time is over."""

    status, code = 503, "shutting_down"
    meaning = "the service stopped before answering; retry (elsewhere)"


class NotReadyError(ServiceError):
    status, code = 503, "not_ready"
    meaning = "the model is loading, or failed to (message says why)"


class ModelFailedError(ServiceError):
    status, code = 503, "model_failed"
    meaning = "`/healthz`: the model failed to load; restart the process"


class StorageQuotaError(ServiceError):
    status, code = 507, "storage_quota_exceeded"
    meaning = "job files would pass `FBIL_JOB_DISK_QUOTA_BYTES` or `FBIL_JOB_MIN_FREE_DISK_BYTES`"


# damaged job storage (issue 27): jobs answer these, /detect is unaffected
class JobStorageUnavailableError(ServiceError):
    status, code = 503, "job_storage_unavailable"
    meaning = (
        "the jobs database cannot be read or was removed (the message names the file and "
        "what to do); `/detect` still answers"
    )


class JobResultsDamagedError(ServiceError):
    status, code = 500, "job_results_damaged"
    meaning = "a job's stored results file is missing, cut short or altered: resubmit the job"


# live streams (/v1/streams)


class StreamURLInvalidError(ServiceError):
    status, code = 400, "stream_url_invalid"
    meaning = "a stream `url` that is no URL: no scheme or host, spaces or control characters"


class StreamURLLocalProtocolError(ServiceError):
    status, code = 400, "stream_url_local_protocol"
    meaning = (
        "a stream `url` naming a local FFmpeg protocol (`file:`, `concat:`, `subfile:`, "
        "`data:`, `pipe:`, a bare path...; `details.protocol`): never opened"
    )


class StreamURLSchemeError(ServiceError):
    status, code = 400, "stream_url_scheme_not_allowed"
    meaning = "a stream `url` scheme not in `FBIL_STREAM_ALLOWED_SCHEMES`"


class StreamURLHostError(ServiceError):
    status, code = 403, "stream_url_host_not_allowed"
    meaning = "a stream `url` host outside `FBIL_STREAM_ALLOWED_HOSTS` (empty: every host)"


class UnknownActionError(ServiceError):
    status, code = 400, "unknown_action"
    meaning = "a stream rule names an action the model does not have"


class StreamNotFoundError(ServiceError):
    status, code = 404, "stream_not_found"
    meaning = "no stream with this id for this API key (or it was deleted)"


class TooManyStreamsError(ServiceError):
    status, code = 429, "too_many_streams"
    meaning = "`FBIL_MAX_STREAMS` streams, or `FBIL_MAX_STREAMS_PER_KEY` for this key, run"


# errors of the video (raised by fbil.model.video, which knows no HTTP): their status and
# meaning, most specific first (the first matching class wins)
VIDEO_ERRORS: tuple[tuple[type[VideoError], int, str], ...] = (
    (VideoTooLargeError, 413, "the video's bytes, duration or frame size over its limit"),
    (
        DecodeBudgetError,
        413,
        "decoding needs over `FBIL_MAX_DECODED_PIXELS` or `FBIL_MAX_DECODE_S`",
    ),
    (NotAVideoError, 415, "the `video` part is no container FFmpeg reads"),
    (NoVideoStreamError, 415, "the container holds no video stream"),
    (UndecodableVideoError, 422, "no frame (or none near a keyframe) could be decoded"),
    (KeyframeOutOfRangeError, 422, "a keyframe time lies outside the segment"),
    (VideoError, 422, "another problem with the video"),
)

HTTP_ERROR_CODES: dict[int, str] = {
    404: NotFoundError.code,
    405: MethodNotAllowedError.code,
    413: PayloadTooLargeError.code,
}


@dataclass(frozen=True)
class ErrorCode:
    code: str
    status: int
    meaning: str


def _classes(cls: type[ServiceError]) -> list[type[ServiceError]]:
    return [cls, *(c for sub in cls.__subclasses__() for c in _classes(sub))]


def _error_codes() -> tuple[ErrorCode, ...]:
    """Every code the service answers with, from the error classes, by status."""
    codes = [ErrorCode(c.code, c.status, c.meaning) for c in _classes(ServiceError)]
    codes += [ErrorCode(cls.code, status, meaning) for cls, status, meaning in VIDEO_ERRORS]
    return tuple(sorted(codes, key=lambda e: e.status))


ERROR_CODES: tuple[ErrorCode, ...] = _error_codes()


def codes_with_status(status: int) -> list[str]:
    """The codes of :data:`ERROR_CODES` answered with HTTP ``status``."""
    return [e.code for e in ERROR_CODES if e.status == status]


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def video_error_status(exc: VideoError) -> int:
    return next(status for cls, status, _ in VIDEO_ERRORS if isinstance(exc, cls))


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    headers = dict(exc.headers)
    if exc.status == 503 and "Retry-After" not in headers:
        state = getattr(request.app.state, "service", None)
        headers["Retry-After"] = str(state.settings.retry_after_s if state else 1)
    return error_response(exc.status, exc.code, exc.message, exc.details, headers)


async def _video_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, VideoError)
    return error_response(video_error_status(exc), exc.code, str(exc))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
    return error_response(400, "invalid_request", "invalid request", {"errors": errors})


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    fallback = ServiceError.code if exc.status_code < 500 else InternalError.code
    code = HTTP_ERROR_CODES.get(exc.status_code, fallback)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # Starlette names only the first route of the path
        headers["Allow"] = ", ".join(allowed_methods(request))
    return error_response(exc.status_code, code, str(exc.detail), headers=headers)


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the request's path answers (asked of each route, with
    each method: one path may have several routes)."""
    routes = request.app.router.routes
    return [
        method
        for method in HTTP_METHODS
        if any(r.matches({**request.scope, "method": method})[0] == Match.FULL for r in routes)
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn domain exceptions into the one error shape."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(VideoError, _video_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
