"""The AVA frame-mAP reference fixture (``../shared/reference/ava_map_case1``)."""

from __future__ import annotations

from pathlib import Path

import pytest

AVA_CASE1 = Path(__file__).resolve().parents[3] / "shared" / "reference" / "ava_map_case1"


@pytest.fixture(scope="session")
def ava_case1() -> Path:
    """Folder of the fixture; fails (never skips) when it is missing."""
    if not (AVA_CASE1 / "expected_metrics.json").is_file():
        pytest.fail(
            f"reference fixture {AVA_CASE1} is missing (../shared/reference must sit beside)"
        )
    return AVA_CASE1
