"""Client test fixtures: a fake loopback service; the service tests' synthetic videos."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_service import FakeService, fake_service

# tests/service/synthetic_video.py: videos whose frames show their index (and a rotation option)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))


@pytest.fixture
def fake() -> Iterator[FakeService]:
    with fake_service() as service:
        yield service
