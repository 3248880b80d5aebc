"""Live streams against a real local source: ``vtest.avi`` served live over HTTP (MPEG-TS) by
the ffmpeg command line on 127.0.0.1, the app served by uvicorn, events read as SSE."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fbil.service.settings import Settings
from tests.support.live_source import (
    FFMPEG,
    LiveSource,
    RtspCamera,
    free_port,
    rtsp_camera_missing,
    served_app,
    transcode,
)
from tests.support.serving import TinyModel, detect_files

pytestmark = pytest.mark.skipif(
    FFMPEG is None, reason="the ffmpeg command line serves the live test source (apt ffmpeg)"
)

RTSP_MISSING = rtsp_camera_missing()
ALICE = {"X-API-Key": "alice-key-0123456789"}
BOB = {"X-API-Key": "bob-key-0123456789abc"}


@pytest.fixture(scope="module")
def live_ts(test_videos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 s of vtest.avi (pedestrians, 10 fps) as MPEG-TS."""
    return transcode(test_videos / "vtest.avi", tmp_path_factory.mktemp("live") / "vtest.ts", 20)


@pytest.fixture(scope="module")
def base(tiny_model: TinyModel) -> Iterator[str]:
    settings = Settings(
        model_path=tiny_model.path,
        api_keys=f"{ALICE['X-API-Key']},{BOB['X-API-Key']}",
        stream_allowed_hosts=["127.0.0.1"],
        max_streams=3,
        max_streams_per_key=2,
        stream_read_timeout_s=2.0,
        stream_open_timeout_s=2.0,
        stream_reconnect_backoff_s=0.2,
        stream_max_reconnects=4,
        log_json=False,
    )
    with served_app(settings) as url:
        yield url


@pytest.fixture
def client(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, headers=ALICE, timeout=30) as c:
        yield c
        for s in c.get("/v1/streams").json()["streams"]:
            c.delete(f"/v1/streams/{s['id']}")


def events(
    client: httpx.Client,
    stream_id: str,
    until: Any,
    last_id: int | None = None,
    limit_s: float = 60.0,
) -> list[tuple[int, str, dict[str, Any]]]:
    """SSE events (id, kind, data) until ``until(events)`` is true or the stream ends."""
    headers = {} if last_id is None else {"Last-Event-ID": str(last_id)}
    got: list[tuple[int, str, dict[str, Any]]] = []
    end = time.monotonic() + limit_s
    with client.stream("GET", f"/v1/streams/{stream_id}/events", headers=headers) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for line in r.iter_lines():
            assert time.monotonic() < end, f"no end after {limit_s} s: {got[-3:]}"
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if "data" in fields and "id" in fields:
                got.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
                if until(got):
                    break
            fields = {}
    return got


