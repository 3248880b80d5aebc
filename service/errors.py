"""One error shape for every failure: ``{"error": {"code", "message", "details"}}``.

Domain exceptions map to 4xx/503 here (:class:`ServiceError` carries its status, decoding's
:class:`~fbil.model.video.VideoError` is mapped by :data:`VIDEO_ERROR_STATUS`); anything
unexpected becomes a bare 500 (logged with the request id by :mod:`fbil.service.middleware`,
never shown to the caller).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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


@dataclass(frozen=True)
class ErrorCode:
    code: str
    status: int
    meaning: str


# every error code the service answers with: README's "Errors" table and the OpenAPI document
# are checked against this (tests/service/test_error_codes.py)
ERROR_CODES: tuple[ErrorCode, ...] = (
    ErrorCode("bad_request", 400, "a malformed HTTP request not covered by a code below"),
    ErrorCode("bad_multipart", 400, "the multipart body is broken (no boundary, truncated)"),
    ErrorCode("missing_part", 400, "the form lacks its `video` or `request` part"),
    ErrorCode("unexpected_part", 400, "a form part other than `video` and `request`, or one twice"),
    ErrorCode("bad_json", 400, "the `request` part is not UTF-8 JSON"),
    ErrorCode("invalid_request", 400, "the JSON does not fit DetectRequest (`details.errors`)"),
    ErrorCode("bad_box", 400, "a box is not 4 finite numbers, is empty or lies outside the frame"),
    ErrorCode("boxes_required", 400, "a keyframe without `boxes` while `FBIL_DETECTOR=none`"),
    ErrorCode("unauthorized", 401, "API key missing or wrong (when `FBIL_API_KEYS` is set)"),
    ErrorCode("not_found", 404, "no such route"),
    ErrorCode("job_not_found", 404, "no job with this id for this API key (or it was deleted)"),
    ErrorCode(
        "job_video_unavailable",
        404,
        "the job has no annotated video: `video` not in its `outputs`, or the job has not "
        "succeeded yet",
    ),
    ErrorCode("method_not_allowed", 405, "the route exists, not with this method"),
    ErrorCode("header_timeout", 408, "the headers took over `FBIL_HEADER_TIMEOUT_S`; closed"),
    ErrorCode("upload_idle_timeout", 408, "the body paused over `FBIL_UPLOAD_IDLE_TIMEOUT_S`"),
    ErrorCode("upload_too_slow", 408, "the body arrived below `FBIL_MIN_UPLOAD_BYTES_PER_S`"),
    ErrorCode("request_timeout", 408, "headers and body took over `FBIL_REQUEST_TIMEOUT_S`"),
    ErrorCode("payload_too_large", 413, "the request body is over `FBIL_MAX_UPLOAD_BYTES`"),
    ErrorCode(
        "request_json_too_large", 413, "the `request` part is over `FBIL_MAX_REQUEST_JSON_BYTES`"
    ),
    ErrorCode("too_many_keyframes", 413, "more keyframes than `FBIL_MAX_KEYFRAMES`"),
    ErrorCode("too_many_boxes", 413, "more boxes on a keyframe than `FBIL_MAX_BOXES_PER_KEYFRAME`"),
    ErrorCode("video_too_large", 413, "the video's bytes, duration or frame size over its limit"),
    ErrorCode(
        "decode_budget_exceeded",
        413,
        "decoding needs over `FBIL_MAX_DECODED_PIXELS` or `FBIL_MAX_DECODE_S`",
    ),
    ErrorCode("not_multipart", 415, "the body is not `multipart/form-data`"),
    ErrorCode("not_a_video", 415, "the `video` part is no container FFmpeg reads"),
    ErrorCode("no_video_stream", 415, "the container holds no video stream"),
    ErrorCode(
        "no_person_detector", 422, "a job without `keyframes` needs a person detector; none runs"
    ),
    ErrorCode("undecodable_video", 422, "no frame (or none near a keyframe) could be decoded"),
    ErrorCode("keyframe_out_of_range", 422, "a keyframe time lies outside the segment"),
    ErrorCode("video_error", 422, "another problem with the video"),
    ErrorCode(
        "outside_engine_profile",
        422,
        "frames wider than `FBIL_TRT_MAX_ASPECT` or more boxes than the TensorRT engine covers",
    ),
    ErrorCode("headers_too_large", 431, "the request headers are over `FBIL_MAX_HEADER_BYTES`"),
    ErrorCode("client_closed_request", 499, "the caller left first (logged, never sent)"),
    ErrorCode("internal_error", 500, "unexpected: logged with the request id, no internals shown"),
    ErrorCode("overloaded", 503, "queue, in-flight or pending-upload limit reached; retry later"),
    ErrorCode("shutting_down", 503, "the service stopped before answering; retry (elsewhere)"),
    ErrorCode("not_ready", 503, "the model is loading, or failed to (message says why)"),
    ErrorCode("model_failed", 503, "`/healthz`: the model failed to load; restart the process"),
    ErrorCode(
        "storage_quota_exceeded",
        507,
        "job files would pass `FBIL_JOB_DISK_QUOTA_BYTES` or `FBIL_JOB_MIN_FREE_DISK_BYTES`",
    ),
)


def codes_with_status(status: int) -> list[str]:
    """The codes of :data:`ERROR_CODES` answered with HTTP ``status``."""
    return [e.code for e in ERROR_CODES if e.status == status]


# most specific first: the first matching class wins
VIDEO_ERROR_STATUS: tuple[tuple[type[VideoError], int], ...] = (
    (VideoTooLargeError, 413),
    (DecodeBudgetError, 413),
    (NotAVideoError, 415),
    (NoVideoStreamError, 415),
    (UndecodableVideoError, 422),
    (KeyframeOutOfRangeError, 422),
    (VideoError, 422),
)


class ServiceError(Exception):
    """An error the caller is told about: HTTP ``status``, machine-readable ``code``."""

    status: int = 400
    code: str = "bad_request"

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


class BadRequestError(ServiceError):
    status, code = 400, "bad_request"


class BadMultipartError(ServiceError):
    status, code = 400, "bad_multipart"


class MissingPartError(ServiceError):
    status, code = 400, "missing_part"


class UnexpectedPartError(ServiceError):
    status, code = 400, "unexpected_part"


class BadJSONError(ServiceError):
    status, code = 400, "bad_json"


class InvalidRequestError(ServiceError):
    status, code = 400, "invalid_request"


class BoxesRequiredError(ServiceError):
    status, code = 400, "boxes_required"


class UnauthorizedError(ServiceError):
    status, code = 401, "unauthorized"


class PayloadTooLargeError(ServiceError):
    status, code = 413, "payload_too_large"


class RequestTimeoutError(ServiceError):
    """The request did not arrive in time (the connection is closed after the answer)."""

    status, code = 408, "request_timeout"


class UploadIdleTimeoutError(RequestTimeoutError):
    code = "upload_idle_timeout"


class UploadTooSlowError(RequestTimeoutError):
    code = "upload_too_slow"


class HeaderTimeoutError(RequestTimeoutError):
    """Sent by the HTTP protocol (:mod:`fbil.service.http_limits`), not raised in the app."""

    code = "header_timeout"


class HeadersTooLargeError(ServiceError):
    """Sent by the HTTP protocol (:mod:`fbil.service.http_limits`), not raised in the app."""

    status, code = 431, "headers_too_large"


class RequestJSONTooLargeError(ServiceError):
    status, code = 413, "request_json_too_large"


class TooManyKeyframesError(ServiceError):
    status, code = 413, "too_many_keyframes"


class TooManyBoxesError(ServiceError):
    status, code = 413, "too_many_boxes"


class JobNotFoundError(ServiceError):
    status, code = 404, "job_not_found"


class JobVideoUnavailableError(ServiceError):
    status, code = 404, "job_video_unavailable"


class NoPersonDetectorError(ServiceError):
    status, code = 422, "no_person_detector"


class OutsideEngineProfileError(ServiceError):
    """The clip's size or box count lies outside what the runtime's engine was built for."""

    status, code = 422, "outside_engine_profile"


class StorageQuotaError(ServiceError):
    status, code = 507, "storage_quota_exceeded"


class NotMultipartError(ServiceError):
    status, code = 415, "not_multipart"


class OverloadedError(ServiceError):
    status, code = 503, "overloaded"


class ShuttingDownError(ServiceError):
    """Sent by :class:`~fbil.service.middleware.RequestContextMiddleware` to requests still
    running when the graceful-shutdown time is over."""

    status, code = 503, "shutting_down"


class NotReadyError(ServiceError):
    status, code = 503, "not_ready"


class ModelFailedError(ServiceError):
    status, code = 503, "model_failed"


class ClientDisconnectedError(ServiceError):
    """The caller went away; nobody reads the answer (logged and counted as 499)."""

    status, code = 499, "client_closed_request"


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
    return next(status for cls, status in VIDEO_ERROR_STATUS if isinstance(exc, cls))


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


HTTP_ERROR_CODES: dict[int, str] = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    fallback = "bad_request" if exc.status_code < 500 else "internal_error"
    code = HTTP_ERROR_CODES.get(exc.status_code, fallback)
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn domain exceptions into the one error shape."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(VideoError, _video_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
