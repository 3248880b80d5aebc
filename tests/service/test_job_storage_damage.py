"""Issue 27: job storage that survives damage. A corrupt or removed database never takes
``/detect`` down (jobs answer 503 ``job_storage_unavailable``, the log names the file); job
folders without a row are reclaimed at start; a deleted, cut or altered results file answers
500 ``job_results_damaged`` (JSON lines and CSV), never a 200 with a broken body."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.support.serving import Served, TinyModel, assert_error, detect_files, serve

pytestmark = pytest.mark.anyio

BOX = {"box": [10, 10, 60, 90], "id": "p1"}
DETECT = json.dumps({"keyframes": [{"time": 2.0, "boxes": [BOX]}]})
JOB = json.dumps(
    {
        "keyframes": [{"time": t, "boxes": [BOX]} for t in (1.0, 2.0, 3.0, 4.0)],
        "outputs": ["json", "ava_csv"],
    }
)
SETTINGS = {"detector": "none", "job_min_free_disk_bytes": 0}


async def _finished_job(s: Served, video: bytes) -> dict:
    r = await s.client.post("/v1/jobs", files=detect_files(video, JOB))
    assert r.status_code == 202, r.text
    job = r.json()
    for _ in range(600):
        job = (await s.client.get(f"/v1/jobs/{job['id']}")).json()
        if job["state"] not in ("queued", "running"):
            break
        await asyncio.sleep(0.05)
    assert job["state"] == "succeeded", job
    return job


async def test_a_corrupt_database_leaves_detect_up_and_jobs_503(
    tiny_model: TinyModel, megamind: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    db = tmp_path / "jobs.sqlite3"
    db.write_bytes(b"this is no SQLite database, just garbage " * 200)
    video = megamind.read_bytes()
    with caplog.at_level(logging.ERROR):
        async with serve(tiny_model.path, data_dir=tmp_path, **SETTINGS) as s:  # before: exit 3
            r = await s.client.post("/detect", files=detect_files(video, DETECT))
            assert r.status_code == 200, r.text
            calls = [
                s.client.get("/v1/jobs"),
                s.client.get("/v1/jobs/abc"),
                s.client.get("/v1/jobs/abc/results"),
                s.client.delete("/v1/jobs/abc"),
                s.client.post("/v1/jobs", files=detect_files(video, JOB)),
            ]
            for r in await asyncio.gather(*calls):
                error = assert_error(r, 503, "job_storage_unavailable")
                assert str(db) in error["message"] and "move it aside" in error["message"]
            assert (await s.client.get("/readyz")).status_code == 200
    assert any(str(db) in rec.getMessage() for rec in caplog.records if rec.levelname == "ERROR")


async def test_a_database_removed_while_running_answers_503_then_orphans_are_reclaimed(
    tiny_model: TinyModel, megamind: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    video = megamind.read_bytes()
    async with serve(tiny_model.path, data_dir=tmp_path, **SETTINGS) as s:
        job = await _finished_job(s, video)
        for name in ("jobs.sqlite3", "jobs.sqlite3-wal", "jobs.sqlite3-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        r = await s.client.get(f"/v1/jobs/{job['id']}")  # before: 404, as if it never was
        assert (
            str(tmp_path / "jobs.sqlite3")
            in assert_error(r, 503, "job_storage_unavailable")["message"]
        )
        r = await s.client.post("/detect", files=detect_files(video, DETECT))
        assert r.status_code == 200
    folder = tmp_path / "jobs" / job["id"]
    assert folder.is_dir()  # the files a lost database left behind
    fresh = tmp_path / "jobs" / "an-upload-in-flight"  # another process's, not stored yet
    fresh.mkdir()
    (fresh / "video").write_bytes(b"uploading")
    aged = time.time() - 7200  # older than FBIL_JOB_UPLOAD_TIMEOUT_S (1 h)
    for path in (folder, *folder.iterdir()):
        os.utime(path, (aged, aged))
    with caplog.at_level(logging.WARNING):
        async with serve(tiny_model.path, data_dir=tmp_path, **SETTINGS) as s:
            assert not folder.exists()  # before: kept for ever, counted against the quota
            assert fresh.is_dir()  # may still become a job: left
            assert s.app.state.jobs.usage < len(video) + 100
            assert (await s.client.get("/v1/jobs")).json() == {"jobs": []}
            shutil.rmtree(fresh)
            job = await _finished_job(s, video)  # the new database works
    assert any(str(folder) in rec.getMessage() for rec in caplog.records)


@pytest.mark.parametrize("damage", ["deleted", "truncated", "garbled", "emptied"])
async def test_a_damaged_results_file_is_an_error_not_a_broken_200(
    tiny_model: TinyModel, megamind: Path, tmp_path: Path, damage: str
):
    video = megamind.read_bytes()
    async with serve(tiny_model.path, data_dir=tmp_path, **SETTINGS) as s:
        job = await _finished_job(s, video)
        url = f"/v1/jobs/{job['id']}"
        whole = (await s.client.get(url + "/results")).text
        assert len(whole.splitlines()) == 4
        results = tmp_path / "jobs" / job["id"] / "results.jsonl"
        data = results.read_bytes()
        if damage == "deleted":
            results.unlink()
        elif damage == "truncated":
            results.write_bytes(data[: len(data) // 2])
        elif damage == "emptied":
            results.write_bytes(b"")
        else:  # same length, one digit changed: only the checksum tells
            at = data.index(b'"score":0.') + len(b'"score":0.')
            digit = b"1" if data[at : at + 1] != b"1" else b"2"
            results.write_bytes(data[:at] + digit + data[at + 1 :])
        for path in ("/results", "/results.csv"):
            r = await s.client.get(url + path)  # before: 200 with an empty or cut body
            error = assert_error(r, 500, "job_results_damaged")
            assert job["id"] in error["message"]
        assert (await s.client.get(url)).json()["state"] == "succeeded"
        assert (await s.client.delete(url)).status_code == 200  # what the message says to do
