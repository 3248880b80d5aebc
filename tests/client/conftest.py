"""Client test fixtures: a fake loopback service; the service tests' synthetic videos."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_service import FakeService, fake_service


@pytest.fixture
def fake() -> Iterator[FakeService]:
    with fake_service() as service:
        yield service
