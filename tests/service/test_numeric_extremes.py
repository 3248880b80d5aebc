"""Issue 27: numeric extremes in every numeric field of ``/detect`` and a job's request are
refused with a 4xx (never a 5xx, never request-sized work), and ``/readyz`` keeps answering."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.serving import TinyModel, detect_files, serve

pytestmark = pytest.mark.anyio

# JSON texts of numbers at the edges: subnormals, the smallest normal, the largest doubles,
# integers past 64 bits, and what strict JSON has no numbers for
EXTREMES = [
    "1e-320",
    "5e-324",
    "-5e-324",
    "2.2250738585072014e-308",
    "1e308",
    "-1e308",
    "1.7976931348623157e308",
    "1" + "0" * 400,
    "-" + "1" * 40,
    str(2**63),
    str(-(2**63) - 1),
    "1e400",
    "NaN",
    "Infinity",
    "-Infinity",
    "-0.0",
]

BASE: dict[str, Any] = {
    "keyframes": [{"time": 1.0, "boxes": [{"box": [10, 10, 40, 60], "id": 1}]}],
    "top_k": 3,
    "min_score": 0.0,
}

# each numeric field, as a path into the request document (keyframes omitted: interval fields)
FIELDS: list[tuple[str, tuple[Any, ...]]] = [
    ("keyframe_interval", ("keyframe_interval",)),
    ("person_threshold", ("person_threshold",)),
    ("top_k", ("top_k",)),
    ("min_score", ("min_score",)),
    ("time", ("keyframes", 0, "time")),
    ("x1", ("keyframes", 0, "boxes", 0, "box", 0)),
    ("y2", ("keyframes", 0, "boxes", 0, "box", 3)),
    ("id", ("keyframes", 0, "boxes", 0, "id")),
]

MARK = 987654.125  # replaced by the extreme's text


def request_text(path: tuple[Any, ...], number: str, base: dict[str, Any]) -> str:
    doc = copy.deepcopy(base)
    if path == ("keyframe_interval",) or path == ("person_threshold",):
        doc.pop("keyframes")  # the interval's keyframes and the detector's threshold count
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = MARK
    return json.dumps(doc).replace(str(MARK), number)


# values no field accepts: beyond what a double holds, or no number at all
NEVER_VALID = {"1e400", "NaN", "Infinity", "-Infinity"}


async def test_every_numeric_field_at_its_extremes_is_answered_below_500(
    tiny_model: TinyModel, megamind: Path, tmp_path: Path
):
    video = megamind.read_bytes()
    async with serve(tiny_model.path, detector="none", data_dir=tmp_path) as s:
        for name, path in FIELDS:
            for number in EXTREMES:
                text = request_text(path, number, BASE)
                for url, ok in (("/detect", 200), ("/v1/jobs", 202)):
                    r = await s.client.post(url, files=detect_files(video, text))
                    case = f"{url} {name}={number[:30]}: {r.status_code} {r.text[:200]}"
                    assert r.status_code == ok or 400 <= r.status_code < 500, case
                    if number in NEVER_VALID or name == "keyframe_interval":
                        assert 400 <= r.status_code < 500, case
                    if r.status_code >= 400:
                        assert r.json()["error"]["code"], case
        assert (await s.client.get("/readyz")).status_code == 200


@pytest.mark.parametrize("interval", ["1e-300", "1e-320", "1e-6"])
async def test_tiny_keyframe_interval_is_refused_while_readyz_answers(
    tiny_model: TinyModel, megamind: Path, tmp_path: Path, interval: str
):
    """Before: 1e-6 blocked /readyz for seconds building every keyframe time on the event loop,
    1e-300 hung the server at 24 GB, 1e-320 answered 500 (OverflowError)."""
    text = '{"keyframe_interval": ' + interval + "}"
    async with serve(tiny_model.path, data_dir=tmp_path) as s:
        for url in ("/detect", "/v1/jobs"):
            call = asyncio.ensure_future(s.client.post(url, files=detect_files(megamind, text)))
            ready = await asyncio.wait_for(s.client.get("/readyz"), 30)
            assert ready.status_code == 200
            r = await asyncio.wait_for(call, 30)  # a hang fails here instead of freezing CI
            assert 400 <= r.status_code < 500, r.text
            assert r.json()["error"]["code"] == "invalid_request"
            assert "/keyframe_interval" in json.dumps(r.json()["error"]["details"])
