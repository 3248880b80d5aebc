"""API keys: refused when unusable, the auth state logged, metrics and documents behind a key."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from fbil.service.app import create_app
from fbil.service.settings import PLACEHOLDER_API_KEY, Settings, SettingsError
from tests.support.serving import TinyModel, serve

pytestmark = pytest.mark.anyio

KEY = "0123456789abcdef-key-one"
OTHER = "0123456789abcdef-key-two"
CLOSED = ("/metrics", "/docs", "/redoc", "/openapi.json")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (PLACEHOLDER_API_KEY, "placeholder"),
        (f"{KEY}, {PLACEHOLDER_API_KEY}", "placeholder"),
        (" , ", "holds no key"),
        ("", "holds no key"),
        (f"{KEY},short", "key 2 has 5 characters"),
    ],
)
def test_unusable_api_keys_refuse_to_start(tiny_model: TinyModel, value: str, message: str):
    with pytest.raises(SettingsError, match=f"FBIL_API_KEYS.*{message}"):
        create_app(Settings(model_path=tiny_model.path, api_keys=value))


def test_api_keys_parse(tiny_model: TinyModel):
    assert Settings(model_path=tiny_model.path).api_key_values() == []  # unset: keys off
    both = Settings(model_path=tiny_model.path, api_keys=f" {KEY} ,{OTHER},")
    assert both.api_key_values() == [KEY.encode(), OTHER.encode()]


def test_the_server_process_refuses_the_placeholder(tiny_model: TinyModel):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FBIL_")}
    env.update(FBIL_MODEL_PATH=str(tiny_model.path), FBIL_API_KEYS=PLACEHOLDER_API_KEY)
    done = subprocess.run(
        [sys.executable, "-m", "fbil.service.cli", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "FBIL_API_KEYS holds the placeholder" in done.stderr


async def test_auth_state_is_logged_once_without_the_keys(tiny_model: TinyModel, caplog):
    caplog.set_level(logging.INFO, logger="fbil.service.app")
    async with serve(tiny_model.path, api_keys=f"{KEY},{OTHER}", public_metrics=True):
        pass
    on = [r for r in caplog.records if "API keys" in r.getMessage()]
    caplog.clear()
    async with serve(tiny_model.path):
        pass
    off = [r for r in caplog.records if "API keys" in r.getMessage()]
    assert len(on) == 1 and len(off) == 1
    assert (
        on[0].getMessage() == "API keys are on (2 keys); without a key: /healthz, /readyz, /metrics"
    )
    assert off[0].levelno == logging.WARNING and "API keys are off" in off[0].getMessage()
    assert KEY not in caplog.text and KEY not in on[0].getMessage()


async def test_metrics_and_documents_need_a_key(tiny_model: TinyModel):
    async with serve(tiny_model.path, api_keys=KEY) as s:
        without = {path: (await s.client.get(path)).status_code for path in CLOSED}
        wrong = {
            path: (await s.client.get(path, headers={"X-API-Key": OTHER})).status_code
            for path in CLOSED
        }
        bearer = {
            path: (await s.client.get(path, headers={"Authorization": f"Bearer {KEY}"}))
            for path in CLOSED
        }
        probes = [(await s.client.get(path)).status_code for path in ("/healthz", "/readyz")]
    assert without == dict.fromkeys(CLOSED, 401)
    assert wrong == dict.fromkeys(CLOSED, 401)
    assert {path: r.status_code for path, r in bearer.items()} == dict.fromkeys(CLOSED, 200)
    assert "fbil_requests_total" in bearer["/metrics"].text
    assert bearer["/openapi.json"].json()["info"]["title"] == "FBIL action detection"
    assert probes == [200, 200]


async def test_settings_open_metrics_and_documents(tiny_model: TinyModel):
    async with serve(tiny_model.path, api_keys=KEY, public_metrics=True) as s:
        metrics_only = {path: (await s.client.get(path)).status_code for path in CLOSED}
        model = await s.client.get("/v1/model")
    async with serve(tiny_model.path, api_keys=KEY, public_docs=True) as s:
        docs_only = {path: (await s.client.get(path)).status_code for path in CLOSED}
    async with serve(tiny_model.path) as s:  # no keys: everything is open
        no_keys = {path: (await s.client.get(path)).status_code for path in CLOSED}
    assert metrics_only == {"/metrics": 200, "/docs": 401, "/redoc": 401, "/openapi.json": 401}
    assert model.status_code == 401  # the model card stays behind the key
    assert docs_only == {"/metrics": 401, "/docs": 200, "/redoc": 200, "/openapi.json": 200}
    assert no_keys == dict.fromkeys(CLOSED, 200)


@pytest.mark.parametrize("authorization", ["Bearer ", "Basic a2V5OmtleQ==", f"Bearer {OTHER}"])
async def test_a_bad_authorization_header_is_refused_next_to_a_good_key(
    tiny_model: TinyModel, authorization: str
):
    # found by schemathesis: "Authorization: Bearer " with a valid X-API-Key was let through
    async with serve(tiny_model.path, api_keys=KEY) as s:
        both = await s.client.get(
            "/v1/model", headers={"Authorization": authorization, "X-API-Key": KEY}
        )
        key_only = await s.client.get("/v1/model", headers={"X-API-Key": KEY})
    assert both.status_code == 401 and both.json()["error"]["code"] == "unauthorized"
    assert key_only.status_code == 200
