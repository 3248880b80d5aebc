"""Request dependencies every route module shares: the service state, API keys (and the owner
a key stands for), readiness and admission."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from fbil.service.engine import Engine
from fbil.service.errors import NotReadyError, OverloadedError, UnauthorizedError
from fbil.service.state import ServiceState

# public bodies never carry the path or the exception: both are in the log
LOAD_FAILED = "the model failed to load (the service log says why)"


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


# the two ways to send a key; as dependencies they put the security schemes into the OpenAPI
BEARER = HTTPBearer(
    scheme_name="Bearer",
    auto_error=False,
    description="`Authorization: Bearer <key>` (FBIL_API_KEYS)",
)
API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key",
    scheme_name="X-API-Key",
    auto_error=False,
    description="`X-API-Key: <key>` (FBIL_API_KEYS)",
)
BearerKey = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]
HeaderKey = Annotated[str | None, Security(API_KEY_HEADER)]


def _presented(request: Request, bearer: BearerKey, header: HeaderKey) -> str | None:
    """The key the request presents: an ``Authorization`` header, when sent, is the
    credential (another scheme or an empty token presents ``""``), else ``X-API-Key``."""
    if "authorization" in request.headers:
        return bearer.credentials.strip() if bearer else ""
    return header


async def require_api_key(request: Request, bearer: BearerKey, header: HeaderKey) -> None:
    """``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` when API keys are configured.

    An ``Authorization`` header, when sent, is the credential: one that is not ``Bearer`` with a
    key (another scheme, an empty token) is refused even next to a valid ``X-API-Key``.
    Compared in constant time with every configured key (no early exit).
    """
    keys = get_state(request).settings.api_key_values()
    if not keys:
        return
    presented = _presented(request, bearer, header)
    if presented is None:
        raise UnauthorizedError("an API key is required", headers={"WWW-Authenticate": "Bearer"})
    candidate = presented.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key)
    if not matched:
        raise UnauthorizedError("invalid API key", headers={"WWW-Authenticate": "Bearer"})


def require_api_key_unless(setting: Literal["public_metrics", "public_docs"]) -> Callable:
    """:func:`require_api_key`, skipped when the boolean setting ``setting`` opens the route."""

    async def dependency(request: Request, bearer: BearerKey, header: HeaderKey) -> None:
        if not getattr(get_state(request).settings, setting):
            await require_api_key(request, bearer, header)

    return dependency


def owner_of(api_key: str | None) -> str:
    """The owner recorded for a key: its SHA-256 (``""`` with API keys off)."""
    return hashlib.sha256(api_key.encode()).hexdigest() if api_key else ""


async def caller_owner(request: Request, bearer: BearerKey, header: HeaderKey) -> str:
    """The caller's owner tag (after :func:`require_api_key`): its key's digest. With API keys
    on, what a key creates (jobs, streams) belongs to it: any other key gets 404."""
    await require_api_key(request, bearer, header)
    if not get_state(request).settings.api_key_values():
        return ""
    return owner_of(_presented(request, bearer, header))


Owner = Annotated[str, Depends(caller_owner)]


def retry_after(state: ServiceState) -> dict[str, str]:
    return {"Retry-After": str(state.settings.retry_after_s)}


def not_ready_message(state: ServiceState) -> str:
    return LOAD_FAILED if state.load_error else "the model is loading"


def ready_engine(state: ServiceState) -> Engine:
    """The engine once the model is loaded and warmed up (else 503 ``not_ready``)."""
    if not state.ready or state.engine is None:
        raise NotReadyError(not_ready_message(state), headers=retry_after(state))
    return state.engine


def admit(state: ServiceState) -> None:
    """503 ``overloaded`` when ``FBIL_MAX_INFLIGHT_REQUESTS`` requests are in flight."""
    if state.inflight >= state.settings.max_inflight_requests:
        state.metrics.rejected.labels("inflight").inc()
        raise OverloadedError(
            f"{state.inflight} requests in flight, the limit is "
            f"{state.settings.max_inflight_requests}",
            headers=retry_after(state),
        )
