"""``fbil-detect``: the jobs pipeline in-process on files (no server)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import av

from fbil.model.video import segment_end
from fbil.service.detect_cli import main
from tests.support.serving import TinyModel

ROOT = Path(__file__).resolve().parents[2]
HELP = """
import sys
from fbil.model.extras import detect as main
try:
    main(["--help"])
except SystemExit as exit:
    print("exit code:", exit.code)
print("heavy modules:", sorted(m for m in ("torch", "av") if m in sys.modules))
"""


def test_help_is_a_console_script_and_imports_neither_torch_nor_pyav() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["fbil-detect"] == "fbil.model.extras:detect"  # -> fbil.service.detect_cli
    run = subprocess.run(
        [sys.executable, "-c", HELP], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    assert "usage: fbil-detect" in run.stdout and "exit code: 0" in run.stdout
    assert "heavy modules: []" in run.stdout


def test_a_video_gives_json_lines_csv_and_the_annotated_video(
    tiny_model: TinyModel, test_videos: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("FBIL_TRACK_INTERVAL_S", "0")  # keyframes only: a fast test
    video = test_videos / "Megamind.avi"  # 11.26 s, 720x528, 270 frames
    out = tmp_path / "out"
    code = main(
        [str(video), "--out", str(out), "--model", str(tiny_model.path)]
        + ["--keyframe-interval", "4", "--top-k", "2", "--outputs", "json", "ava_csv", "video"]
    )
    assert code == 0, capsys.readouterr().err
    keyframes = [json.loads(line) for line in (out / "Megamind.jsonl").read_text().splitlines()]
    end = segment_end(video)  # 11.3 s: the last keyframe is the middle of the partial 8..end
    assert [k["time"] for k in keyframes] == [2.0, 6.0, (8.0 + end) / 2]
    actors = [a for k in keyframes for a in k["actors"]]
    assert actors and all(a["source"] == "detector" and a["id"] == a["track_id"] for a in actors)
    assert all(len(a["actions"]) == 2 for a in actors)
    rows = list(csv.reader((out / "Megamind.csv").open()))
    assert len(rows) == 2 * len(actors)
    assert rows[0][0] == "Megamind" and int(rows[0][8]) == keyframes[0]["actors"][0]["track_id"]
    with av.open(str(out / "Megamind.mp4")) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 270 and (frames[0].width, frames[0].height) == (720, 528)
    assert "3/3" in capsys.readouterr().err  # the progress bar


def test_a_missing_video_is_refused_before_loading_anything(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "out")]) == 2
    assert "is not a file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
