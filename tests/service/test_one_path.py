"""One keyframe path: the same video and keyframes give the same actors and scores from
``POST /detect``, from a ``/v1/jobs`` job and from ``fbil-detect``; and the fields ``/detect``
and jobs share have the same defaults and bounds everywhere (the CLI's included)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from fbil.service.detect_cli import _request_fields, build_parser, main
from fbil.service.jobs.schemas import JobRequest
from fbil.service.schemas import DetectRequest, KeyframeRequest
from fbil.service.settings import Settings
from tests.support.serving import TinyModel, detect_files, serve

SECONDS = 6  # of vtest.avi (pedestrians, 10 fps), remuxed: no re-encoding
BOX_A, BOX_B = [600, 230, 680, 380], [360, 160, 430, 300]

CASES: dict[str, dict[str, Any]] = {
    "client boxes": {
        "keyframes": [
            {"time": t, "boxes": [{"box": BOX_A, "id": "a"}, {"box": BOX_B}]}
            for t in (1.5, 3.0, 4.5)
        ]
    },
    "detected and tracked": {"keyframe_interval": 1.0},
    "a keyframe without boxes among boxed ones": {
        "keyframes": [
            {"time": 1.0, "boxes": [{"box": BOX_A, "id": 7}]},
            {"time": 2.0},
            {"time": 3.0},
        ]
    },
}


@pytest.fixture(scope="module")
def short_vtest(test_videos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first seconds of vtest.avi, its packets copied (the first is an I-frame)."""
    out = tmp_path_factory.mktemp("one_path") / "vtest6.avi"
    with av.open(str(test_videos / "vtest.avi")) as src, av.open(str(out), "w") as dst:
        stream = src.streams.video[0]
        copy = dst.add_stream_from_template(stream)
        for packet in src.demux(stream):
            if packet.pts is None or packet.pts * stream.time_base >= SECONDS:
                continue
            packet.stream = copy
            dst.mux(packet)
    return out


def _same(name: str, got: list[dict], want: list[dict]) -> None:
    assert [k["time"] for k in got] == pytest.approx([k["time"] for k in want], abs=1e-9), name
    for g, w in zip(got, want, strict=True):
        fields = ("id", "box", "source", "detection_score", "track_id")
        assert [[a.get(f) for f in fields] for a in g["actors"]] == [
            [a.get(f) for f in fields] for a in w["actors"]
        ], name
        for a, b in zip(g["actors"], w["actors"], strict=True):
            np.testing.assert_allclose(a["scores"], b["scores"], rtol=0, atol=1e-5, err_msg=name)


async def _detect_and_job(
    model: Path, video: Path, request: dict, data_dir: Path
) -> tuple[list[dict], list[dict]]:
    async with serve(model, data_dir=data_dir, max_duration_s=10.0) as s:
        r = await s.client.post("/detect", files=detect_files(video, request))
        assert r.status_code == 200, r.text
        detected = r.json()["keyframes"]
        r = await s.client.post("/v1/jobs", files=detect_files(video, request))
        assert r.status_code == 202, r.text
        path = r.headers["location"]
        for _ in range(1200):
            job = (await s.client.get(path)).json()
            if job["state"] not in ("queued", "running"):
                break
            await asyncio.sleep(0.05)
        assert job["state"] == "succeeded", job
        lines = (await s.client.get(f"{path}/results")).text.splitlines()
    return detected, [json.loads(line) for line in lines]


@pytest.mark.parametrize("case", CASES)
def test_detect_jobs_and_fbil_detect_give_the_same_actors_and_scores(
    case: str, tiny_model: TinyModel, short_vtest: Path, tmp_path: Path, capsys
) -> None:
    request = {**CASES[case], "top_k": 3, "all_scores": True}
    detected, job = asyncio.run(
        _detect_and_job(tiny_model.path, short_vtest, request, tmp_path / "data")
    )
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(request))
    argv = [str(short_vtest), "--out", str(tmp_path / "out"), "--model", str(tiny_model.path)]
    assert main([*argv, "--request", str(request_file), "--outputs", "json"]) == 0, (
        capsys.readouterr().err
    )
    cli = [
        json.loads(line) for line in (tmp_path / "out" / "vtest6.jsonl").read_text().splitlines()
    ]
    actors = [a for k in detected for a in k["actors"]]
    assert actors  # something to compare
    if case != "client boxes":  # people found and followed: track ids to compare
        assert any(a["source"] == "detector" and a["track_id"] for a in actors)
    _same(f"{case}: job", job, detected)
    _same(f"{case}: fbil-detect", cli, detected)


def _field_contract(model: type[KeyframeRequest]) -> dict[str, Any]:
    """Each shared field's default and its JSON-schema constraints (bounds, types)."""
    schema = model.model_json_schema()
    return {
        name: (model.model_fields[name].get_default(call_default_factory=True), prop)
        for name, prop in schema["properties"].items()
        if name in KeyframeRequest.model_fields
    }


def test_detect_and_jobs_share_every_field_with_the_same_defaults_and_bounds() -> None:
    detect, job = _field_contract(DetectRequest), _field_contract(JobRequest)
    assert set(detect) == set(job) == set(KeyframeRequest.model_fields)
    assert detect == job
    # the bounds the issue saw drift, now one definition
    interval = detect["keyframe_interval"][1]
    assert (interval["minimum"], interval["maximum"]) == (0.1, 3600.0)
    assert detect["person_threshold"][0] is None  # unset: FBIL_PERSON_THRESHOLD


def test_fbil_detect_options_default_to_the_job_request(monkeypatch) -> None:
    """Unset CLI options leave the request's defaults (person_threshold: the setting)."""
    args = build_parser().parse_args(["v.mp4", "--out", "o"])
    request = JobRequest.model_validate(_request_fields(args))
    defaults = JobRequest.model_validate({})
    shared = set(KeyframeRequest.model_fields)
    assert {f: getattr(request, f) for f in shared} == {f: getattr(defaults, f) for f in shared}
    assert request.person_threshold is None  # resolved to FBIL_PERSON_THRESHOLD when run
    monkeypatch.setenv("FBIL_PERSON_THRESHOLD", "0.45")
    from fbil.service.keyframes import request_options

    assert request_options(request, Settings()).person_threshold == 0.45
    assert request_options(DetectRequest.model_validate({}), Settings()).person_threshold == 0.45
