"""Exceptions of the client: one class per HTTP status of the service's one error shape
(``{"error": {"code", "message", "details"}}``), all :class:`FBILError`."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "FBILConnectionError",
    "FBILError",
    "PayloadTooLargeError",
    "ServerError",
    "ServiceUnavailableError",
    "UnprocessableVideoError",
    "UnsupportedVideoError",
]

REQUEST_ID_HEADER = "x-request-id"


class FBILError(Exception):
    """The service answered with an error, or could not be reached.

    ``status`` is the HTTP status (``None`` when no answer came), ``code`` the service's
    machine-readable error code (``"bad_box"``, ``"overloaded"``, ...), ``request_id`` the id the
    service logged the request under, ``retry_after`` its ``Retry-After`` hint in seconds (503).
    """

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        if self.status is None:
            return self.message
        return f"HTTP {self.status} {self.code}: {self.message}"


class FBILConnectionError(FBILError):
    """No answer: the service is not listening, the connection broke or timed out."""


class BadRequestError(FBILError):
    """400: the form, the request document or its boxes are invalid (``bad_json``,
    ``invalid_request``, ``bad_box``, ...: the service's README lists every code)."""


class AuthenticationError(FBILError):
    """401: an API key is missing or wrong."""


class PayloadTooLargeError(FBILError):
    """413: the upload, the video, or the keyframe or box count exceeds the service's limits."""


class UnsupportedVideoError(FBILError):
    """415: not a multipart body, not a video, or no video stream."""


class UnprocessableVideoError(FBILError):
    """422: the video cannot be decoded, or a keyframe lies outside it."""


class ServiceUnavailableError(FBILError):
    """503: overloaded, still loading, or the model failed; see ``retry_after``."""


class ServerError(FBILError):
    """500 or another 5xx: logged by the service under ``request_id``."""


BY_STATUS: dict[int, type[FBILError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    413: PayloadTooLargeError,
    415: UnsupportedVideoError,
    422: UnprocessableVideoError,
    503: ServiceUnavailableError,
}


def error_from_response(response: httpx.Response) -> FBILError:
    """The exception for an error answer; bodies not in the service's shape (a proxy's page)
    keep their first 200 characters as the message."""
    status = response.status_code
    cls = BY_STATUS.get(status, ServerError if status >= 500 else FBILError)
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
        details = error.get("details") or {}
    except (ValueError, KeyError, TypeError):
        code, message, details = f"http_{status}", response.text[:200], {}
    request_id = response.headers.get(REQUEST_ID_HEADER) or details.get("request_id")
    return cls(status, code, message, details, request_id, _seconds(response.headers))


def _seconds(headers: httpx.Headers) -> float | None:
    try:
        return float(headers["retry-after"])
    except (KeyError, ValueError):
        return None


def connection_error(url: str, exc: httpx.TransportError) -> FBILConnectionError:
    code = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection_error"
    return FBILConnectionError(None, code, f"cannot reach {url}: {exc or type(exc).__name__}")
