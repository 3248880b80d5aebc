from __future__ import annotations

from pathlib import Path

import pytest

from fbil.export.cli import main as export_main

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference"


def reference(*parts: str) -> Path:
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"reference fixture {path} is missing (../shared/reference must sit beside)")
    return path


@pytest.fixture(scope="session", name="reference")
def reference_fixture():
    return reference


@pytest.fixture(scope="session")
def parity_artifacts(tmp_path_factory) -> Path:
    """parity_tiny exported once through the real CLI: ONNX + TorchScript + Triton + sidecar."""
    out = tmp_path_factory.mktemp("artifacts")
    code = export_main(
        [
            "--checkpoint", str(reference("parity_tiny", "checkpoint.pth.tar")),
            "--config", str(reference("parity_tiny", "config.yaml")),
            "--format", "all", "--triton", "--no-check", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    return out
