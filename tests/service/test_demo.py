"""fbil-demo against a fake loopback service returning a canned response."""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from synthetic_video import encode

from fbil.service.demo import PALETTE, label_positions, main, overlays

W, H, FRAMES = 160, 128, 60  # 2 s at 30 fps
GREY = 128
BOX = [20, 56, 90, 120]  # room above for the label
REQUEST = {
    "keyframes": [{"time": 1.0, "boxes": [{"box": BOX, "id": "p1"}]}],
    "box_format": "pixels",
}
RESPONSE = {
    "model": {"name": "fake", "version": "0", "backend": "none"},
    "video": {"width": W, "height": H, "fps": 30.0, "duration": 2.0},
    "keyframes": [
        {
            "time": 1.0,
            "actors": [
                {
                    "id": "p1",
                    "box": BOX,
                    "actions": [
                        {"id": 12, "name": "stand", "score": 0.91},
                        {"id": 80, "name": "watch (a person)", "score": 0.64},
                    ],
                }
            ],
        }
    ],
    "timing_ms": {"decode": 1.0, "queue": 0.0, "inference": 1.0, "total": 2.0},
}


class FakeService(BaseHTTPRequestHandler):
    """POST /detect: records the form, answers the canned response (or 422 on ``fail``)."""

    received: list[dict] = []
    fail = False

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        parts = {p.get_param("name", header="content-disposition"): p for p in message.iter_parts()}
        FakeService.received.append(
            {
                "path": self.path,
                "video": parts["video"].get_payload(decode=True),
                "request": json.loads(parts["request"].get_content()),
            }
        )
        status, answer = (200, RESPONSE)
        if FakeService.fail:
            status, answer = 422, {"error": {"code": "bad_box", "message": "box 0 is empty"}}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def service() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeService.received, FakeService.fail = [], False
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    images = [np.full((H, W, 3), GREY, np.uint8) for _ in range(FRAMES)]
    video = tmp_path / "in.mp4"
    video.write_bytes(encode([i * 1000 // 30 for i in range(FRAMES)], images=images))
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(REQUEST))
    return video, boxes


def _decoded(path: Path) -> list[tuple[float, np.ndarray]]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [(float(f.pts * s.time_base), f.to_ndarray(format="rgb24")) for f in c.decode(s)]


def test_renders_the_detections(service: str, inputs: tuple[Path, Path], tmp_path: Path) -> None:
    video, boxes = inputs
    out, sheet = tmp_path / "out.mp4", tmp_path / "sheet.png"
    argv = [str(video), "--boxes", str(boxes), "--out", str(out), "--contact-sheet", str(sheet)]
    assert main([*argv, "--url", service]) == 0
    (sent,) = FakeService.received
    assert sent["path"] == "/detect" and sent["request"] == REQUEST
    assert sent["video"] == video.read_bytes()
    frames = _decoded(out)
    assert len(frames) == FRAMES and frames[0][1].shape == (H, W, 3)
    colour = np.asarray(PALETTE[0], np.float32)
    x1, y1, x2, y2 = BOX
    for time, img in frames:
        edge = img[(y1 + y2) // 2, x1 : x1 + 2].astype(np.float32)  # left side of the box
        inside = img[y2 - 8, (x1 + x2) // 2].astype(np.float32)
        assert np.abs(inside - GREY).max() < 12  # the box is an outline
        if abs(time - 1.0) <= 0.45:
            assert np.abs(edge - colour).max(axis=1).min() < 40, time
        elif abs(time - 1.0) >= 0.55:
            assert np.abs(edge - GREY).max() < 12, time  # far from the keyframe: untouched
    label = frames[30][1][: y1 - 2, x1 : x1 + 40]  # the label sits above the box
    assert (np.abs(label.astype(np.float32) - colour).max(axis=-1) < 40).mean() > 0.3
    assert np.abs(frames[0][1][: y1 - 2, x1 : x1 + 40].astype(np.float32) - GREY).max() < 12
    with Image.open(sheet) as png:
        assert png.format == "PNG" and png.size == (W, H)
        tile = np.asarray(png.convert("RGB"), np.float32)
    assert np.abs(tile[(y1 + y2) // 2, x1] - colour).max() < 10


def test_service_errors_are_reported(
    service: str, inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    FakeService.fail = True
    video, boxes = inputs
    argv = [str(video), "--boxes", str(boxes), "--out", str(tmp_path / "o.mp4"), "--url", service]
    assert main(argv) == 1
    assert "422: bad_box: box 0 is empty" in capsys.readouterr().err
    assert main([*argv[:-2], "--url", "http://127.0.0.1:9"]) == 1  # nothing listens there
    # without --url a private fbil-serve starts; a missing model makes it exit: a clear error
    assert main([*argv[:-2], "--model", str(tmp_path / "missing.onnx")]) == 1
    assert "local fbil-serve exited" in capsys.readouterr().err


def test_normalized_boxes_are_scaled() -> None:
    response = json.loads(json.dumps(RESPONSE))
    response["keyframes"][0]["actors"][0]["box"] = [0.25, 0.5, 0.75, 1.0]
    (overlay,) = overlays(response, "normalized", W, H, top_k=1)
    assert overlay.boxes == ((40.0, 64.0, 120.0, 128.0),)
    assert overlay.labels == (("#p1", "stand 0.91"),)


def test_labels_of_neighbours_do_not_cover_each_other() -> None:
    """The README clip: two people side by side, one lying, one bowing (320x240), with
    labels of 4 lines; every label stays in the frame and none covers another."""
    boxes = [(77, 115, 104, 175), (56, 114, 83, 174), (107, 108, 202, 166), (227, 64, 249, 152)]
    sizes = [(130.0, 50.0)] * 4
    places = label_positions(boxes, sizes, 320, 240)
    rects = [(x, y, x + w, y + h) for (x, y), (w, h) in zip(places, sizes, strict=True)]
    for i, (x1, y1, x2, y2) in enumerate(rects):
        assert x1 >= 0 and y1 >= 0 and x2 <= 320 and y2 <= 240
        for a1, b1, a2, b2 in rects[i + 1 :]:
            assert min(x2, a2) <= max(x1, a1) or min(y2, b2) <= max(y1, b1), (rects, i)


def test_a_lone_label_sits_above_its_box() -> None:
    assert label_positions([(100, 120, 140, 200)], [(60.0, 30.0)], 320, 240) == [(100, 90)]
    # no room above: shifted into the frame, over the top of its own box
    assert label_positions([(100, 10, 140, 200)], [(60.0, 30.0)], 320, 240) == [(100, 0)]
    # ... unless that covers another person: then below
    two = label_positions([(100, 10, 140, 200), (90, 0, 170, 40)], [(60.0, 30.0)] * 2, 320, 240)
    assert two[0] == (100, 200)
