"""Archives without Ray: inputs (files, globs, lists, URLs), the manifest, and plain
``fbil-detect`` recording failures and skipping complete videos on a rerun."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from fbil.service.archive import (
    InputError,
    Manifest,
    VideoInput,
    VideoRecord,
    begin_attempt,
    clear_attempts,
    expand_inputs,
    request_fingerprint,
)
from fbil.service.cluster import worker_env
from fbil.service.detect_cli import main
from fbil.service.jobs.schemas import JobRequest
from tests.support.file_server import serve_folder
from tests.support.serving import TinyModel

FAST = ["--keyframe-interval", "4"]  # 3 keyframes of Megamind.avi


def test_files_globs_lists_and_urls_expand_in_order_once(tmp_path: Path) -> None:
    for name in ("a.mp4", "b.mp4", "c.avi", "notes.md"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.mp4").write_bytes(b"x")
    listing = tmp_path / "sub" / "list.txt"
    listing.write_text("# cameras\nd.mp4\n\n../c.avi\nhttps://example.org/x/cam%201.mp4?t=1\n")
    videos = expand_inputs(
        [tmp_path / "c.avi", str(tmp_path / "*.mp4"), listing, "http://h/clips/e.mkv"]
    )
    assert videos == [
        VideoInput(str(tmp_path / "c.avi"), "c"),
        VideoInput(str(tmp_path / "a.mp4"), "a"),
        VideoInput(str(tmp_path / "b.mp4"), "b"),
        VideoInput(str(tmp_path / "sub" / "d.mp4"), "d"),
        VideoInput("https://example.org/x/cam%201.mp4?t=1", "cam 1"),
        VideoInput("http://h/clips/e.mkv", "e"),
    ]
    assert [v.is_url for v in videos] == [False] * 4 + [True] * 2


@pytest.mark.parametrize(
    ("names", "spec", "message"),
    [
        (["a.mp4"], "missing.mp4", "missing.mp4 is not a file"),
        (["a.mp4"], "*.mkv", "matches no file"),
        (["a.mp4", "a.avi"], "a.*", "would both write a.*"),
        (["l.txt"], "l.txt", "no video to process"),
    ],
)
def test_bad_inputs_are_refused(tmp_path: Path, names: list[str], spec: str, message: str) -> None:
    for name in names:
        (tmp_path / name).write_text("")
    with pytest.raises(InputError, match=message.replace(".", r"\.").replace("*", r"\*")):
        expand_inputs([str(tmp_path / spec)])


def test_a_list_naming_a_missing_file_says_which_line(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("# x\ngone.mp4\n")
    with pytest.raises(InputError, match=r"list\.txt:2: gone\.mp4 is not a file"):
        expand_inputs([tmp_path / "list.txt"])


def test_the_manifest_counts_a_video_complete_only_with_its_files_and_request(
    tmp_path: Path,
) -> None:
    request, other = JobRequest(), JobRequest(top_k=2)
    video = VideoInput("/v/a.mp4", "a")
    done = VideoRecord(video.source, "done", request_fingerprint(request), 3, 1.5,
                       files=["a.jsonl"])  # fmt: skip
    manifest = Manifest(tmp_path)
    manifest.record("a", done)
    assert not manifest.is_complete(video, request)  # a.jsonl is not there
    (tmp_path / "a.jsonl").write_text("{}\n")
    loaded = Manifest.load(tmp_path)
    assert loaded.videos == {"a": done}
    assert loaded.is_complete(video, request)
    assert not loaded.is_complete(video, other)  # other options: other outputs
    assert not loaded.is_complete(VideoInput("/w/a.mp4", "a"), request)  # another source
    loaded.record("a", VideoRecord(video.source, "failed", request_fingerprint(request), error="x"))
    assert loaded.pending([video], request) == [video]
    assert not list(tmp_path.glob("*.partial"))


def test_attempts_are_counted_until_cleared(tmp_path: Path) -> None:
    assert [begin_attempt(tmp_path, "a") for _ in range(3)] == [1, 2, 3]
    assert begin_attempt(tmp_path, "b") == 1
    clear_attempts(tmp_path, "a")
    assert begin_attempt(tmp_path, "a") == 1


@pytest.fixture
def archive(test_videos: Path, tmp_path: Path) -> Path:
    """Two good videos and one that is no video (the first 2000 bytes of an AVI)."""
    folder = tmp_path / "archive"
    folder.mkdir()
    shutil.copy(test_videos / "Megamind.avi", folder / "Megamind.avi")
    shutil.copy(test_videos / "tree.avi", folder / "tree.avi")
    (folder / "broken.avi").write_bytes((test_videos / "Megamind.avi").read_bytes()[:2000])
    return folder


def test_a_broken_video_is_recorded_and_the_others_go_on_then_a_rerun_skips_them(
    tiny_model: TinyModel, archive: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("FBIL_TRACK_INTERVAL_S", "0")
    out = tmp_path / "out"
    args = [str(archive / "*.avi"), "--out", str(out), "--model", str(tiny_model.path), *FAST]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "2 of 3 videos done (0 complete before), 1 failed (broken: not_a_video)" in err
    videos = json.loads((out / "manifest.json").read_text())["videos"]
    assert videos["broken"]["status"] == "failed" and videos["broken"]["error"] == "not_a_video"
    assert videos["Megamind"]["status"] == "done" and videos["Megamind"]["keyframes"] == 3
    assert videos["tree"]["files"] == ["tree.jsonl", "tree.csv"]
    assert sorted(p.name for p in out.iterdir()) == [
        "Megamind.csv", "Megamind.jsonl", "manifest.json", "tree.csv", "tree.jsonl"
    ]  # fmt: skip
    written = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    (out / "tree.csv").unlink()  # an incomplete video is done again
    assert main(args) == 1
    assert "2 of 3 videos done (1 complete before), 1 failed" in capsys.readouterr().err
    assert (out / "Megamind.jsonl").stat().st_mtime_ns == written["Megamind.jsonl"]
    assert (out / "tree.jsonl").stat().st_mtime_ns != written["tree.jsonl"]
    assert (out / "tree.csv").is_file()


def test_two_videos_with_one_name_are_refused_before_loading_anything(
    archive: Path, tmp_path: Path, capsys
) -> None:
    (archive / "again").mkdir()
    shutil.copy(archive / "tree.avi", archive / "again" / "tree.mp4")
    args = [str(archive / "tree.avi"), str(archive / "again" / "tree.mp4")]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    assert "would both write tree.*" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_url_in_a_list_gives_the_files_of_the_same_video_on_disk(
    tiny_model: TinyModel, archive: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("FBIL_TRACK_INTERVAL_S", "0")
    model = ["--model", str(tiny_model.path), *FAST]
    assert main([str(archive / "Megamind.avi"), "--out", str(tmp_path / "disk"), *model]) == 0
    with serve_folder(archive) as base:
        listing = tmp_path / "urls.txt"
        listing.write_text(f"{base}/Megamind.avi\n{base}/missing.avi\n")
        assert main([str(listing), "--out", str(tmp_path / "web"), *model]) == 1
    for name in ("Megamind.jsonl", "Megamind.csv"):
        assert (tmp_path / "web" / name).read_bytes() == (tmp_path / "disk" / name).read_bytes()
    videos = json.loads((tmp_path / "web" / "manifest.json").read_text())["videos"]
    assert videos["Megamind"]["source"] == f"{base}/Megamind.avi"
    assert videos["missing"]["error"] == "download_failed"
    assert "HTTP 404" in videos["missing"]["message"]
    assert not list((tmp_path / "web" / ".downloads").iterdir())  # fetched files deleted


def test_ray_without_the_extra_is_one_line_naming_it(
    archive: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as when not installed
    assert main([str(archive / "tree.avi"), "--out", str(tmp_path / "out"), "--ray"]) == 2
    assert capsys.readouterr().err == (
        "fbil-detect: error: --ray needs Ray Data: pip install 'fbil[ray]'\n"
    )


def test_workers_get_the_drivers_settings_and_threads_and_device_of_their_share() -> None:
    env = {"FBIL_TOP": "1", "HOME": "/root"}
    assert worker_env(2.5, 0, env) == {
        "FBIL_TOP": "1", "FBIL_NUM_THREADS": "2", "FBIL_DEVICE": "cpu"
    }  # fmt: skip
    assert worker_env(0.5, 0.25, env)["FBIL_DEVICE"] == "cuda"
    assert worker_env(0.5, 0.25, env)["FBIL_NUM_THREADS"] == "1"
    given = {"FBIL_NUM_THREADS": "8", "FBIL_DEVICE": "cuda:1"}
    assert worker_env(1, 1, given) == given
