"""Issue 27: the OpenAPI document does not lie. Every ``$ref`` resolves (before:
``POST /v1/jobs`` referred to an undefined ``JobRequest``), and a 405 names in ``Allow``
every method the path answers, as documented (before: only the first route's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.serving import TinyModel, assert_error, serve

pytestmark = pytest.mark.anyio

KEY = "k" * 32


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref  # the document refers only to itself
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref}: no {part!r}"
        node = node[part]
    return node


@pytest.mark.parametrize("keys", [None, KEY], ids=["keys-off", "keys-on"])
async def test_every_ref_resolves_and_405_allows_every_documented_method(
    tiny_model: TinyModel, tmp_path: Path, keys: str | None
):
    headers = {"Authorization": f"Bearer {KEY}"} if keys else {}
    async with serve(tiny_model.path, data_dir=tmp_path, api_keys=keys) as s:
        document = (await s.client.get("/openapi.json", headers=headers)).json()
        refs = _refs(document)
        assert "#/components/schemas/JobRequest" in refs
        for ref in refs:
            assert isinstance(_resolve(document, ref), dict)
        job = document["components"]["schemas"]["JobRequest"]
        assert {"outputs", "video_id", "keyframe_interval"} <= job["properties"].keys()
        for path, operations in document["paths"].items():
            url = path.replace("{job_id}", "some-job")
            documented = {m.upper() for m in operations}
            for method in ("OPTIONS", "PUT", "PATCH"):
                if method in documented:
                    continue
                r = await s.client.request(method, url, headers=headers)
                assert_error(r, 405, "method_not_allowed")
                allowed = {m.strip() for m in r.headers["allow"].split(",")}
                assert allowed == documented, (path, method, allowed)
