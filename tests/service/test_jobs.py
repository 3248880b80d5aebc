"""Long-video jobs against a real ``fbil-serve`` process: a whole video, results readable while
it runs, the AVA CSV, SIGKILL and restart, cancel, isolation between keys, the disk quota, and
``/detect`` answering during a job."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

import httpx
import pytest
from serving import TinyModel

from fbil.client.local import local_service

KEY_A, KEY_B = "a" * 32, "b" * 32
BOX = [300, 100, 380, 300]  # 768x576 vtest.avi: a pedestrian's height
ONE_KEYFRAME = {"keyframes": [{"time": 4.0, "boxes": [{"box": BOX}]}]}


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "FBIL_DATA_DIR": str(data_dir),
        "FBIL_API_KEYS": f"{KEY_A},{KEY_B}",
        "FBIL_MAX_DURATION_S": "90",
        "FBIL_JOB_MIN_FREE_DISK_BYTES": "0",
        **extra,
    }


def _whole_video_request(duration: float = 79.5, interval: float = 1.0) -> dict:
    times = [round((k + 0.5) * interval, 6) for k in range(int(duration / interval))]
    return {
        "keyframes": [
            {"time": t, "boxes": [{"box": BOX, "id": "p1"}, {"box": [90, 250, 170, 430]}]}
            for t in times
        ],
        "top_k": 3,
        "outputs": ["json", "ava_csv"],
        "video_id": "vtest",
    }


def _submit(http: httpx.Client, video: Path, request: dict, key: str = KEY_A) -> httpx.Response:
    with video.open("rb") as f:
        return http.post(
            "/v1/jobs",
            files={"video": (video.name, f, "video/x-msvideo")},
            data={"request": json.dumps(request)},
            headers={"Authorization": f"Bearer {key}"},
        )


def _get(http: httpx.Client, path: str, key: str = KEY_A) -> httpx.Response:
    return http.get(path, headers={"Authorization": f"Bearer {key}"})


def _wait(http: httpx.Client, job_id: str, until, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = _get(http, f"/v1/jobs/{job_id}").json()
        if until(job):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def _lines(http: httpx.Client, job_id: str) -> list[str]:
    response = _get(http, f"/v1/jobs/{job_id}/results")
    assert response.status_code == 200
    return response.text.splitlines()


def test_a_whole_video_job_on_a_real_server(tiny_model: TinyModel, test_videos, tmp_path):
    vtest = test_videos / "vtest.avi"
    request = _whole_video_request()
    env = _env(tmp_path / "data")
    with (
        local_service(tiny_model.path, env=env, hermetic=True, log_file=tmp_path / "log") as served,
        httpx.Client(base_url=served.url, timeout=60) as http,
    ):
        submitted = _submit(http, vtest, request)
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()
        assert submitted.headers["location"] == f"/v1/jobs/{job['id']}"
        assert job["state"] in ("queued", "running") and job["progress"]["total"] == 79
        assert len(job["id"]) >= 22  # 128 random bits

        # another key sees nothing of it
        for path in (f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/results"):
            other = _get(http, path, KEY_B)
            assert other.status_code == 404 and other.json()["error"]["code"] == "job_not_found"
        assert _get(http, "/v1/jobs", KEY_B).json()["jobs"] == []
        assert http.delete(f"/v1/jobs/{job['id']}", headers={"X-API-Key": KEY_B}).status_code == 404

        # while it runs: /detect answers, and the results are a prefix of the final ones
        running = _wait(http, job["id"], lambda j: j["progress"]["done"] >= 3)
        assert running["state"] == "running"
        partial = _lines(http, job["id"])
        detect_s = []
        for _ in range(3):
            started = time.monotonic()
            answer = http.post(
                "/detect",
                files={"video": ("v.avi", (test_videos / "Megamind.avi").read_bytes())},
                data={
                    "request": json.dumps({"keyframes": [{"time": 4.0, "boxes": [{"box": BOX}]}]})
                },
                headers={"Authorization": f"Bearer {KEY_A}"},
            )
            detect_s.append(time.monotonic() - started)
            assert answer.status_code == 200, answer.text
        during = _get(http, f"/v1/jobs/{job['id']}").json()
        assert during["state"] == "running", "measure /detect while the job runs"

        done = _wait(http, job["id"], lambda j: j["state"] not in ("queued", "running"))
        assert done["state"] == "succeeded", done
        assert done["progress"] == {"done": 79, "total": 79}
        final = _lines(http, job["id"])
        assert len(final) == 79 and 3 <= len(partial) < 79
        assert final[: len(partial)] == partial
        keyframes = [json.loads(line) for line in final]
        assert [k["time"] for k in keyframes] == [k["time"] for k in request["keyframes"]]
        assert all([a["id"] for a in k["actors"]] == ["p1", 1] for k in keyframes)
        assert all(len(a["actions"]) == 3 for k in keyframes for a in k["actors"])

        # the AVA CSV: one row per reported action, boxes normalised
        text = _get(http, f"/v1/jobs/{job['id']}/results.csv").text
        rows = list(csv.reader(io.StringIO(text)))
        assert len(rows) == 79 * 2 * 3
        first = rows[0]
        assert first[0] == "vtest" and float(first[1]) == 0.5
        assert [float(v) for v in first[2:6]] == pytest.approx(
            [300 / 768, 100 / 576, 380 / 768, 300 / 576], abs=1e-4
        )
        assert int(first[6]) == keyframes[0]["actors"][0]["actions"][0]["id"] and first[8] == "p1"
        assert _get(http, "/v1/jobs").json()["jobs"][0]["id"] == job["id"]

        metrics = _get(http, "/metrics").text
        assert 'fbil_jobs{state="succeeded"} 1.0' in metrics
        assert "fbil_job_keyframes_total 79.0" in metrics

        # cancel: a queued/running job stops and is gone with its files
        second = _submit(http, vtest, request).json()
        gone = http.delete(f"/v1/jobs/{second['id']}", headers={"X-API-Key": KEY_A})
        assert gone.status_code == 200 and gone.json()["state"] == "cancelled"
        assert _get(http, f"/v1/jobs/{second['id']}").status_code == 404
        assert not (tmp_path / "data" / "jobs" / second["id"]).exists()
    assert served.graceful
    assert max(detect_s) < 30  # answered, not blocked behind 79 keyframes


def test_sigkill_mid_job_then_restart_gives_the_uninterrupted_results(
    tiny_model: TinyModel, test_videos, tmp_path
):
    vtest = test_videos / "vtest.avi"
    request = _whole_video_request()
    env = _env(tmp_path / "data")
    log = tmp_path / "log"
    with (
        local_service(tiny_model.path, env=env, hermetic=True, log_file=log) as served,
        httpx.Client(base_url=served.url, timeout=60) as http,
    ):
        job_id = _submit(http, vtest, request).json()["id"]
        before = _wait(http, job_id, lambda j: j["progress"]["done"] >= 20)["progress"]["done"]
        served.process.kill()  # SIGKILL: no shutdown code runs
        served.process.wait()
    assert before < 79, "killed after the end: nothing to resume"
    with (
        local_service(tiny_model.path, env=env, hermetic=True, log_file=log) as served,
        httpx.Client(base_url=served.url, timeout=60) as http,
    ):
        done = _wait(http, job_id, lambda j: j["state"] not in ("queued", "running"))
        assert done["state"] == "succeeded", done
        resumed = _lines(http, job_id)
    # the same job uninterrupted, in a fresh data directory
    env2 = _env(tmp_path / "data2")
    with (
        local_service(tiny_model.path, env=env2, hermetic=True, log_file=log) as served,
        httpx.Client(base_url=served.url, timeout=60) as http,
    ):
        other = _submit(http, vtest, request).json()["id"]
        _wait(http, other, lambda j: j["state"] == "succeeded")
        uninterrupted = _lines(http, other)
    assert len(resumed) == 79
    _same_results(resumed, uninterrupted)


def _same_results(got: list[str], want: list[str]) -> None:
    """The same keyframes, actors and actions; scores equal up to float rounding (a clip's
    scores depend in the last bits on which clips share its batch)."""
    assert len(got) == len(want)
    for line_got, line_want in zip(got, want, strict=True):
        a, b = json.loads(line_got), json.loads(line_want)
        assert a["time"] == b["time"]
        for actor_a, actor_b in zip(a["actors"], b["actors"], strict=True):
            assert (actor_a["id"], actor_a["box"]) == (actor_b["id"], actor_b["box"])
            scores_a = {x["id"]: x["score"] for x in actor_a["actions"]}
            scores_b = {x["id"]: x["score"] for x in actor_b["actions"]}
            assert scores_a.keys() == scores_b.keys()
            assert all(abs(scores_a[c] - scores_b[c]) < 1e-5 for c in scores_a)


def test_a_job_over_the_disk_quota_is_refused_with_507(
    tiny_model: TinyModel, test_videos, tmp_path
):
    env = _env(tmp_path / "data", FBIL_JOB_DISK_QUOTA_BYTES=str(1024 * 1024))
    with (
        local_service(tiny_model.path, env=env, hermetic=True, log_file=tmp_path / "log") as served,
        httpx.Client(base_url=served.url, timeout=60) as http,
    ):
        refused = _submit(http, test_videos / "vtest.avi", _whole_video_request())  # 8.1 MB
        assert refused.status_code == 507
        error = refused.json()["error"]
        assert error["code"] == "storage_quota_exceeded"
        assert error["details"]["job_disk_quota_bytes"] == 1024 * 1024
        assert _get(http, "/v1/jobs").json()["jobs"] == []
        assert os.listdir(tmp_path / "data" / "jobs") == []
