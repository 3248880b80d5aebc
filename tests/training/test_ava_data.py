"""Readers for the AVA formats, the frame layout and the restricted annotation-pickle loader."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from fbil.model.training.ava_data import (
    LAYOUT_IMAGE_06D,
    LAYOUT_IMG_05D,
    AnnotatedFrame,
    AvaFormatError,
    FrameKey,
    FrameLayout,
    PersonAnnotation,
    Proposal,
    PublishedBox,
    image_key,
    read_annotations_csv,
    read_exclusions,
    read_labelmap,
    read_proposals_csv,
    read_published_pickle,
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------
# label map


def test_read_labelmap_item_layout_of_the_fixture(ava_case1: Path) -> None:
    entries = read_labelmap(ava_case1 / "labelmap.pbtxt")
    assert [i for i, _ in entries] == [1, 8, 11, 12, 14, 17, 59, 74, 79, 80]
    assert entries[0] == (1, "bend/bow (at the waist)")
    assert entries[8] == (79, "talk to (e.g., self, a person, a group)")


def test_read_labelmap_official_label_layout(tmp_path: Path) -> None:
    text = (
        'label {\n  name: "bend/bow (at the waist)"\n  label_id: 1\n'
        "  label_type: PERSON_MOVEMENT\n}\n"
        'label {\n  name: "crouch/kneel"\n  label_id: 3\n  label_type: PERSON_MOVEMENT\n}\n'
    )
    assert read_labelmap(write(tmp_path, "l.pbtxt", text)) == [
        (1, "bend/bow (at the waist)"),
        (3, "crouch/kneel"),
    ]


def test_read_labelmap_crlf_and_only_two_space_lines(tmp_path: Path) -> None:
    text = 'item {\r\n  name: "a"\r\n  id: 4\r\n    id: 9\r\n}\r\n'  # 4-space line is ignored
    path = tmp_path / "l.pbtxt"
    path.write_bytes(text.encode())
    assert read_labelmap(path) == [(4, "a")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('item {\n    name: "a"\n    id: 1\n}\n', "no label map entries"),
        ("item {\n  name: a\n  id: 1\n}\n", "double quotes"),
        ('item {\n  name: "a"\n  id: one\n}\n', "bad class id"),
        ('item {\n  name: "a"\n  id: 0\n}\n', "start at 1"),
    ],
)
def test_read_labelmap_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(AvaFormatError, match=message):
        read_labelmap(write(tmp_path, "l.pbtxt", text))


# --------------------------------------------------------------------------------------------
# CSV readers


def test_image_key_pads_to_four_digits() -> None:
    assert image_key("v", "902") == image_key("v", "0902") == image_key("v", 902) == "v,0902"
    assert image_key("v", "1798") == "v,1798"


def test_read_annotations_csv_groups_persons_and_actions(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "train.csv",
        "b,0903,0.1,0.2,0.3,0.4,12,0\n"
        "a,0902,0.5,0.5,0.9,0.9,80,1\n"
        "a,902,0.1,0.2,0.3,0.4,17,0\n"
        "a,0902,0.1,0.2,0.3,0.4,11,0\n"
        "a,0902,0.5,0.5,0.9,0.9,17,1\n"
        "a,0902,0.1,0.2,0.3,0.4,11,0\n",
    )
    box0, box1 = (0.1, 0.2, 0.3, 0.4), (0.5, 0.5, 0.9, 0.9)
    assert read_annotations_csv(path) == [
        AnnotatedFrame(
            FrameKey("a", 902),
            (PersonAnnotation(box1, (17, 80), 1), PersonAnnotation(box0, (11, 17), 0)),
        ),
        AnnotatedFrame(FrameKey("b", 903), (PersonAnnotation(box0, (12,), 0),)),
    ]
    only_80 = read_annotations_csv(path, class_whitelist={80})
    assert only_80 == [AnnotatedFrame(FrameKey("a", 902), (PersonAnnotation(box1, (80,), 1),))]


def test_read_annotations_csv_without_person_id(tmp_path: Path) -> None:
    path = write(tmp_path, "gt.csv", "a,0902,0.1,0.2,0.3,0.4,12\na,0902,0.1,0.2,0.3,0.4,14\n")
    (frame,) = read_annotations_csv(path)
    assert frame.persons == (PersonAnnotation((0.1, 0.2, 0.3, 0.4), (12, 14), None),)


def test_read_annotations_csv_of_the_fixture(ava_case1: Path) -> None:
    frames = read_annotations_csv(ava_case1 / "groundtruth.csv")
    assert len(frames) == 24
    assert sum(len(a) for f in frames for a in (p.action_ids for p in f.persons)) == 123


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("video_id,timestamp,x1,y1,x2,y2,action_id,person_id\n", r":1: invalid literal"),
        ("a,0902,0.1,0.2,0.3,0.4\n", r":1: expected 7 or 8 columns, got 6"),
        ("a,0902,0.1,0.2,0.3,0.4,12,0\na,0902,0.1,x,0.3,0.4,12,0\n", r":2: could not convert"),
        ("a,0902,0.1,0.2,0.3,0.4,,0\n", r":1: missing action id"),
        ("a,0902,0.1,0.2,0.3,0.4,12,p0\n", r":1: expected an integer"),
    ],
)
def test_read_annotations_csv_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(AvaFormatError, match=message):
        read_annotations_csv(write(tmp_path, "gt.csv", text))


def test_read_exclusions(tmp_path: Path, ava_case1: Path) -> None:
    path = write(tmp_path, "ex.csv", "a,902\nb,1798\n\n")
    assert read_exclusions(path) == {"a,0902", "b,1798"}
    assert read_exclusions(ava_case1 / "exclusions.csv") == {"jGyul4Uy8PE,0903"}
    with pytest.raises(AvaFormatError, match=":1: expected 2 columns, got 3"):
        read_exclusions(write(tmp_path, "bad.csv", "a,902,1\n"))


def test_read_proposals_csv_thresholds_and_dedupes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "proposals.csv",
        "a,0902,0.1,0.2,0.3,0.4,,0.95\n"
        "a,0902,0.5,0.5,0.9,0.9,,0.80\n"
        "a,0902,0.6,0.6,0.7,0.7,,0.79\n"
        "b,0903,0.1,0.1,0.2,0.2,12,0.85\n"
        "b,0903,0.1,0.1,0.2,0.2,14,0.90\n",
    )
    assert read_proposals_csv(path, min_score=0.8) == {
        FrameKey("a", 902): [
            Proposal((0.1, 0.2, 0.3, 0.4), 0.95),
            Proposal((0.5, 0.5, 0.9, 0.9), 0.80),  # score == threshold is kept
        ],
        FrameKey("b", 903): [Proposal((0.1, 0.1, 0.2, 0.2), 0.90)],
    }
    assert len(read_proposals_csv(path)[FrameKey("a", 902)]) == 3


def test_read_proposals_csv_needs_a_score(tmp_path: Path) -> None:
    with pytest.raises(AvaFormatError, match="score in column 8"):
        read_proposals_csv(write(tmp_path, "p.csv", "a,0902,0.1,0.2,0.3,0.4,\n"))


def test_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_annotations_csv(tmp_path / "nope.csv")


# --------------------------------------------------------------------------------------------
# frame layout


@pytest.mark.parametrize(
    ("layout", "name_902", "name_1798"),
    [
        (LAYOUT_IMG_05D, "img_00061.jpg", "img_26941.jpg"),
        (LAYOUT_IMAGE_06D, "image_000061.jpg", "image_026941.jpg"),
        (FrameLayout(pattern="image_%06d.jpg"), "image_000061.jpg", "image_026941.jpg"),
    ],
)
def test_frame_layout_common_layouts(
    layout: FrameLayout, name_902: str, name_1798: str, tmp_path: Path
) -> None:
    assert layout.frame_index(900) == 1
    assert layout.frame_index(902) == 61
    assert layout.keyframe_path(tmp_path, "vid", 902) == tmp_path / "vid" / name_902
    assert layout.keyframe_path(tmp_path, "vid", 1798) == tmp_path / "vid" / name_1798


def test_frame_layout_settings() -> None:
    layout = FrameLayout(pattern="{:04d}.png", fps=25, first_timestamp=0, index_base=0)
    assert layout.frame_index(2) == 50
    assert layout.frame_index(2.2) == 55
    assert layout.file_name(7) == "0007.png"


@pytest.mark.parametrize("timestamp", [899, 902.01])
def test_frame_layout_rejects_timestamps_off_the_grid(timestamp: float) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        LAYOUT_IMG_05D.frame_index(timestamp)


@pytest.mark.parametrize("pattern", ["frames.jpg", "{name}.jpg", "%s/%d.jpg"])
def test_frame_layout_rejects_bad_patterns(pattern: str) -> None:
    with pytest.raises(ValueError, match="pattern"):
        FrameLayout(pattern=pattern)


# --------------------------------------------------------------------------------------------
# published annotation pickle


def published_payload(numpy_values: bool) -> tuple:
    box = np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32) if numpy_values else [0.1, 0.2, 0.3, 0.4]
    labels = [
        {"bounding_box": box, "label": [0, 5], "person_id": [3]},
        {"bounding_box": [0.5, 0.5, 0.9, 1.0], "label": np.int64(11), "person_id": 4},
        {"bounding_box": [0.0, 0.0, 0.2, 0.2], "label": []},
    ]
    record = {
        "video": "-5KQ66BBWC4",
        "time": 902,
        "start_frame": 46,
        "n_frames": 32,
        "format_str": "image_%06d.jpg",
        "labels": labels if numpy_values else labels[:1],
        "extra": {1, 2},
    }
    classes = [{"id": 1, "name": "bend/bow (at the waist)"}, {"id": 3, "name": "crouch/kneel"}]
    return [record], classes


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("numpy_values", [False, True])
def test_read_published_pickle(tmp_path: Path, protocol: int, numpy_values: bool) -> None:
    path = tmp_path / "ava_val.pkl"
    path.write_bytes(pickle.dumps(published_payload(numpy_values), protocol=protocol))
    result = read_published_pickle(path)
    assert result.classes == ((1, "bend/bow (at the waist)"), (3, "crouch/kneel"))
    (record,) = result.records
    assert (record.video, record.time, record.start_frame, record.n_frames) == (
        "-5KQ66BBWC4",
        902,
        46,
        32,
    )
    assert record.format_str == "image_%06d.jpg"
    first = record.boxes[0]
    assert first.box == pytest.approx((0.1, 0.2, 0.3, 0.4))
    assert (first.labels, first.person_ids) == ((0, 5), (3,))
    if numpy_values:
        assert record.boxes[1:] == (
            PublishedBox((0.5, 0.5, 0.9, 1.0), (11,), (4,)),
            PublishedBox((0.0, 0.0, 0.2, 0.2), (), ()),
        )
        assert all(type(v) is float for v in first.box)


def test_read_published_pickle_with_class_dict(tmp_path: Path) -> None:
    records, _ = published_payload(False)
    path = tmp_path / "a.pkl"
    path.write_bytes(pickle.dumps((records, {1: {"id": 80}, 0: {"id": 79, "name": "talk"}})))
    assert read_published_pickle(path).classes == ((79, "talk"), (80, ""))


class _Exploit:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_read_published_pickle_rejects_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    records, classes = published_payload(False)
    records[0]["video"] = _Exploit(marker)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps((records, classes)))
    with pytest.raises(AvaFormatError, match=r"refusing to load global (posix|nt|os)\.system"):
        read_published_pickle(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"cbuiltins\neval\n(S'1+1'\ntR.",
        pickle.dumps(Path("x")),
        pickle.dumps(np.array([1, Path("y")], dtype=object)),  # array contents stay restricted
    ],
)
def test_read_published_pickle_rejects_other_globals(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(payload)
    with pytest.raises(AvaFormatError, match="refusing to load global"):
        read_published_pickle(path)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"data": []}, "expected a pair"),
        (([{"video": "v"}], []), "malformed"),
        (([], [{"name": "no id"}]), "malformed"),
    ],
)
def test_read_published_pickle_bad_structure(tmp_path: Path, obj: object, message: str) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(AvaFormatError, match=message):
        read_published_pickle(path)


def test_read_published_pickle_truncated(tmp_path: Path) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(published_payload(False))[:20])
    with pytest.raises(AvaFormatError, match="truncated"):
        read_published_pickle(path)
