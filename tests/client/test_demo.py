"""fbil-demo against a fake loopback service returning a canned response."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from fbil.client import DetectResult, demo
from fbil.client.demo import PALETTE, label_positions, main, overlays
from tests.support.fake_service import FakeService
from tests.support.synthetic_video import BITS, encode, index_image

W, H, FRAMES = 160, 128, 60  # 2 s at 30 fps
GREY = 128
BOX = [20, 56, 90, 120]  # room above for the label
REQUEST = {
    "keyframes": [{"time": 1.0, "boxes": [{"box": BOX, "id": "p1"}]}],
    "box_format": "pixels",
}


def response(width: int = W, height: int = H, box: Sequence[float] = BOX) -> dict:
    return {
        "model": {"name": "fake", "version": "0", "backend": "none"},
        "video": {"width": width, "height": height, "fps": 30.0, "duration": 2.0},
        "keyframes": [
            {
                "time": 1.0,
                "actors": [
                    {
                        "id": "p1",
                        "box": list(box),
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


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    images = [np.full((H, W, 3), GREY, np.uint8) for _ in range(FRAMES)]
    video = tmp_path / "in.mp4"
    video.write_bytes(encode([i * 1000 // 30 for i in range(FRAMES)], images=images))
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(REQUEST))
    return video, boxes


def _decoded(path: Path) -> list[tuple[float, np.ndarray, int]]:
    """(time, RGB as coded, display rotation) of every frame."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [
            (float(f.pts * s.time_base), f.to_ndarray(format="rgb24"), f.rotation)
            for f in c.decode(s)
        ]


def _near(img: np.ndarray, colour: Sequence[int], tolerance: float) -> np.ndarray:
    """Per pixel: within ``tolerance`` of ``colour`` on every channel."""
    return np.abs(img.astype(np.float32) - np.asarray(colour, np.float32)).max(axis=-1) < tolerance


def _red(img: np.ndarray) -> np.ndarray:
    """Per pixel: clearly red (PALETTE[0]) on a grey, black or white background; h264 blurs a
    2-pixel line between black and white bars too much for a distance to its colour."""
    rgb = img.astype(np.int16)
    return rgb[..., 0] - np.maximum(rgb[..., 1], rgb[..., 2]) > 60


# ---- tests ------------------------------------------------------------------------------------


