"""The API's documents: offline Swagger UI and ReDoc, and what the OpenAPI document publishes."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from tests.support.serving import TinyModel, serve

pytestmark = pytest.mark.anyio

# every route and every status it answers (besides the bare 500 of a bug)
RESPONSES = {
    ("/healthz", "get"): {"200", "503"},
    ("/readyz", "get"): {"200", "503"},
    ("/metrics", "get"): {"200", "401"},
    ("/v1/model", "get"): {"200", "401", "503"},
    ("/detect", "post"): {"200", "400", "401", "408", "413", "415", "422", "503"},
    ("/v1/jobs", "post"): {"202", "400", "401", "408", "413", "415", "422", "503", "507"},
    ("/v1/jobs", "get"): {"200", "401", "503"},  # 503: job storage unavailable
    ("/v1/jobs/{job_id}", "get"): {"200", "401", "404", "503"},
    ("/v1/jobs/{job_id}", "delete"): {"200", "401", "404", "503"},
    ("/v1/jobs/{job_id}/results", "get"): {"200", "401", "404", "500", "503"},  # 500: damaged
    ("/v1/jobs/{job_id}/results.csv", "get"): {"200", "401", "404", "500", "503"},
    ("/v1/jobs/{job_id}/video", "get"): {"200", "401", "404", "503"},
    ("/v1/streams", "post"): {"201", "400", "401", "403", "413", "429", "503"},
    ("/v1/streams", "get"): {"200", "401"},
    ("/v1/streams/{stream_id}", "get"): {"200", "401", "404"},
    ("/v1/streams/{stream_id}", "delete"): {"200", "401", "404"},
    ("/v1/streams/{stream_id}/events", "get"): {"200", "401", "404"},
}
PROTECTED = {("/metrics", "get"), ("/v1/model", "get"), ("/detect", "post")} | {
    key for key in RESPONSES if key[0].startswith(("/v1/jobs", "/v1/streams"))
}


class _Urls(HTMLParser):
    """The ``src``/``href`` of a page and the URLs its inline scripts name."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]
        self._script = tag == "script"

    def handle_data(self, data: str) -> None:
        if self._script:
            self.urls += re.findall(r"(?:url|spec-url)\s*:\s*['\"]([^'\"]+)['\"]", data)
            self.urls += re.findall(r"https?://[^\s'\"]+", data)


def page_urls(html: str) -> list[str]:
    parser = _Urls()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_everything_from_the_service(tiny_model: TinyModel, page: str):
    async with serve(tiny_model.path) as s:
        html = (await s.client.get(page)).text
        urls = page_urls(html) + re.findall(r'spec-url="([^"]+)"', html)
        fetched = {url: await s.client.get(url) for url in urls}
    assert "cdn" not in html and "googleapis" not in html
    scripts = [u for u in urls if u.endswith(".js")]
    assert scripts and all(u.startswith("/docs-assets/") for u in scripts), urls
    assert all(u.startswith("/") for u in urls), urls  # nothing from another host
    assert "/openapi.json" in urls
    for url, r in fetched.items():
        assert r.status_code == 200, url
    for url in scripts:
        assert fetched[url].headers["content-type"].startswith(("text/javascript", "application/"))
        assert len(fetched[url].content) > 100_000  # the real bundle, not a stub
    if page == "/docs":
        css = [u for u in urls if u.endswith(".css")]
        assert css and fetched[css[0]].headers["content-type"].startswith("text/css")


async def test_openapi_publishes_schemas_security_and_every_response(tiny_model: TinyModel):
    async with serve(tiny_model.path) as s:
        doc = (await s.client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    assert set(schemas["DetectRequest"]["properties"]) == {
        "keyframes",
        "keyframe_interval",
        "person_threshold",
        "box_format",
        "top_k",
        "min_score",
        "all_scores",
    }
    keyframes = schemas["DetectRequest"]["properties"]["keyframes"]["anyOf"]  # or omitted
    assert keyframes[0]["items"] == {"$ref": "#/components/schemas/KeyframeIn"}
    assert {"KeyframeIn", "BoxIn"} <= schemas.keys()
    request = doc["paths"]["/detect"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert (
        request["schema"]["properties"]["request"]["$ref"] == "#/components/schemas/DetectRequest"
    )
    assert request["encoding"] == {"request": {"contentType": "application/json"}}

    assert set(doc["components"]["securitySchemes"]) == {"Bearer", "X-API-Key"}
    bearer = doc["components"]["securitySchemes"]["Bearer"]
    header = doc["components"]["securitySchemes"]["X-API-Key"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    assert (header["type"], header["in"], header["name"]) == ("apiKey", "header", "X-API-Key")

    operations = {(p, m): op for p, ops in doc["paths"].items() for m, op in ops.items()}
    assert set(operations) == set(RESPONSES)  # the documents themselves are not listed
    for key, op in operations.items():
        assert set(op["responses"]) == RESPONSES[key], key
        for status, response in op["responses"].items():
            if status not in ("200", "201", "202"):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, key
        security = op.get("security")
        if key in PROTECTED:
            assert security == [{"Bearer": []}, {"X-API-Key": []}], key
        else:
            assert security is None, key
    metrics_200 = operations[("/metrics", "get")]["responses"]["200"]
    assert set(metrics_200["content"]) == {"text/plain"}
