"""Live streams' parts without a source: URL policy (each forbidden URL refused with its code),
credentials never echoed, N-of-M rule smoothing and the event log's resume."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from fbil.service.errors import (
    StreamURLHostError,
    StreamURLInvalidError,
    StreamURLLocalProtocolError,
    StreamURLSchemeError,
)
from fbil.service.streams.events import EventLog, last_event_id
from fbil.service.streams.rules import RuleEngine, RuleSpec
from fbil.service.streams.source import SourceOptions, ffmpeg_options
from fbil.service.streams.url_policy import LOCAL_PROTOCOLS, check_url, redact

SCHEMES = ["rtsp", "rtsps", "rtmp", "rtmps", "http", "https"]
HOSTS = ["127.0.0.1", "10.0.0.0/8", "camera.example"]


@pytest.mark.parametrize(
    ("url", "protocol"),
    [
        ("file:/etc/passwd", "file"),
        ("file:///etc/passwd", "file"),
        ("/etc/passwd", "file"),
        ("relative/video.mp4", "file"),
        ("C:\\videos\\a.mp4", "file"),
        ("concat:/etc/passwd|/etc/hosts", "concat"),
        ("concatf:/tmp/list.txt", "concatf"),
        ("subfile,,start,0,end,100,,:/etc/passwd", "subfile"),
        ("data:video/mp2t;base64,R0lGODdh", "data"),
        ("pipe:0", "pipe"),
        ("fd:3", "fd"),
        ("cache:http://127.0.0.1/x.ts", "cache"),
        ("async:http://127.0.0.1/x.ts", "async"),
        ("crypto+file:///etc/passwd", "crypto"),
        ("hls+file:///tmp/x.m3u8", "hls"),
        ("unix:/run/x.sock", "unix"),
        ("FILE:/etc/passwd", "file"),
    ],
)
def test_local_protocols_are_refused_naming_the_protocol(url, protocol):
    with pytest.raises(StreamURLLocalProtocolError) as e:
        check_url(url, SCHEMES + ["file"], HOSTS)  # an operator listing file changes nothing
    assert e.value.code == "stream_url_local_protocol"
    assert e.value.details["protocol"] == protocol
    assert protocol in LOCAL_PROTOCOLS


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/x.ts", "srt://127.0.0.1:9000", "gopher://127.0.0.1/", "udp://127.0.0.1:5000"],
)
def test_schemes_outside_the_setting_are_refused(url):
    with pytest.raises(StreamURLSchemeError) as e:
        check_url(url, SCHEMES, HOSTS)
    assert e.value.code == "stream_url_scheme_not_allowed"
    with pytest.raises(StreamURLSchemeError):
        check_url("http://127.0.0.1/x.ts", ["rtsp"], HOSTS)


@pytest.mark.parametrize(
    "url",
    [
        "http://192.168.1.5/x.ts",
        "rtsp://10.0.0.1.nip.example/x",
        "http://[::1]/x.ts",
        "http://127.0.0.2/x.ts",
        "rtsp://user:secret@169.254.169.254/latest",
    ],
)
def test_hosts_outside_the_allow_list_are_refused(url):
    with pytest.raises(StreamURLHostError) as e:
        check_url(url, SCHEMES, HOSTS, resolve=False)
    assert e.value.code == "stream_url_host_not_allowed"
    assert "secret" not in e.value.message + str(e.value.details)


def test_an_empty_allow_list_refuses_every_host():
    with pytest.raises(StreamURLHostError, match="FBIL_STREAM_ALLOWED_HOSTS"):
        check_url("rtsp://127.0.0.1/x", SCHEMES, [])


def test_allowed_hosts_by_name_and_by_network():
    assert check_url("rtsp://10.1.2.3:554/s", SCHEMES, HOSTS).host == "10.1.2.3"
    assert check_url("rtsp://CAMERA.example/s", SCHEMES, HOSTS, resolve=False).host == (
        "camera.example"
    )
    # a name resolving into an allowed network
    assert check_url("http://localhost:8000/x.ts", SCHEMES, ["127.0.0.0/8"]).host == "localhost"


@pytest.mark.parametrize(
    "url",
    ["", "rtsp://", "rtsp:///path", "http://127.0.0.1/a b", "http://127.0.0.1/\n", "x" * 3000],
)
def test_non_urls_are_refused(url):
    with pytest.raises((StreamURLInvalidError, StreamURLLocalProtocolError)) as e:
        check_url(url, SCHEMES, HOSTS)
    assert e.value.code in ("stream_url_invalid", "stream_url_local_protocol")


def test_credentials_and_query_values_are_never_shown():
    url = "rtsp://admin:hunter2@127.0.0.1:554/live?user=admin&password=hunter2"
    checked = check_url(url, SCHEMES, HOSTS)
    assert checked.url == url  # FFmpeg gets it whole
    assert checked.shown == "rtsp://***@127.0.0.1:554/live?user=***&password=***"
    assert "hunter2" not in redact(url) and "admin" not in redact(url)


def test_ffmpeg_gets_only_network_protocols_and_the_transport():
    opts = ffmpeg_options("rtsp", SourceOptions(rtsp_transport="udp"))
    allowed = set(opts["protocol_whitelist"].split(","))
    assert not allowed & LOCAL_PROTOCOLS
    assert opts["rtsp_transport"] == "udp" and int(opts["timeout"]) > 0


# --------------------------------------------------------------------------- rules


def _rule(**kw) -> RuleSpec:
    base = RuleSpec("fall", 1, 5, "fall down", 0.5, start_n=2, start_m=3, end_n=2, end_m=3)
    return dataclasses.replace(base, **kw)


def _run(engine: RuleEngine, rows: list[dict[int, float]]) -> list[tuple[int, str, int]]:
    """Feed keyframes (track id -> score of column 1): (keyframe, event type, track)."""
    out = []
    for k, row in enumerate(rows):
        ids = list(row)
        scores = np.array([[0.0, row[i]] for i in ids], np.float32) if ids else None
        out += [(k, e["type"], e["track_id"]) for e in engine.update(ids, scores, float(k))]
    return out


def test_one_noisy_keyframe_neither_starts_nor_ends_an_action():
    engine = RuleEngine([_rule()])
    scores = [0.9, 0.1, 0.1, 0.9, 0.9, 0.2, 0.9, 0.9, 0.1, 0.1, 0.1]
    events = _run(engine, [{7: s} for s in scores])
    # the lone 0.9 at 0 starts nothing; 2 of the last 3 above start it (keyframe 4); the lone
    # dip at 5 ends nothing; 2 of the last 3 below end it (keyframe 9)
    assert events == [(4, "action_started", 7), (9, "action_ended", 7)]


def test_rules_follow_each_track_and_a_missing_person_counts_as_below():
    engine = RuleEngine([_rule(start_n=1, start_m=1, end_n=2, end_m=2)])
    rows = [{1: 0.9, 2: 0.1}, {1: 0.9, 2: 0.8}, {2: 0.9}, {2: 0.9}, {}, {}]
    assert _run(engine, rows) == [
        (0, "action_started", 1),
        (1, "action_started", 2),
        (3, "action_ended", 1),  # gone since keyframe 2
        (5, "action_ended", 2),
    ]
    assert engine._tracks == [{}]  # gone and quiet: forgotten


def test_rule_events_carry_the_action_score_and_time():
    engine = RuleEngine([_rule(start_n=1, start_m=1)])
    (event,) = engine.update([3], np.array([[0.0, 0.75]], np.float32), 12.5)
    assert event == {
        "type": "action_started",
        "rule": "fall",
        "action": {"id": 5, "name": "fall down"},
        "track_id": 3,
        "stream_time": 12.5,
        "score": 0.75,
    }


# --------------------------------------------------------------------------- events


def _ids(text: list[str]) -> list[int]:
    return [int(t.split("\n")[0][4:]) for t in text if t.startswith("id: ")]


def test_the_event_log_resumes_after_an_id_and_says_what_it_lost():
    async def main() -> None:
        log = EventLog(5)
        for k in range(8):
            log.add("keyframe", {"k": k})
        log.close()
        everything = [t async for t in log.follow(0)]
        assert everything[:2] == ["retry: 1000\n\n", 'event: gap\ndata: {"missed":3}\n\n']
        assert _ids(everything) == [4, 5, 6, 7, 8]
        assert _ids([t async for t in log.follow(6)]) == [7, 8]
        assert not any(t.startswith("event: gap") for t in [t async for t in log.follow(6)])
        assert _ids([t async for t in log.follow(8)]) == []

    asyncio.run(main())


def test_a_reader_gets_events_as_they_come():
    async def main() -> None:
        log = EventLog(10)
        got: list[str] = []

        async def read() -> None:
            async for text in log.follow(0):
                got.append(text)

        reader = asyncio.create_task(read())
        await asyncio.sleep(0.01)
        log.add("keyframe", {"time": 1.0})
        await asyncio.sleep(0.01)
        assert _ids(got) == [1] and 'data: {"time":1.0}' in got[-1]
        log.add("rule", {"type": "action_started"})
        log.close()
        await asyncio.wait_for(reader, 5)
        assert _ids(got) == [1, 2] and got[-1].startswith("id: 2\nevent: rule\n")

    asyncio.run(main())


def test_last_event_id_header():
    assert last_event_id("17") == 17
    assert last_event_id(None) == 0
    assert last_event_id("nonsense") == 0
    assert last_event_id("-3") == 0


# --------------------------------------------------------------------------- live windows


def _frames(n: int, fps: float = 10.0, start: float = 0.0):
    import av

    for i in range(n):
        pixels = np.full((48, 64, 3), i % 256, np.uint8)
        yield start + i / fps, av.VideoFrame.from_ndarray(pixels, format="rgb24")


def test_live_windows_keep_only_the_newest_window_and_count_the_rest():
    from fbil.model.preprocess import PreprocessSpec
    from fbil.model.video.stream import LiveWindows

    spec = PreprocessSpec(num_frames=4, frame_interval=2, short_side=32)
    windows = LiveWindows(spec, 0.5, step_s=0.25, max_frames_per_gap=8, clock=lambda: 0.0)
    for t, frame in _frames(60):  # 6 s at 10 fps, nobody taking windows
        windows.push(t, frame)
    assert windows.made >= 10 and windows.dropped == windows.made - 1
    newest = next(windows)
    assert windows.taken.get_nowait() == (newest.clip.time, 0.0, 0.0)  # (time, arrivals)
    # keyframes every 0.5 s from the first whose clip starts at the first frame
    first = -(spec.sample_offsets()[0] - spec.frame_interval / spec.base_fps / 2)
    assert newest.clip.time == pytest.approx(first + 0.5 * (windows.made - 1))
    assert newest.clip.clip.shape[:2] == (3, 4)
    # detector frames since the keyframe before, at most 0.25 s apart, the last at the keyframe
    looked = [f.time for f in newest.frames]
    assert len(looked) == 2 and looked[-1] == pytest.approx(newest.clip.time, abs=0.05)
    windows.end()
    with pytest.raises(StopIteration):
        next(windows)


def test_live_windows_start_again_after_a_reconnect():
    from fbil.model.preprocess import PreprocessSpec
    from fbil.model.video.stream import LiveWindows

    spec = PreprocessSpec(num_frames=4, frame_interval=2, short_side=32)
    windows = LiveWindows(spec, 0.5)
    got = []
    for t, frame in _frames(12):
        windows.push(t, frame)
        if windows.made > len(got):
            got.append(next(windows).clip.time)
    windows.restart()  # the source came back 5 s later: keyframes anew from its first frame
    for t, frame in _frames(12, start=6.0):
        windows.push(t, frame)
        if windows.made > len(got):
            got.append(next(windows).clip.time)
    assert all(b > a for a, b in zip(got, got[1:], strict=False))
    resumed = [t for t in got if t > 6.0]
    assert resumed and resumed[0] - 6.0 == pytest.approx(got[0], abs=1e-6)
    windows.fail(RuntimeError("gone"))
    with pytest.raises(RuntimeError, match="gone"):
        next(windows)
