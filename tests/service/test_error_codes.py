"""One list of error codes (service/errors.py ERROR_CODES): README and OpenAPI say the same."""

from __future__ import annotations

import re
from pathlib import Path

from fbil.model.video import VideoError
from fbil.service.app import create_app
from fbil.service.errors import ERROR_CODES, HTTP_ERROR_CODES, ServiceError, codes_with_status
from fbil.service.settings import Settings
from tests.support.serving import TinyModel

README = Path(__file__).parents[2] / "README.md"


def _subclasses(cls: type) -> list[type]:
    return [cls, *(s for sub in cls.__subclasses__() for s in _subclasses(sub))]


def test_the_table_lists_exactly_the_codes_the_service_raises():
    raised = {c.code for c in _subclasses(ServiceError)} | {c.code for c in _subclasses(VideoError)}
    raised |= set(HTTP_ERROR_CODES.values()) | {"bad_request", "internal_error"}
    table = [e.code for e in ERROR_CODES]
    assert len(table) == len(set(table))
    assert set(table) == raised
    statuses = {e.code: e.status for e in ERROR_CODES}
    assert all(statuses[c.code] == c.status for c in _subclasses(ServiceError))


def test_readme_lists_every_code_with_its_status_and_meaning():
    section = README.read_text().split("## Errors", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \| (.*) \|$", section, flags=re.MULTILINE)
    assert rows == [(str(e.status), e.code, e.meaning) for e in ERROR_CODES]


def test_openapi_lists_every_code(tiny_model: TinyModel):
    doc = create_app(Settings(model_path=tiny_model.path)).openapi()
    code = doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"]
    assert code["enum"] == [e.code for e in ERROR_CODES]
    responses = doc["paths"]["/detect"]["post"]["responses"]
    for status in ("400", "408", "413", "415", "422", "503"):
        named = re.findall(r"`([a-z_]+)`", responses[status]["description"])
        assert named == codes_with_status(int(status))
