"""``fbil-detect --ray`` on a local Ray (one per test session, 2 CPUs): the same files as plain
``fbil-detect``, a broken video among good ones, a worker killed mid-video, a rerun."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray  # the fbil[ray] extra, in dev

from fbil.service.cluster import detect_archive
from fbil.service.detect_cli import main
from tests.support.serving import TinyModel

OPTIONS = ["--keyframe-interval", "4"]
REQUEST = {"keyframe_interval": 4.0, "outputs": ["json", "ava_csv"]}
KILL_WAIT_S = 120.0  # at most this long for the worker of the long video to start writing


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """One local Ray of 2 CPUs for the session (ray.init costs seconds)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield
    ray.shutdown()


@pytest.fixture
def keyframes_only(monkeypatch) -> None:
    monkeypatch.setenv("FBIL_TRACK_INTERVAL_S", "0")  # a fast test; the workers get it too


@pytest.fixture
def archive(test_videos: Path, tmp_path: Path) -> Path:
    """Two good videos and one that is no video (the first 2000 bytes of an AVI)."""
    folder = tmp_path / "archive"
    folder.mkdir()
    for name in ("Megamind.avi", "tree.avi"):
        shutil.copy(test_videos / name, folder / name)
    (folder / "broken.avi").write_bytes((test_videos / "Megamind.avi").read_bytes()[:2000])
    return folder


def plain(videos: list[Path], out: Path, model: TinyModel) -> None:
    main([*map(str, videos), "--out", str(out), "--model", str(model.path), *OPTIONS])


def results(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix in (".jsonl", ".csv")}


def manifest(out: Path, *ignore: str) -> dict[str, dict[str, Any]]:
    """The manifest's records without the fields that differ between runs."""
    videos = json.loads((out / "manifest.json").read_text())["videos"]
    return {
        s: {k: v for k, v in r.items() if k not in ("seconds", *ignore)} for s, r in videos.items()
    }


def test_ray_writes_the_files_of_plain_fbil_detect_and_a_rerun_skips_them(
    local_ray: None, keyframes_only: None, tiny_model: TinyModel, archive: Path, tmp_path: Path,
    capsys,
) -> None:  # fmt: skip
    videos = sorted(archive.iterdir())
    plain(videos, tmp_path / "plain", tiny_model)
    out = tmp_path / "ray"
    args = [str(archive / "*.avi"), "--out", str(out), "--model", str(tiny_model.path), *OPTIONS]
    assert main([*args, "--ray", "--workers", "2"]) == 1  # one video failed
    err = capsys.readouterr().err
    assert "2 of 3 videos done (0 complete before), 1 failed (broken: not_a_video)" in err

    expected = results(tmp_path / "plain")
    assert sorted(expected) == ["Megamind.csv", "Megamind.jsonl", "tree.csv", "tree.jsonl"]
    assert results(out) == expected  # byte for byte
    assert manifest(out) == manifest(tmp_path / "plain")
    assert manifest(out)["broken"]["error"] == "not_a_video"
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]

    written = {name: (out / name).stat().st_mtime_ns for name in expected}
    again = detect_archive([archive / "*.avi"], out, request=REQUEST, model=tiny_model.path,
                           workers=2, progress=False)  # fmt: skip
    assert again == {"videos": 3, "done": 2, "failed": {"broken": "not_a_video"}, "skipped": 2}
    assert {name: (out / name).stat().st_mtime_ns for name in expected} == written


def _holder_of(path: Path) -> int | None:
    """The process that has ``path`` open (a worker writing it), if any."""
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                if os.readlink(fd) == str(path):
                    return int(fd_dir.parent.name)
        except OSError:  # gone, or not ours to read
            continue
    return None


def test_a_worker_killed_mid_video_is_retried_and_its_files_are_whole(
    local_ray: None, keyframes_only: None, tiny_model: TinyModel, test_videos: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    videos = [test_videos / "vtest.avi", test_videos / "Megamind.avi"]  # 20 and 3 keyframes
    plain(videos, tmp_path / "plain", tiny_model)
    out = tmp_path / "ray"
    outcome: dict[str, Any] = {}
    run = threading.Thread(
        target=lambda: outcome.update(
            detect_archive(
                videos, out, request=REQUEST, model=tiny_model.path, workers=2, progress=False
            )  # fmt: skip
        )
    )
    run.start()
    partial = out / "vtest.jsonl.partial"
    deadline = time.monotonic() + KILL_WAIT_S
    victim = None
    while victim is None and time.monotonic() < deadline and run.is_alive():
        # mid-video: the worker has written a keyframe's line and holds the file open
        if partial.is_file() and partial.stat().st_size > 0:
            victim = _holder_of(partial.resolve())
        time.sleep(0.01)
    assert victim is not None and victim != os.getpid(), "no worker seen writing vtest"
    os.kill(victim, signal.SIGKILL)
    run.join()

    assert outcome == {"videos": 2, "done": 2, "failed": {}, "skipped": 0}
    assert results(out) == results(tmp_path / "plain")
    records = manifest(out)
    assert records["vtest"]["tries"] == 2 and records["Megamind"]["tries"] == 1
    assert manifest(out, "tries") == manifest(tmp_path / "plain", "tries")
    assert not list((out / ".attempts").iterdir())
