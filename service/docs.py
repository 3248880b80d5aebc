"""The API's documents: ``/openapi.json``, Swagger UI at ``/docs`` and ReDoc at ``/redoc``.

The pages load their scripts from this server (the assets fastapi-offline ships), never from a
CDN, so they work on air-gapped hosts. With API keys on, the three routes need a key unless
``FBIL_PUBLIC_DOCS`` opens them; the assets are the public Swagger UI and ReDoc bundles.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from fbil.service.api.deps import require_api_key_unless
from fbil.service.jobs.schemas import JobRequest
from fbil.service.schemas import DetectRequest
from fbil.service.streams.schemas import StreamRequest

OPENAPI_URL = "/openapi.json"
ASSETS_URL = "/docs-assets"
# fastapi-offline's package data: swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js
ASSETS = resources.files("fastapi_offline") / "static"

router = APIRouter(
    include_in_schema=False, dependencies=[Depends(require_api_key_unless("public_docs"))]
)


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the ``DetectRequest``, ``JobRequest`` and ``StreamRequest``
    schemas, which ``/detect`` and ``POST /v1/jobs`` take as a JSON form field (their
    ``request`` part refers to them) and ``POST /v1/streams`` as its body."""
    document = FastAPI.openapi(app)  # cached by FastAPI
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    # the JSON documents the routes read themselves (form fields, /v1/streams' body)
    for model in (DetectRequest, JobRequest, StreamRequest):
        if model.__name__ not in schemas:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
    return document


def _root(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


@router.get(OPENAPI_URL)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_swagger_ui_html(
        openapi_url=root + OPENAPI_URL,
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
    )


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_redoc_html(
        openapi_url=root + OPENAPI_URL,
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        with_google_fonts=False,
    )


def install_docs(app: FastAPI) -> None:
    """Serve the documents and their assets (create the app with ``openapi_url=None``)."""
    app.openapi = functools.partial(openapi_document, app)  # type: ignore[method-assign]
    app.mount(ASSETS_URL, StaticFiles(directory=str(ASSETS)), name="docs-assets")
    app.include_router(router)
