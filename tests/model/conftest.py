from __future__ import annotations

from pathlib import Path

import pytest
import torch

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference"
PARITY = REFERENCE / "parity_tiny"


def reference_path(*parts: str) -> Path:
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"reference fixture {path} is missing (../shared/reference must sit beside)")
    return path


@pytest.fixture(scope="session")
def reference():
    """``reference("parity_tiny", "config.yaml")`` -> path; fails if the fixture is missing."""
    return reference_path


@pytest.fixture(scope="session")
def parity_inputs() -> dict:
    return torch.load(reference_path("parity_tiny", "inputs.pt"), weights_only=True)


@pytest.fixture(scope="session")
def parity_outputs() -> dict:
    return torch.load(reference_path("parity_tiny", "outputs.pt"), weights_only=True)
