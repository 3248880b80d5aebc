"""Settings from FBIL_ variables, and the clear startup error without a model."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fbil.service.app import create_app
from fbil.service.cli import main
from fbil.service.settings import Settings, SettingsError


def test_environment_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    monkeypatch.setenv("FBIL_MODEL_PATH", str(model))
    monkeypatch.setenv("FBIL_API_KEYS", "sekrit-key-number-1, sekrit-key-number-2")
    monkeypatch.setenv("FBIL_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("FBIL_MAX_DURATION_S", "30")
    monkeypatch.setenv("FBIL_ONNX_PROVIDERS", "CUDAExecutionProvider,CPUExecutionProvider")
    s = Settings()
    assert s.resolved_model_path() == model
    assert s.api_key_values() == [b"sekrit-key-number-1", b"sekrit-key-number-2"]
    assert "sekrit" not in repr(s)  # keys are secrets
    assert s.max_batch_size == 16 and s.video_limits().max_duration_s == 30
    assert s.onnx_providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert s.upload_limit == s.max_video_bytes + 1024 * 1024


def test_no_model_is_a_clear_startup_error(monkeypatch, capsys):
    monkeypatch.delenv("FBIL_MODEL_PATH", raising=False)
    monkeypatch.setattr("fbil.service.settings.default_model_path", lambda: None)  # no demo model
    with pytest.raises(SettingsError, match="FBIL_MODEL_PATH"):
        create_app(Settings())
    assert main([]) == 2
    assert "FBIL_MODEL_PATH" in capsys.readouterr().err
    assert main(["--model", "/no/such/file.onnx"]) == 2
    assert "is not a file" in capsys.readouterr().err


def test_queue_must_hold_one_request():
    with pytest.raises(ValidationError, match="max_queue_size"):
        Settings(max_queue_size=4, max_keyframes=8)


def test_default_model_is_the_bundled_demo(monkeypatch):
    monkeypatch.delenv("FBIL_MODEL_PATH", raising=False)
    path = Settings().resolved_model_path()
    assert path.name == "model.onnx" and path.parent.name == "demo"
    assert (path.parent / "model.json").is_file()


def test_empty_model_path_means_unset(monkeypatch):
    monkeypatch.setenv("FBIL_MODEL_PATH", "")
    assert Settings().model_path is None
