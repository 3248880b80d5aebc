"""Issue 27: the jobs' disk quota and queue limit hold when submissions arrive at once (each
reserves before it is accepted, and gives back on failure); ``fbil_jobs`` tells the truth."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest

from tests.support.serving import Served, TinyModel, detect_files, metric_value, serve

pytestmark = pytest.mark.anyio

REQUEST = json.dumps({"keyframes": [{"time": 1.0, "boxes": [{"box": [10, 10, 60, 90]}]}]})


async def _hold_worker(s: Served) -> None:
    """Stop the job worker's loop: submitted jobs stay queued (what the limit counts)."""
    task = s.app.state.jobs._task
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _submit_all(s: Served, video: bytes, n: int) -> list[int]:
    calls = [s.client.post("/v1/jobs", files=detect_files(video, REQUEST)) for _ in range(n)]
    return [r.status_code for r in await asyncio.gather(*calls)]


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


async def test_concurrent_uploads_never_exceed_the_disk_quota(
    tiny_model: TinyModel, megamind: Path, tmp_path: Path
):
    video = megamind.read_bytes()  # 1.2 MB: three fit in 4 MB, ten arrive at once
    quota = 4 * 1024 * 1024
    async with serve(
        tiny_model.path,
        detector="none",
        data_dir=tmp_path,
        job_disk_quota_bytes=quota,
        job_min_free_disk_bytes=0,
    ) as s:
        await _hold_worker(s)
        codes = await _submit_all(s, video, 10)
        assert set(codes) <= {202, 507}, codes
        accepted = codes.count(202)
        assert 1 <= accepted <= quota // len(video), codes  # before: all 10 accepted
        assert _disk_bytes(tmp_path / "jobs") <= quota
        worker = s.app.state.jobs
        assert worker.reserved_bytes == 0 and worker.reserved_jobs == 0  # all given back
        # the refused ones left nothing behind: another fits once one job is deleted
        jobs = (await s.client.get("/v1/jobs")).json()["jobs"]
        assert len(jobs) == accepted
        assert (await s.client.delete(f"/v1/jobs/{jobs[0]['id']}")).status_code == 200
        r = await s.client.post("/v1/jobs", files=detect_files(video, REQUEST))
        assert r.status_code == 202, r.text


async def test_concurrent_submissions_never_exceed_the_queue_limit(
    tiny_model: TinyModel, megamind: Path, tmp_path: Path
):
    video = megamind.read_bytes()
    async with serve(
        tiny_model.path,
        detector="none",
        data_dir=tmp_path,
        max_queued_jobs=5,
        job_min_free_disk_bytes=0,
    ) as s:
        await _hold_worker(s)
        codes = await _submit_all(s, video, 30)
        assert set(codes) <= {202, 503}, codes
        assert codes.count(202) == 5, codes  # before: 19 of 30 accepted
        jobs = (await s.client.get("/v1/jobs")).json()["jobs"]
        assert [j["state"] for j in jobs] == ["queued"] * 5
        text = await s.metrics_text()
        assert metric_value(text, 'fbil_jobs{state="queued"}') == 5
        # a refused or failed submission gives its place back
        bad = await s.client.post("/v1/jobs", files=detect_files(video, "{not json"))
        assert bad.status_code == 503  # the queue is still full
        await s.client.delete(f"/v1/jobs/{jobs[0]['id']}")
        assert metric_value(await s.metrics_text(), 'fbil_jobs{state="queued"}') == 4
        bad = await s.client.post("/v1/jobs", files=detect_files(video, "{not json"))
        assert bad.status_code == 400
        r = await s.client.post("/v1/jobs", files=detect_files(video, REQUEST))
        assert r.status_code == 202, r.text
        assert metric_value(await s.metrics_text(), 'fbil_jobs{state="queued"}') == 5