def test_renders_the_detections(fake: FakeService, inputs: tuple[Path, Path], tmp_path: Path):
    fake.answer("/detect", 200, response())
    video, boxes = inputs
    out, sheet = tmp_path / "out.mp4", tmp_path / "sheet.png"
    argv = [str(video), "--boxes", str(boxes), "--out", str(out), "--contact-sheet", str(sheet)]
    assert main([*argv, "--url", fake.url]) == 0
    (sent,) = fake.received
    assert sent.path == "/detect" and sent.request_json() == REQUEST
    assert sent.parts["video"][2] == video.read_bytes()
    frames = _decoded(out)
    assert len(frames) == FRAMES and frames[0][1].shape == (H, W, 3)
    with av.open(str(out)) as container:  # encoded without x264/x265 (GPL)
        assert [s.codec_context.name for s in container.streams] == ["vp9"]
        assert "mp4" in container.format.name
    colour = np.asarray(PALETTE[0], np.float32)
    x1, y1, x2, y2 = BOX
    for time, img, _ in frames:
        edge = img[(y1 + y2) // 2, x1 : x1 + 2].astype(np.float32)  # left side of the box
        inside = img[y2 - 8, (x1 + x2) // 2].astype(np.float32)
        assert np.abs(inside - GREY).max() < 12  # the box is an outline
        if abs(time - 1.0) <= 0.45:
            assert np.abs(edge - colour).max(axis=1).min() < 40, time
        elif abs(time - 1.0) >= 0.55:
            assert np.abs(edge - GREY).max() < 12, time  # far from the keyframe: untouched
    label = frames[30][1][: y1 - 2, x1 : x1 + 40]  # the label sits above the box
    assert _near(label, colour, 40).mean() > 0.3
    assert np.abs(frames[0][1][: y1 - 2, x1 : x1 + 40].astype(np.float32) - GREY).max() < 12
    with Image.open(sheet) as png:
        assert png.format == "PNG" and png.size == (W, H)
        tile = np.asarray(png.convert("RGB"), np.float32)
    assert np.abs(tile[(y1 + y2) // 2, x1] - colour).max() < 10


def _index(coded: np.ndarray) -> int:
    """The index an :func:`index_image` shows (its bars read at their centres)."""
    gray = coded.astype(np.float32).mean(-1)
    centres = [int((b + 0.5) * coded.shape[1] / BITS) for b in range(BITS)]
    return sum(1 << b for b, c in enumerate(centres) if gray[:, c].mean() > 128)


def test_a_rotated_video_is_drawn_and_written_as_displayed(fake: FakeService, tmp_path: Path):
    """A phone video: frames coded 160x96 with a 90 degree display rotation show 96x160.

    The boxes (displayed coordinates) are drawn on the displayed frames, and the output holds
    those frames upright, with no rotation of its own: played back, it looks like the input.
    """
    coded = [index_image(i) for i in range(FRAMES)]  # 160x96
    video = tmp_path / "phone.mp4"
    video.write_bytes(encode([i * 1000 // 30 for i in range(FRAMES)], images=coded, rotation=90))
    assert {rotation for _, _, rotation in _decoded(video)} == {90}
    width, height = 96, 160  # displayed
    box = [20, 80, 70, 150]  # on the displayed frame; x 20..70 would not fit the coded 96 rows
    fake.answer("/detect", 200, response(width, height, box))
    request = tmp_path / "boxes.json"
    request.write_text(json.dumps({"keyframes": [{"time": 1.0, "boxes": [{"box": box}]}]}))
    out, sheet = tmp_path / "out.mkv", tmp_path / "sheet.png"
    argv = [str(video), "--boxes", str(request), "--out", str(out), "--contact-sheet", str(sheet)]
    assert main([*argv, "--url", fake.url]) == 0

    frames = _decoded(out)
    assert len(frames) == FRAMES
    assert {img.shape for _, img, _ in frames} == {(height, width, 3)}
    assert {rotation for _, _, rotation in frames} == {0}, "the output carries no rotation"
    x1, y1, x2, y2 = box
    far = 0
    for i, (time, img, _) in enumerate(frames):
        if abs(time - 1.0) >= 0.55:
            # undrawn frames are the input's displayed frames, in order: rotating them back
            # by 90 degrees clockwise gives the coded frame i
            assert _index(np.rot90(img, -1)) == i, time
            far += 1
        elif abs(time - 1.0) <= 0.45:
            row = img[(y1 + y2) // 2]
            assert _red(row[x1 : x1 + 2]).any() and _red(row[x2 - 1 : x2 + 1]).any(), time
            assert not _red(row[: x1 - 4]).any() and not _red(row[x1 + 6 : x2 - 6]).any(), time
            column = img[:, (x1 + x2) // 2]
            assert _red(column[y1 : y1 + 2]).any() and _red(column[y2 - 1 : y2 + 1]).any(), time
            assert not _red(column[y2 + 4 :]).any(), time
    assert far >= 20
    with Image.open(sheet) as png:
        assert png.size == (width, height)
        tile = np.asarray(png.convert("RGB"))
    assert _near(tile[(y1 + y2) // 2, x1 : x1 + 2], PALETTE[0], 10).all()
    assert _near(tile[y1 : y1 + 2, (x1 + x2) // 2], PALETTE[0], 10).all()


def test_service_errors_are_reported(
    fake: FakeService, inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
):
    fake.answer("/detect", 422, {"error": {"code": "bad_box", "message": "box 0 is empty"}})
    video, boxes = inputs
    argv = [str(video), "--boxes", str(boxes), "--out", str(tmp_path / "o.mp4"), "--url", fake.url]
    assert main(argv) == 1
    assert capsys.readouterr().err == "fbil-demo: error: HTTP 422 bad_box: box 0 is empty\n"
    assert main([*argv[:-2], "--url", "http://127.0.0.1:9"]) == 1  # nothing listens there
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err
    # without --url a private fbil-serve starts; a missing model makes it exit: a clear error
    assert main([*argv[:-2], "--model", str(tmp_path / "missing.onnx")]) == 1
    err = capsys.readouterr().err
    assert "local fbil-serve exited with code 2" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("out", "sheet", "message"),
    [
        ("out.gif", None, "unsupported video format '.gif'"),
        ("out", None, "unsupported video format '(no suffix)'"),
        ("no/such/folder/out.mp4", None, "cannot write"),
        ("folder.mp4", None, "cannot write"),  # a folder of that name
        ("out.mp4", "sheet.jpg", "the contact sheet is a PNG"),
        ("out.mp4", "no/such/folder/sheet.png", "cannot write"),
    ],
)
def test_bad_outputs_fail_before_anything_is_sent(
    fake: FakeService,
    inputs: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    out: str,
    sheet: str | None,
    message: str,
):
    def no_service(*args: object, **kwargs: object):
        raise AssertionError("a local service was started")

    monkeypatch.setattr(demo, "local_service", no_service)
    (tmp_path / "folder.mp4").mkdir()
    existing = tmp_path / "out.mp4"
    existing.write_bytes(b"an older result")
    video, boxes = inputs
    argv = [str(video), "--boxes", str(boxes), "--out", str(tmp_path / out)]
    if sheet:
        argv += ["--contact-sheet", str(tmp_path / sheet)]
    for where in (["--url", fake.url], []):  # a running service, or a private one
        assert main(argv + where) == 2
        err = capsys.readouterr().err
        assert err.startswith("fbil-demo: error: ") and err.count("\n") == 1, err
        assert message in err
    assert fake.received == []
    assert existing.read_bytes() == b"an older result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boxes.json", "folder.mp4", "in.mp4",
                                                          "out.mp4"]  # fmt: skip


def test_the_command_line_error_is_one_line_without_traceback(
    inputs: tuple[Path, Path], tmp_path: Path
):
    video, boxes = inputs
    argv = [str(video), "--boxes", str(boxes), "--out", str(tmp_path / "out.webm")]
    done = subprocess.run(
        [sys.executable, "-m", "fbil.client.demo", *argv, "--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"fbil-demo: error: {tmp_path / 'out.webm'}: unsupported video format '.webm'; "
        "use .mp4, .m4v, .mov, .mkv, .avi"
    ]


def test_normalized_boxes_are_scaled() -> None:
    document = response()
    document["keyframes"][0]["actors"][0]["box"] = [0.25, 0.5, 0.75, 1.0]
    (overlay,) = overlays(DetectResult.from_json(document), "normalized", W, H, top_k=1)
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


def test_without_boxes_asks_for_detected_people_and_colours_them_by_track(
    fake: FakeService, inputs: tuple[Path, Path], tmp_path: Path
):
    """No --boxes: the request asks for keyframes every --keyframe-interval seconds; a person
    is drawn in its track's colour (track 2: PALETTE[1]), whatever its place on the keyframe."""
    document = response()
    document["keyframes"][0]["actors"][0].update(
        {"id": 2, "source": "detector", "detection_score": 0.9, "track_id": 2}
    )
    fake.answer("/detect", 200, document)
    video, _ = inputs
    sheet = tmp_path / "sheet.png"
    argv = [str(video), "--out", str(tmp_path / "out.mp4"), "--contact-sheet", str(sheet)]
    assert main([*argv, "--url", fake.url, "--keyframe-interval", "0.5"]) == 0
    (sent,) = fake.received
    assert sent.request_json() == {"keyframe_interval": 0.5, "box_format": "pixels"}
    with Image.open(sheet) as png:
        tile = np.asarray(png.convert("RGB"), np.float32)
    x1, y1, x2, y2 = BOX
    assert np.abs(tile[(y1 + y2) // 2, x1] - np.asarray(PALETTE[1], np.float32)).max() < 10
    (overlay,) = overlays(DetectResult.from_json(document), "pixels", W, H)
    assert overlay.labels[0][0] == "#2"
