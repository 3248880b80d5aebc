"""``fbil-train`` argument handling: the ``synth`` subcommand and usage errors."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from fbil.model.training import train_cli


def test_synth_subcommand_is_dispatched_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    fake = types.ModuleType("fbil.model.training.synth")
    fake.main = lambda argv: seen.append(list(argv)) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fbil.model.training.synth", fake)
    monkeypatch.setattr("fbil.model.training.synth", fake, raising=False)
    assert train_cli.main(["synth", "--out", "x", "--videos", "2"]) == 0
    assert seen == [["--out", "x", "--videos", "2"]]


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train_cli.main([]) == 2  # --config is required
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {backbone: {arch: slowfast101}, head: {type: fbil}}\n")
    assert train_cli.main(["--config", str(bad)]) == 2
    assert "no train section" in capsys.readouterr().err
    assert train_cli.main(["--config", str(tmp_path / "missing.yaml")]) == 2
