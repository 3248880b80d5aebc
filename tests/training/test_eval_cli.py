"""The ``fbil-eval`` command's CSV mode."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fbil.model.training.eval_cli import main

EXPECTED_MAP = 0.5980194149017162


def fixture_args(case: Path, *extra: str) -> list[str]:
    return [
        "--labelmap",
        str(case / "labelmap.pbtxt"),
        "--groundtruth",
        str(case / "groundtruth.csv"),
        "--detections",
        str(case / "detections.csv"),
        "--exclusions",
        str(case / "exclusions.csv"),
        *extra,
    ]


@pytest.mark.parametrize("prefix", [[], ["csv"]])
def test_fixture_table_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], prefix: list[str], ava_case1: Path
) -> None:
    out_json = tmp_path / "metrics.json"
    assert main([*prefix, *fixture_args(ava_case1, "--json", str(out_json))]) == 0
    stdout = capsys.readouterr().out
    assert f"mAP@0.5IOU = {EXPECTED_MAP!r}" in stdout
    assert "  17       9       60  0.852778  carry/hold (an object)" in stdout
    written = json.loads(out_json.read_text())
    expected = json.loads((ava_case1 / "expected_metrics.json").read_text())
    assert list(written["metrics"]) == expected["metric_keys_in_original_order"]
    for key, value in expected["metrics"].items():
        assert written["metrics"][key] == pytest.approx(value, abs=1e-12)
    assert written["mAP"] == pytest.approx(EXPECTED_MAP, abs=1e-12)
    assert [c["num_gt"] for c in written["per_class"]] == [
        c["num_gt_instances"] for c in expected["per_class"]
    ]


def test_nan_is_written_as_null(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labelmap = tmp_path / "l.pbtxt"
    labelmap.write_text('item {\n  name: "one"\n  id: 1\n}\nitem {\n  name: "two"\n  id: 2\n}\n')
    (tmp_path / "gt.csv").write_text("v,0902,0.1,0.1,0.5,0.9,1,0\n")
    (tmp_path / "det.csv").write_text(
        "v,0902,0.1,0.1,0.5,0.9,1,0.9\nv,0902,0.1,0.1,0.5,0.9,2,0.9\n"
    )
    out_json = tmp_path / "m.json"
    argv = ["-l", str(labelmap), "-g", str(tmp_path / "gt.csv"), "-d", str(tmp_path / "det.csv")]
    assert main([*argv, "--json", str(out_json)]) == 0
    text = out_json.read_text()
    assert "NaN" not in text
    metrics = json.loads(text)["metrics"]
    assert metrics == {
        "PascalBoxes_Precision/mAP@0.5IOU": 1.0,
        "PascalBoxes_PerformanceByCategory/AP@0.5IOU/one": 1.0,
        "PascalBoxes_PerformanceByCategory/AP@0.5IOU/two": None,
    }
    assert "   2       0        1       nan  two" in capsys.readouterr().out


def test_missing_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ava_case1: Path
) -> None:
    argv = fixture_args(ava_case1)
    argv[argv.index("--detections") + 1] = str(tmp_path / "missing.csv")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"fbil-eval: error: cannot read {tmp_path / 'missing.csv'}: No such file" in err


def test_malformed_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ava_case1: Path
) -> None:
    detections = tmp_path / "det.csv"
    shutil.copy(ava_case1 / "detections.csv", detections)
    with detections.open("a") as f:
        f.write("v,0902,0.1,0.1,0.5\n")
    argv = fixture_args(ava_case1)
    argv[argv.index("--detections") + 1] = str(detections)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert f"fbil-eval: error: {detections}:757: expected 7 or 8 columns, got 5" in captured.err
    assert captured.out == ""


def test_bad_labelmap_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ava_case1: Path
) -> None:
    labelmap = tmp_path / "l.pbtxt"
    labelmap.write_text("not a label map\n")
    argv = fixture_args(ava_case1)
    argv[argv.index("--labelmap") + 1] = str(labelmap)
    assert main(argv) == 2
    assert "no label map entries" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["--labelmap", "x"], ["csv", "--bogus"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: fbil-eval csv" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "{csv,checkpoint}" in capsys.readouterr().out
