"""One error shape for every failure: ``{"error": {"code", "message", "details"}}``.

Domain exceptions map to 4xx/503 here (:class:`ServiceError` carries its status, decoding's
:class:`~fbil.model.video.VideoError` is mapped by :data:`VIDEO_ERROR_STATUS`); anything
unexpected becomes a bare 500 (logged with the request id by :mod:`fbil.service.middleware`,
never shown to the caller).
"""

from __future__ import annotations

import logging
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


class UnauthorizedError(ServiceError):
    status, code = 401, "unauthorized"


class PayloadTooLargeError(ServiceError):
    status, code = 413, "payload_too_large"


class OverloadedError(ServiceError):
    status, code = 503, "overloaded"


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
    return error_response(400, "bad_request", "invalid request", {"errors": errors})


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
    code = codes.get(exc.status_code, "bad_request" if exc.status_code < 500 else "error")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn domain exceptions into the one error shape."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(VideoError, _video_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
