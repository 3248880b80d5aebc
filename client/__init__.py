"""``fbil.client``: the Python client of ``fbil-serve``.

Needs only httpx (no torch, no PyAV, not the service)::

    from fbil.client import Box, Client, Keyframe

    with Client("http://127.0.0.1:8000", api_key="KEY") as client:
        result = client.detect("clip.mp4", [Keyframe(2.0, [Box((107, 108, 202, 166), "a")])])
    for actor in result.keyframes[0].actors:
        print(actor.id, [(a.name, round(a.score, 2)) for a in actor.actions])

:func:`fbil.client.local.local_service` runs a private service on loopback;
``fbil-demo`` (:mod:`fbil.client.demo`) draws the detections onto the video.
"""

from fbil.client.client import DEFAULT_TIMEOUT_S, Client, StreamEvent, VideoInput
from fbil.client.errors import (
    AuthenticationError,
    BadRequestError,
    FBILConnectionError,
    FBILError,
    PayloadTooLargeError,
    ServerError,
    ServiceUnavailableError,
    UnprocessableVideoError,
    UnsupportedVideoError,
)
from fbil.client.schemas import (
    DETECT_FIELDS,
    Action,
    Actor,
    Box,
    BoxFormat,
    DetectResult,
    Keyframe,
    KeyframeResult,
    Label,
    ModelInfo,
    ModelRef,
    Timing,
    VideoMeta,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DETECT_FIELDS",
    "Action",
    "Actor",
    "AuthenticationError",
    "BadRequestError",
    "Box",
    "BoxFormat",
    "Client",
    "DetectResult",
    "FBILConnectionError",
    "FBILError",
    "Keyframe",
    "KeyframeResult",
    "Label",
    "ModelInfo",
    "ModelRef",
    "PayloadTooLargeError",
    "ServerError",
    "ServiceUnavailableError",
    "StreamEvent",
    "Timing",
    "UnprocessableVideoError",
    "UnsupportedVideoError",
    "VideoInput",
    "VideoMeta",
]
