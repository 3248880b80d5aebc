"""OpenAPI pieces the routes share: the error responses of a route (the one error shape, each
status's codes named) and the body of a form with a video and a JSON ``request``."""

from __future__ import annotations

from typing import Any

from fbil.service.errors import codes_with_status
from fbil.service.schemas import ErrorResponse


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI error responses: the one error shape, the codes of each status named."""
    return {
        status: {
            "model": ErrorResponse,
            "description": "error codes: " + ", ".join(f"`{c}`" for c in codes_with_status(status)),
        }
        for status in statuses
    }


def multipart_body(video: str, schema: str, example: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` of a form with a ``video`` file and a ``request`` JSON part
    (``schema``: the name of the request's model in the document's components)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["video", "request"],
                        "properties": {
                            "video": {"type": "string", "format": "binary", "description": video},
                            "request": {
                                "$ref": f"#/components/schemas/{schema}",
                                "description": "the request, a JSON document",
                                "example": example,
                            },
                        },
                    },
                    "encoding": {"request": {"contentType": "application/json"}},
                }
            },
        }
    }