def keyframes(got: list[tuple[int, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [data for _, kind, data in got if kind == "keyframe"]


def n_keyframes(n: int):
    return lambda got: len(keyframes(got)) >= n


def wait_state(client: httpx.Client, stream_id: str, state: str, limit_s: float = 30) -> dict:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        out = client.get(f"/v1/streams/{stream_id}").json()
        if out["state"] == state:
            return out
        time.sleep(0.05)
    raise AssertionError(f"not {state} after {limit_s} s: {out}")


def readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "fbil-stream-reader"]


def test_keyframes_arrive_live_with_stable_track_ids_and_resume(
    client: httpx.Client, live_ts: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    with LiveSource(live_ts) as source:
        url = source.url.replace("http://", "http://viewer:hunter2@") + "?token=hunter2"
        r = client.post("/v1/streams", json={"url": url, "keyframe_interval": 0.5, "top_k": 3})
        assert r.status_code == 201, r.text
        created = r.json()
        sid = created["id"]
        assert r.headers["location"] == f"/v1/streams/{sid}"
        assert created["state"] in ("connecting", "running")
        assert created["url"] == f"http://***@127.0.0.1:{source.port}/live.ts?token=***"

        got = events(client, sid, n_keyframes(8))
        frames = keyframes(got)
        assert got[0][1] == "state" and got[0][2] == {"state": "running"}
        assert [i for i, _, _ in got] == list(range(1, len(got) + 1))
        times = [k["stream_time"] for k in frames]
        assert all(b > a for a, b in zip(times, times[1:], strict=False))
        now = time.time()
        for k in frames:
            assert set(k) >= {"time", "actors", "stream_time", "wall_time"}
            assert now - 60 < k["wall_time"] <= now
            for actor in k["actors"]:
                assert actor["source"] == "detector" and actor["id"] == actor["track_id"]
                assert len(actor["box"]) == 4 and 0 <= actor["box"][0] < actor["box"][2] <= 768
                assert 1 <= len(actor["actions"]) <= 3 and "scores" not in actor
        # the pedestrians keep their ids from keyframe to keyframe
        # the pedestrians keep their ids from keyframe to keyframe (also across windows
        # dropped on a busy machine): one id is on nearly every keyframe, and ids are reused,
        # not new ones each keyframe
        ids = [{a["track_id"] for a in k["actors"]} for k in frames]
        detections = sum(len(a) for a in ids)
        assert detections >= 16, ids
        most = max(sum(i in a for a in ids) for i in set().union(*ids))
        assert most >= len(frames) - 2, ids
        assert max(max(a) for a in ids if a) <= detections / 2, ids

        out = client.get(f"/v1/streams/{sid}").json()
        assert out["state"] == "running" and out["keyframes"] >= 8
        assert out["lag_s"] is not None and out["lag_s"] >= 0
        assert out["last_error"] is None

        # resuming after the third keyframe's event gives the events after it, the same
        third = next(i for i, kind, _ in got if kind == "keyframe" and i >= 4)
        again = events(client, sid, lambda g: g[-1][0] >= got[-1][0], last_id=third)
        assert again[0][0] == third + 1
        assert again[: len(got) - third] == got[third:]

        # another key sees no such stream
        for method, path in [
            ("GET", f"/v1/streams/{sid}"),
            ("GET", f"/v1/streams/{sid}/events"),
            ("DELETE", f"/v1/streams/{sid}"),
        ]:
            r = client.request(method, path, headers=BOB)
            assert r.status_code == 404 and r.json()["error"]["code"] == "stream_not_found"
        assert client.get("/v1/streams", headers=BOB).json() == {"streams": []}
        assert [s["id"] for s in client.get("/v1/streams").json()["streams"]] == [sid]

        # DELETE stops the stream and frees its reader; then the stream is gone
        assert len(readers()) == 1
        r = client.delete(f"/v1/streams/{sid}")
        assert r.status_code == 200 and r.json()["state"] == "stopped"
        assert readers() == []
        assert client.get(f"/v1/streams/{sid}").status_code == 404
        metrics = client.get("/metrics").text
        assert 'fbil_streams{state="running"} 0.0' in metrics
        assert "fbil_stream_keyframes_total" in metrics
    assert "hunter2" not in caplog.text


def test_a_source_that_comes_back_keeps_the_track_ids(client: httpx.Client, live_ts: Path):
    source = LiveSource(live_ts)
    source.start()
    try:
        r = client.post("/v1/streams", json={"url": source.url, "keyframe_interval": 0.5})
        sid = r.json()["id"]
        before = keyframes(events(client, sid, n_keyframes(4)))
        source.kill()
        out = wait_state(client, sid, "reconnecting")
        assert out["last_error"]["code"] in ("source_ended", "source_timeout", "source_error")
        time.sleep(0.5)
        source.start()
        wait_state(client, sid, "running")
        got = events(client, sid, lambda g: len(keyframes(g)) >= len(before) + 4)
        states = [d["state"] for _, kind, d in got if kind == "state"]
        assert states[:3] == ["running", "reconnecting", "running"]
        after = keyframes(got)[len(before) :]
        seen = {a["track_id"] for k in before[-2:] for a in k["actors"]}
        again = {a["track_id"] for a in after[0]["actors"]} | {
            a["track_id"] for a in after[1]["actors"]
        }
        assert seen & again, (seen, again)
        assert after[0]["stream_time"] > before[-1]["stream_time"]
        out = client.get(f"/v1/streams/{sid}").json()
        assert out["reconnects"] >= 1 and out["state"] == "running"
    finally:
        source.kill()


def test_a_stalled_source_is_dropped_after_the_read_timeout(client: httpx.Client, live_ts: Path):
    with LiveSource(live_ts) as source:
        sid = client.post("/v1/streams", json={"url": source.url}).json()["id"]
        wait_state(client, sid, "running")
        source.pause()  # connected, silent
        got = events(client, sid, lambda g: g[-1][1] == "state" and g[-1][2]["state"] != "running")
    assert got[-1][2] == {
        "state": "reconnecting",
        "error": {"code": "source_timeout", "message": "the source sent nothing in time"},
    }


def test_a_source_faster_than_the_model_drops_windows_not_memory(
    client: httpx.Client, live_ts: Path
):
    # looped: a source that ended (79 s of video at full speed ends in seconds) is reconnected,
    # and the state asserted below raced with that end
    with LiveSource(live_ts, realtime=False, loop=True) as source:
        r = client.post("/v1/streams", json={"url": source.url, "keyframe_interval": 0.1})
        sid = r.json()["id"]
        got = events(client, sid, n_keyframes(6))
        # the stream holds at most FBIL_STREAM_CLIPS_IN_FLIGHT clips: /detect is answered
        request = {"keyframes": [{"time": 2.0, "boxes": [{"box": [100, 40, 300, 500]}]}]}
        r = client.post("/detect", files=detect_files(live_ts, request))
        assert r.status_code == 200 and r.json()["keyframes"][0]["actors"], r.text
        out = client.get(f"/v1/streams/{sid}").json()
        assert out["state"] == "running"
    frames = keyframes(got)
    assert out["dropped_keyframes"] > 0
    # only the newest window waits: a keyframe answered is never one queued long before
    gaps = [b["stream_time"] - a["stream_time"] for a, b in zip(frames, frames[1:], strict=False)]
    assert max(gaps) > 0.1 + 1e-6  # windows between them were dropped


def test_a_source_that_never_answers_fails_with_its_code(client: httpx.Client):
    url = f"http://127.0.0.1:{free_port()}/nothing.ts"
    sid = client.post("/v1/streams", json={"url": url}).json()["id"]
    got = events(client, sid, lambda g: False)  # until the stream ends
    assert got[-1][1:] == ("state", {"state": "failed", "error": got[-1][2]["error"]})
    assert got[-1][2]["error"]["code"] == "source_unreachable"
    out = client.get(f"/v1/streams/{sid}").json()
    assert out["state"] == "failed" and out["last_error"]["code"] == "source_unreachable"
    assert out["reconnects"] == 4 and readers() == []


@pytest.mark.parametrize(
    ("url", "status", "code"),
    [
        ("file:///etc/passwd", 400, "stream_url_local_protocol"),
        ("concat:/etc/passwd|/etc/hosts", 400, "stream_url_local_protocol"),
        ("subfile,,start,0,end,99,,:/etc/passwd", 400, "stream_url_local_protocol"),
        ("data:video/mp2t;base64,AAAA", 400, "stream_url_local_protocol"),
        ("pipe:0", 400, "stream_url_local_protocol"),
        ("/etc/passwd", 400, "stream_url_local_protocol"),
        ("ftp://127.0.0.1/x.ts", 400, "stream_url_scheme_not_allowed"),
        ("rtsp://10.0.0.7/cam", 403, "stream_url_host_not_allowed"),
        ("http://", 400, "stream_url_invalid"),
    ],
)
def test_forbidden_urls_are_refused_with_their_code(client: httpx.Client, url, status, code):
    r = client.post("/v1/streams", json={"url": url})
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    assert client.get("/v1/streams").json() == {"streams": []}


def test_bad_requests_and_limits(client: httpx.Client):
    url = f"http://127.0.0.1:{free_port()}/x.ts"
    r = client.post("/v1/streams", json={"url": url, "keyframe_interval": "1"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    r = client.post("/v1/streams", json={"url": url, "rules": [{"action": "juggle"}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_action"
    r = client.post("/v1/streams", json={"url": url, "rules": [{"action": 1, "start_n": 4}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    wrong = {"X-API-Key": "wrong-key-0123456789"}
    assert client.post("/v1/streams", json={"url": url}, headers=wrong).status_code == 401
    for _ in range(2):
        assert client.post("/v1/streams", json={"url": url}).status_code == 201
    r = client.post("/v1/streams", json={"url": url})
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_streams"
    assert client.post("/v1/streams", json={"url": url}, headers=BOB).status_code == 201
    r = client.post("/v1/streams", json={"url": url}, headers=BOB)
    assert r.status_code == 429 and r.json()["error"]["details"] == {"max_streams": 3}
    for s in client.get("/v1/streams", headers=BOB).json()["streams"]:
        client.delete(f"/v1/streams/{s['id']}", headers=BOB)


def test_the_python_client_creates_follows_and_stops_a_stream(base: str, live_ts: Path):
    from fbil.client import Client, FBILError

    with LiveSource(live_ts) as source, Client(base, api_key=ALICE["X-API-Key"]) as fbil:
        created = fbil.create_stream(source.url, keyframe_interval=0.5, top_k=2)
        assert [s["id"] for s in fbil.streams()] == [created["id"]]
        got = []
        for event in fbil.stream_events(created["id"]):
            got.append(event)
            if sum(e.kind == "keyframe" for e in got) == 3:
                break
        assert [e.id for e in got] == list(range(1, len(got) + 1))
        assert got[-1].kind == "keyframe" and "actors" in got[-1].data
        # resuming from an id gives the events after it
        resumed = next(iter(fbil.stream_events(created["id"], last_event_id=got[-2].id)))
        assert resumed == got[-1]
        assert fbil.stop_stream(created["id"])["state"] == "stopped"
        with pytest.raises(FBILError) as e:
            fbil.stream(created["id"])
        assert e.value.code == "stream_not_found"


def test_a_websocket_gets_the_same_events(client: httpx.Client, base: str, live_ts: Path):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    ws_base = base.replace("http://", "ws://")
    with LiveSource(live_ts) as source:
        sid = client.post("/v1/streams", json={"url": source.url, "keyframe_interval": 0.5})
        sid = sid.json()["id"]
        got = events(client, sid, n_keyframes(2))
        with connect(f"{ws_base}/v1/streams/{sid}/ws", additional_headers=ALICE) as ws:
            messages = [json.loads(ws.recv(timeout=30)) for _ in range(len(got))]
        assert [(m["id"], m["event"], m["data"]) for m in messages] == got
        # resuming from an id, the key as a bearer token
        bearer = {"Authorization": f"Bearer {ALICE['X-API-Key']}"}
        url = f"{ws_base}/v1/streams/{sid}/ws?last_event_id={got[-2][0]}"
        with connect(url, additional_headers=bearer) as ws:
            assert json.loads(ws.recv(timeout=30))["id"] == got[-1][0]
        # another key, or none: closed at once with the code and status of HTTP
        refused = [(BOB, 4404, "stream_not_found"), ({}, 4401, "unauthorized")]
        for headers, code, reason in refused:
            ws = connect(f"{ws_base}/v1/streams/{sid}/ws", additional_headers=headers)
            with ws, pytest.raises(ConnectionClosed) as e:
                ws.recv(timeout=30)
            assert (e.value.rcvd.code, e.value.rcvd.reason) == (code, reason)


@pytest.mark.skipif(RTSP_MISSING is not None, reason=f"needs {RTSP_MISSING}")
@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_an_rtsp_camera_over_tcp_and_udp(
    client: httpx.Client, test_videos: Path, tmp_path_factory, transport: str
):
    video = transcode(
        test_videos / "vtest.avi", tmp_path_factory.getbasetemp() / "vtest-cam.mkv", 20
    )
    with RtspCamera(video) as camera:
        url = camera.url.replace("rtsp://", "rtsp://admin:hunter2@")
        body = {"url": url, "rtsp_transport": transport, "keyframe_interval": 0.5}
        created = client.post("/v1/streams", json=body).json()
        assert created["url"] == camera.url.replace("rtsp://", "rtsp://***@")
        got = keyframes(events(client, created["id"], n_keyframes(3)))
    assert all(k["actors"] for k in got)
    assert all(a["track_id"] for k in got for a in k["actors"])


@pytest.fixture(scope="module")
def hls(live_ts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An HLS playlist of 1 s segments over HTTP (``live.m3u8``), and the same playlist naming
    its segments as local files (``local.m3u8``): the base URL."""
    import functools
    import http.server
    import subprocess

    assert FFMPEG is not None
    folder = tmp_path_factory.mktemp("hls")
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-i", str(live_ts), "-t", "8", "-c",
         "copy", "-f", "hls", "-hls_time", "1", "-hls_list_size", "0",
         "-hls_segment_filename", str(folder / "seg%03d.ts"), str(folder / "live.m3u8")],
        check=True,
    )  # fmt: skip
    playlist = (folder / "live.m3u8").read_text()
    local = "\n".join(
        f"file://{folder}/{line}" if line.startswith("seg") else line
        for line in playlist.splitlines()
    )
    (folder / "local.m3u8").write_text(local + "\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_an_hls_playlist_over_http(client: httpx.Client, hls: str):
    created = client.post("/v1/streams", json={"url": f"{hls}/live.m3u8"}).json()
    got = keyframes(events(client, created["id"], n_keyframes(2)))
    assert all(k["actors"] for k in got)


def test_a_playlist_cannot_reach_local_files(client: httpx.Client, hls: str):
    created = client.post("/v1/streams", json={"url": f"{hls}/local.m3u8"}).json()
    got = events(client, created["id"], lambda g: False)  # until it fails
    assert not keyframes(got)
    assert got[-1][2]["state"] == "failed"
    assert got[-1][2]["error"]["code"] in ("source_invalid_data", "source_forbidden")


def test_an_rtmp_source(client: httpx.Client, live_ts: Path):
    with LiveSource(live_ts, rtmp=True) as source:
        created = client.post("/v1/streams", json={"url": source.url}).json()
        got = keyframes(events(client, created["id"], n_keyframes(2)))
    assert all(k["actors"] for k in got)
