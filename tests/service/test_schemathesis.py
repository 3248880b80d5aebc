"""schemathesis against the OpenAPI document: generated requests to every route of a served tiny
model (in-process ASGI, the model loaded and warm, API keys on and off) answer no 5xx, only
documented statuses and content types, bodies that conform to their schemas, ``Allow`` on any
405, and (keys on) 401 without the key. Loading the document resolves every reference (each
405's ``Allow`` against every undocumented method: test_openapi_integrity.py)."""

from __future__ import annotations

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks

from fbil.service.app import create_app
from fbil.service.settings import Settings
from tests.support.serving import TinyModel

KEY = "schemathesis-key-0123456789"
# a bound on the run: examples per operation and mode, each request answered in milliseconds
EXAMPLES = 25
POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
# every operation, with the modes it can be fuzzed in (only /detect takes input to get wrong)
RUNS = [
    ("/healthz", "GET", POSITIVE),
    ("/readyz", "GET", POSITIVE),
    ("/metrics", "GET", POSITIVE),
    ("/v1/model", "GET", POSITIVE),
    ("/detect", "POST", POSITIVE),
    ("/detect", "POST", NEGATIVE),
    ("/v1/jobs", "POST", POSITIVE),
    ("/v1/jobs", "POST", NEGATIVE),
    ("/v1/jobs", "GET", POSITIVE),
    ("/v1/jobs/{job_id}", "GET", POSITIVE),
    ("/v1/jobs/{job_id}", "DELETE", POSITIVE),
    ("/v1/jobs/{job_id}/results", "GET", POSITIVE),
    ("/v1/jobs/{job_id}/results.csv", "GET", POSITIVE),
    ("/v1/jobs/{job_id}/video", "GET", POSITIVE),
    # no stream host is allowed here (FBIL_STREAM_ALLOWED_HOSTS empty): every URL is refused
    ("/v1/streams", "POST", POSITIVE),
    ("/v1/streams", "POST", NEGATIVE),
    ("/v1/streams", "GET", POSITIVE),
    ("/v1/streams/{stream_id}", "GET", POSITIVE),
    ("/v1/streams/{stream_id}", "DELETE", POSITIVE),
    ("/v1/streams/{stream_id}/events", "GET", POSITIVE),
]
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.allow_header_conformance,
    checks.unsupported_method,
]


@pytest.fixture(params=[True, False], ids=["keys-on", "keys-off"])
def api_schema(
    tiny_model: TinyModel, tmp_path, request: pytest.FixtureRequest
) -> schemathesis.BaseSchema:
    """The document of a served tiny model, warmed up. Loading the document starts the app's
    lifespan; schemathesis' pytest plugin ends it when the test ends."""
    keys = request.param
    settings_ = Settings(
        model_path=tiny_model.path,
        api_keys=KEY if keys else None,
        max_video_bytes=1 << 20,
        data_dir=tmp_path,
    )
    app = create_app(settings_)
    if not keys:
        return _warm(schemathesis.openapi.from_asgi("/openapi.json", app), app)
    # both security schemes carry the key: generated requests get through, and ignored_auth
    # checks each one without a key and with a wrong one
    config = schemathesis.Config.from_dict(
        {"auth": {"openapi": {"Bearer": {"bearer": KEY}, "X-API-Key": {"api_key": KEY}}}}
    )
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", app, config=config, headers={"X-API-Key": KEY}
    )
    schema.keys_on = True  # type: ignore[attr-defined]
    return _warm(schema, app)


def _warm(schema: schemathesis.BaseSchema, app) -> schemathesis.BaseSchema:
    deadline = time.monotonic() + 60
    while not app.state.service.ready:
        assert app.state.service.load_error is None and time.monotonic() < deadline
        time.sleep(0.02)
    return schema


def test_every_operation_is_fuzzed(api_schema: schemathesis.BaseSchema) -> None:
    operations = {(r.ok().path, r.ok().method.upper()) for r in api_schema.get_all_operations()}
    assert operations == {(path, method) for path, method, _ in RUNS}


@pytest.mark.parametrize(("path", "method", "mode"), RUNS, ids=lambda v: str(v).lower())
def test_api_conforms_to_its_openapi_document(
    api_schema: schemathesis.BaseSchema, path: str, method: str, mode: GenerationMode
) -> None:
    @given(case=api_schema[path][method].as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call_and_validate(checks=checks_)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    statuses: dict[int, int] = {}
    keys_on = getattr(api_schema, "keys_on", False)
    checks_ = CHECKS + [checks.ignored_auth] if keys_on else CHECKS

    run()
    if (path, mode) == ("/detect", POSITIVE):  # generated requests got past the request checks
        assert statuses.keys() - {400, 401}, statuses
