"""Issue 27: ``fbil-demo`` on a video longer than one ``/detect`` request takes goes through the
jobs API (before: 413 ``too_many_keyframes`` for "the whole video"), against a real service."""

from __future__ import annotations

import json
from pathlib import Path

import av
import httpx

from fbil.client import demo
from fbil.client.local import local_service
from tests.support.serving import TinyModel

KEY = "demo-key-0123456789abcdef012345"
TIMES = [0.5 * k + 0.25 for k in range(20)]  # 20 keyframes: over FBIL_MAX_KEYFRAMES (16)


def test_fbil_demo_on_a_long_video_uses_a_job(
    tiny_model: TinyModel, test_videos: Path, tmp_path: Path
):
    video = test_videos / "Megamind.avi"
    boxes = tmp_path / "boxes.json"
    request = {"keyframes": [{"time": t, "boxes": [{"box": [100, 40, 300, 500]}]} for t in TIMES]}
    boxes.write_text(json.dumps(request))
    out = tmp_path / "out.mp4"
    env = {
        "FBIL_API_KEYS": KEY,
        "FBIL_DATA_DIR": str(tmp_path / "data"),
        "FBIL_DETECTOR": "none",
        "FBIL_JOB_MIN_FREE_DISK_BYTES": "0",
    }
    with local_service(tiny_model.path, env=env, hermetic=True, log_file=tmp_path / "log") as s:
        headers = {"Authorization": f"Bearer {KEY}"}
        with video.open("rb") as f:  # what /detect alone answers
            r = httpx.post(
                s.url + "/detect",
                files={"video": ("m.avi", f)},
                data={"request": json.dumps(request)},
                headers=headers,
                timeout=60,
            )
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_keyframes"
        assert "POST /v1/jobs" in r.json()["error"]["message"]  # the path the user wants
        argv = [str(video), "--boxes", str(boxes), "--out", str(out), "--url", s.url]
        assert demo.main([*argv, "--api-key", KEY]) == 0
        jobs = httpx.get(s.url + "/v1/jobs", headers=headers).json()["jobs"]
        assert jobs == []  # the demo's job is deleted once its results are read
    with av.open(str(out)) as container:
        assert container.streams.video[0].frames > 0 or any(True for _ in container.decode(video=0))
