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

import av
import httpx
import numpy as np
import pytest

from fbil.client.local import local_service
from fbil.model.annotate import PALETTE
from fbil.service.keyframes import keyframe_times
from tests.support.serving import TinyModel

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


AUTO_INTERVAL = 2.0  # automatic boxes: the bundled detector takes ~0.4 s a frame on CPU


def _auto_request(interval: float = AUTO_INTERVAL) -> dict:
    """Keyframes every ``interval`` s over the whole video, people found and tracked."""
    return {
        "keyframe_interval": interval,
        "top_k": 3,
        "outputs": ["json", "ava_csv"],
        "video_id": "vtest",
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
    request = _auto_request()
    times = keyframe_times(79.5, AUTO_INTERVAL)  # 1, 3, ..., 77, 78.75
    env = _env(tmp_path / "data", FBIL_TRACK_INTERVAL_S="0")
    with (
        local_service(tiny_model.path, env=env, hermetic=True, log_file=tmp_path / "log") as served,
        httpx.Client(base_url=served.url, timeout=60) as http,
    ):
        submitted = _submit(http, vtest, request)
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()
        assert submitted.headers["location"] == f"/v1/jobs/{job['id']}"
        assert job["state"] in ("queued", "running") and job["progress"]["total"] == 40
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
        assert done["progress"] == {"done": 40, "total": 40}
        final = _lines(http, job["id"])
        assert len(final) == 40 and 3 <= len(partial) < 40
        assert final[: len(partial)] == partial
        keyframes = [json.loads(line) for line in final]
        assert [k["time"] for k in keyframes] == times
        actors = [a for k in keyframes for a in k["actors"]]
        # vtest.avi: pedestrians all along; each actor is a detected person with its track
        assert sum(1 for k in keyframes if k["actors"]) >= 35 and len(actors) >= 80
        assert all(a["source"] == "detector" and a["id"] == a["track_id"] for a in actors)
        assert all(len(a["actions"]) == 3 for a in actors)
        for k in keyframes:  # pixel boxes inside the 768x576 frame, ids unique on a keyframe
            assert all(0 <= a["box"][0] < a["box"][2] <= 768 for a in k["actors"])
            assert len({a["track_id"] for a in k["actors"]}) == len(k["actors"])
        seen: dict[int, int] = {}
        for a in actors:
            seen[a["track_id"]] = seen.get(a["track_id"], 0) + 1
        assert max(seen.values()) >= 4, "a person kept its track id over several keyframes"

        # the AVA CSV: one row per reported action, boxes normalised, the track id last
        text = _get(http, f"/v1/jobs/{job['id']}/results.csv").text
        rows = list(csv.reader(io.StringIO(text)))
        assert len(rows) == len(actors) * 3
        first_kf = next(k for k in keyframes if k["actors"])
        first, actor = rows[0], first_kf["actors"][0]
        assert first[0] == "vtest" and float(first[1]) == first_kf["time"]
        assert [float(v) for v in first[2:6]] == pytest.approx(
            [
                actor["box"][0] / 768,
                actor["box"][1] / 576,
                actor["box"][2] / 768,
                actor["box"][3] / 576,
            ],
            abs=1e-4,
        )
        assert int(first[6]) == actor["actions"][0]["id"] and int(first[8]) == actor["track_id"]
        assert all(0 <= float(v) <= 1 for row in rows for v in row[2:6])
        assert _get(http, "/v1/jobs").json()["jobs"][0]["id"] == job["id"]

        metrics = _get(http, "/metrics").text
        assert 'fbil_jobs{state="succeeded"} 1.0' in metrics
        assert "fbil_job_keyframes_total 40.0" in metrics

        # cancel: a queued/running job stops and is gone with its files
        second = _submit(http, vtest, request).json()
        gone = http.delete(f"/v1/jobs/{second['id']}", headers={"X-API-Key": KEY_A})
        assert gone.status_code == 200 and gone.json()["state"] == "cancelled"
        assert _get(http, f"/v1/jobs/{second['id']}").status_code == 404
        assert not (tmp_path / "data" / "jobs" / second["id"]).exists()
    assert served.graceful
    assert max(detect_s) < 30  # answered, not blocked behind 40 keyframes


def test_sigkill_mid_job_then_restart_gives_the_uninterrupted_results(
    tiny_model: TinyModel, test_videos, tmp_path
):
    vtest = test_videos / "vtest.avi"
    request = _auto_request(interval=4.0)  # 20 keyframes, people tracked through frames 2 s apart
    env = _env(tmp_path / "data", FBIL_TRACK_INTERVAL_S="2")
    log = tmp_path / "log"
    with (
        local_service(tiny_model.path, env=env, hermetic=True, log_file=log) as served,
        httpx.Client(base_url=served.url, timeout=60) as http,
    ):
        job_id = _submit(http, vtest, request).json()["id"]
        before = _wait(http, job_id, lambda j: j["progress"]["done"] >= 6)["progress"]["done"]
        served.process.kill()  # SIGKILL: no shutdown code runs
        served.process.wait()
    assert before < 20, "killed after the end: nothing to resume"
    with (
        local_service(tiny_model.path, env=env, hermetic=True, log_file=log) as served,
        httpx.Client(base_url=served.url, timeout=60) as http,
    ):
        done = _wait(http, job_id, lambda j: j["state"] not in ("queued", "running"))
        assert done["state"] == "succeeded", done
        resumed = _lines(http, job_id)
    # the same job uninterrupted, in a fresh data directory
    env2 = _env(tmp_path / "data2", FBIL_TRACK_INTERVAL_S="2")
    with (
        local_service(tiny_model.path, env=env2, hermetic=True, log_file=log) as served,
        httpx.Client(base_url=served.url, timeout=60) as http,
    ):
        other = _submit(http, vtest, request).json()["id"]
        _wait(http, other, lambda j: j["state"] == "succeeded")
        uninterrupted = _lines(http, other)
    assert len(resumed) == 20
    _same_results(resumed, uninterrupted)
    ids = [[a["track_id"] for a in json.loads(line)["actors"]] for line in resumed]
    first, then = sum(ids[:before], []), sum(ids[before:], [])
    new = set(then) - set(first)  # a person seen before the kill may keep their id after it
    assert first and new and min(new) > max(first), "new tracks number on, not from 1"


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


def test_a_job_draws_the_annotated_video(tiny_model: TinyModel, test_videos, tmp_path):
    video = test_videos / "Megamind.avi"  # 720x528, 11.26 s at 23.976 fps: 270 frames
    request = {
        "keyframes": [{"time": t, "boxes": [{"box": BOX, "id": "p1"}]} for t in (2.0, 6.0)],
        "outputs": ["json", "video"],
        "video_id": "megamind",
    }
    env = _env(tmp_path / "data")
    with (
        local_service(tiny_model.path, env=env, hermetic=True, log_file=tmp_path / "log") as served,
        httpx.Client(base_url=served.url, timeout=60) as http,
    ):
        job = _submit(http, video, request).json()
        assert job["links"]["video"] == f"/v1/jobs/{job['id']}/video"
        plain = _submit(http, video, ONE_KEYFRAME).json()
        _wait(http, plain["id"], lambda j: j["state"] == "succeeded")
        missing = _get(http, f"/v1/jobs/{plain['id']}/video")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "job_video_unavailable"
        assert plain["links"]["video"] is None
        done = _wait(http, job["id"], lambda j: j["state"] not in ("queued", "running"))
        assert done["state"] == "succeeded", done
        answer = _get(http, f"/v1/jobs/{job['id']}/video")
        assert answer.status_code == 200 and answer.headers["content-type"] == "video/mp4"
        (tmp_path / "out.mp4").write_bytes(answer.content)
    with av.open(str(tmp_path / "out.mp4")) as container:
        # encoded without x264/x265 (GPL): VP9, which browsers play in MP4
        assert [s.codec_context.name for s in container.streams] == ["vp9"]
        assert "mp4" in container.format.name
        frames = list(container.decode(video=0))
        assert len(frames) == 270
        assert (frames[0].width, frames[0].height) == (720, 528)
        at_2s = frames[48].to_ndarray(format="rgb24").astype(int)  # 2.0 s: keyframe 1 drawn
        far = frames[100].to_ndarray(format="rgb24").astype(int)  # 4.2 s: nothing drawn
    x1, y1, x2, y2 = BOX
    outline = at_2s[y1 + 50 : y2 - 50, x1].mean(axis=0)  # the box's left edge, box colour
    assert np.abs(outline - np.array(PALETTE[0])).max() < 40
    assert np.abs(far[y1 + 50 : y2 - 50, x1].mean(axis=0) - np.array(PALETTE[0])).max() > 40
