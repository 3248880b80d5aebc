"""HTTP routes of live streams: ``/v1/streams`` (create, list), ``/v1/streams/{id}`` (state,
stop and delete), ``/v1/streams/{id}/events`` (Server-Sent Events) and ``/v1/streams/{id}/ws``
(the same events as WebSocket messages).

Same keys and error shape as ``/detect``. With API keys on, a stream belongs to the key that
created it: any other key gets 404 ``stream_not_found``, as for an id that does not exist.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials

from fbil.service.api.deps import Owner, caller_owner, get_state, ready_engine
from fbil.service.api.openapi import error_responses
from fbil.service.errors import RequestJSONTooLargeError, ServiceError
from fbil.service.form import parse_request_json
from fbil.service.streams.events import last_event_id
from fbil.service.streams.registry import StreamRegistry
from fbil.service.streams.schemas import StreamList, StreamOut, StreamRequest

router = APIRouter(prefix="/v1/streams", tags=["streams"])

STREAM_ID: dict[str, Any] = {
    "parameters": [
        {"name": "stream_id", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
}
# the body is read by the route (strict JSON, the error codes of /detect's request part)
STREAM_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/StreamRequest"}}},
    }
}


def registry(request: Request) -> StreamRegistry:
    return request.app.state.streams


@router.post(
    "",
    status_code=201,
    response_model=StreamOut,
    responses=error_responses(400, 401, 403, 413, 429, 503),
    openapi_extra=STREAM_BODY,
)
async def create_stream(request: Request, response: Response, owner: Owner) -> StreamOut:
    """Watch a live source (JSON, see **StreamRequest**): answers 201 at once with the
    stream's id (`Location`); its keyframes and rule events come from
    `GET /v1/streams/{id}/events` as Server-Sent Events."""
    state = get_state(request)
    ready_engine(state)
    raw = await request.body()
    if len(raw) > state.settings.max_request_json_bytes:
        raise RequestJSONTooLargeError(
            f"the request is over {state.settings.max_request_json_bytes} bytes"
        )
    body = parse_request_json(raw, StreamRequest)
    stream = await registry(request).create(owner, body)
    response.headers["Location"] = f"/v1/streams/{stream.id}"
    return stream.out()


@router.get("", response_model=StreamList, responses=error_responses(401))
async def list_streams(request: Request, owner: Owner) -> StreamList:
    """The caller's streams, newest first (stopped and failed ones for a while)."""
    return StreamList(streams=[s.out() for s in registry(request).list(owner)])


@router.get(
    "/{stream_id}",
    response_model=StreamOut,
    responses=error_responses(401, 404),
    openapi_extra=STREAM_ID,
)
async def get_stream(request: Request, owner: Owner) -> StreamOut:
    """A stream's state, lag, keyframes answered and dropped, reconnects and last error."""
    return registry(request).get(request.path_params["stream_id"], owner).out()


@router.delete(
    "/{stream_id}",
    response_model=StreamOut,
    responses=error_responses(401, 404),
    openapi_extra=STREAM_ID,
)
async def delete_stream(request: Request, owner: Owner) -> StreamOut:
    """Stop the stream, close its source and forget it (then 404)."""
    stream = await registry(request).delete(request.path_params["stream_id"], owner)
    return stream.out()


@router.get(
    "/{stream_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-Sent Events: `keyframe` (a keyframe of /detect with "
            "`stream_time` and `wall_time`), `rule` (`action_started` / `action_ended`), "
            "`state`; `id:` lines for `Last-Event-ID`",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **error_responses(401, 404),
    },
    openapi_extra=STREAM_ID,
)
async def stream_events(request: Request, owner: Owner) -> StreamingResponse:
    """The stream's events as they happen; with `Last-Event-ID` (or `?last_event_id=`) from
    the one after it, while the stream still holds it. Ends when the stream stops."""
    stream = registry(request).get(request.path_params["stream_id"], owner)
    header = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    return StreamingResponse(
        stream.events.follow(last_event_id(header)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# WebSocket close codes: 4000 + the HTTP status the same request would get (reason: its code)
WS_CLOSE_BASE = 4000


@router.websocket("/{stream_id}/ws")
async def stream_socket(websocket: WebSocket) -> None:
    """The events of ``/events`` as WebSocket text messages ``{"id", "event", "data"}`` (the
    key as for every route; ``?last_event_id=`` to resume). Refused at once with close code
    4401 (reason ``unauthorized``) or 4404 (``stream_not_found``). Closed when the stream
    ends."""
    auth = websocket.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    bearer = (
        HTTPAuthorizationCredentials(scheme=scheme, credentials=token.strip())
        if scheme.lower() == "bearer" and token.strip()
        else None
    )
    try:
        owner = await caller_owner(websocket, bearer, websocket.headers.get("x-api-key"))  # type: ignore[arg-type]
        stream = registry(websocket).get(websocket.path_params["stream_id"], owner)  # type: ignore[arg-type]
    except ServiceError as e:
        await websocket.accept()  # (closed before, the client would see a bare HTTP 403)
        await websocket.close(code=WS_CLOSE_BASE + e.status, reason=e.code)
        return
    await websocket.accept()
    try:
        async for event in stream.events.watch(
            last_event_id(websocket.query_params.get("last_event_id"))
        ):
            if event is not None:  # (a keep-alive: the protocol pings by itself)
                await websocket.send_json(event.message())
        await websocket.close()
    except WebSocketDisconnect:
        return
