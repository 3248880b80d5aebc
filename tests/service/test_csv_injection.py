"""Issue 27: client box ids written into the AVA CSV can neither run as spreadsheet formulas
(OWASP's CSV injection rule) nor forge rows; the JSON results keep them as sent."""

from __future__ import annotations

import csv
import io
import json

import pytest

from fbil.service.outputs import ava_csv

HOSTILE = [
    "=cmd|' /C calc'!A0",
    "+1+1",
    "-2+3",
    "@SUM(1,1)",
    "\t=1+1",
    "\r=1+1",
    'x",1,2,3\nvideo,0.000,0,0,1,1,1,0.9,forged',
    "a\r\nvideo,0.000,0,0,1,1,1,0.9,forged",
]


def _lines(ids: list[object]) -> list[bytes]:
    actors = [
        {"id": i, "box": [10, 10, 50, 90], "actions": [{"id": 12, "name": "stand", "score": 0.5}]}
        for i in ids
    ]
    return [json.dumps({"time": 1.0, "actors": actors}).encode() + b"\n"]


def test_formula_prefixes_are_neutralised_and_rows_cannot_be_forged():
    text = "".join(ava_csv(_lines(HOSTILE), "video", "pixels", 100, 100))
    physical = text.split("\n")[:-1]  # what a line-based reader sees
    assert len(physical) == len(HOSTILE)  # one line per reported action: nothing forged
    assert "\r" not in text
    rows = list(csv.reader(io.StringIO(text)))
    assert len(rows) == len(HOSTILE)
    for row, sent in zip(rows, HOSTILE, strict=True):
        cell = row[-1]
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
        if sent.startswith(("=", "+", "-", "@", "\t", "\r")):
            assert cell.startswith("'"), cell
        shown = cell.removeprefix("'").replace("\\r", "\r").replace("\\n", "\n")
        assert shown == sent  # the text itself is kept, only made inert


@pytest.mark.parametrize("plain", ["person-1", "p1", "a b", "x=1"])
def test_ordinary_ids_and_numbers_are_unchanged(plain: str):
    text = "".join(ava_csv(_lines([plain, 7, -3]), "video", "pixels", 100, 100))
    assert [r[-1] for r in csv.reader(io.StringIO(text))] == [plain, "7", "-3"]
