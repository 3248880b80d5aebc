"""Shared fixtures: the real test videos (and photos) fetched by
``scripts/fetch_test_videos.sh``."""

from __future__ import annotations

from pathlib import Path

import pytest

VIDEO_DIR = Path(__file__).parent / "data" / "videos"


@pytest.fixture(scope="session")
def test_videos() -> Path:
    """Folder of the real test videos and photos; fails (never skips) when one is missing."""
    names = ("vtest.avi", "Megamind.avi", "Megamind_bugy.avi", "tree.avi", "messi5.jpg",
             "basketball1.png", "basketball2.png")  # fmt: skip
    missing = [n for n in names if not (VIDEO_DIR / n).is_file()]
    if missing:
        pytest.fail(
            f"test videos missing from {VIDEO_DIR}: {', '.join(missing)}; "
            "run ./scripts/fetch_test_videos.sh"
        )
    return VIDEO_DIR
