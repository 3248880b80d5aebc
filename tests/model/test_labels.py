"""Label maps as data: the built-in AVA lists, label map files, and fine-tuning initialisation."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fbil.model import ModelMetadata, build_detector, save_model
from fbil.model.checkpoint import (
    CLASS_DEPENDENT_PREFIXES,
    CheckpointError,
    init_from_checkpoint,
)
from fbil.model.config import FBILConfig
from fbil.model.labels import (
    OTHER_TYPE,
    POSE_TYPE,
    LabelMapError,
    ava_v22,
    ava_v22_actions,
    default_labels,
    read_label_map,
)

TINY = FBILConfig.tiny()


def with_classes(config: FBILConfig, n: int) -> FBILConfig:
    return replace(config, head=replace(config.head, num_classes=n))


def test_the_80_actions_hold_the_60_evaluated_ones_with_pose_classes_first() -> None:
    actions = ava_v22_actions()
    assert actions.ids == list(range(1, 81))
    by_id = {c.id: c for c in actions}
    assert all(by_id[c.id] == c for c in ava_v22())  # same id, name and type
    assert len(ava_v22()) == 60
    assert actions.num_pose == 14
    assert [c.type == POSE_TYPE for c in actions] == [True] * 14 + [False] * 66
    assert by_id[2].name == "crawl" and by_id[75].name == "play with kids"
    assert {c.type for c in actions[14:]} == {"OBJECT_MANIPULATION", "PERSON_INTERACTION"}


def test_built_in_map_by_class_count_and_one_line_naming_the_option() -> None:
    assert default_labels(60) == ava_v22()
    assert default_labels(80) == ava_v22_actions()
    assert ModelMetadata(config=with_classes(TINY, 80)).labels == ava_v22_actions()
    with pytest.raises(LabelMapError, match="42 classes.*--labelmap FILE") as e:
        default_labels(42, "--labelmap FILE")
    assert "\n" not in str(e.value)


def test_pbtxt_layouts_and_json(tmp_path: Path) -> None:
    label = tmp_path / "label.pbtxt"
    label.write_text(
        'label {\n  name: "slip"\n  label_id: 5\n  label_type: PERSON_MOVEMENT\n}\n'
        'label { name: "brawl" label_id: 64 label_type: PERSON_INTERACTION }\n'
    )
    assert read_label_map(label).to_list() == [
        {"id": 5, "name": "slip", "type": POSE_TYPE},
        {"id": 64, "name": "brawl", "type": "PERSON_INTERACTION"},
    ]
    item = tmp_path / "item.pbtxt"  # the official evaluation layout carries no types
    item.write_text('item {\n  name: "walk"\n  id: 14\n}\nitem {\n  name: "smoking"\n  id: 3\n}\n')
    rows = read_label_map(item).to_list()
    assert [(r["id"], r["type"]) for r in rows] == [(14, POSE_TYPE), (3, OTHER_TYPE)]
    doc = tmp_path / "classes.json"
    doc.write_text(json.dumps({"classes": [{"id": 1, "name": "a", "type": "X"}]}))
    assert read_label_map(doc).to_list() == [{"id": 1, "name": "a", "type": "X"}]
    doc.write_text(json.dumps([{"id": 7, "name": "b"}]))
    assert read_label_map(doc).to_list() == [{"id": 7, "name": "b", "type": OTHER_TYPE}]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('item {\n  name: "run/jog"\n  id: 10\n}\nitem {\n  name: "walk"\n  id: 14\n}\n'
         'item {\n  name: "a"\n  id: 90\n}\nitem {\n  name: "sit"\n  id: 11\n}\n',
         "pose .* must come first"),
        ('item {\n  name: "a"\n  id: 2\n}\nitem {\n  name: "b"\n  id: 2\n}\n', "duplicate"),
        ("nothing here\n", "no label map entries"),
        ('item {\n  name: "a"\n}\n', "lacks a name or an id"),
    ],
)  # fmt: skip
def test_bad_label_maps_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.pbtxt"
    path.write_text(text)
    with pytest.raises(LabelMapError, match=message) as e:
        read_label_map(path)
    assert str(path) in str(e.value)


def test_only_the_classifier_depends_on_the_class_count() -> None:
    a = build_detector(TINY).state_dict()
    b = build_detector(with_classes(TINY, 4)).state_dict()
    assert a.keys() == b.keys()
    differ = [k for k in a if a[k].shape != b[k].shape]
    assert differ and all(k.startswith(CLASS_DEPENDENT_PREFIXES) for k in differ)
    assert all(k in differ for k in a if k.startswith(CLASS_DEPENDENT_PREFIXES))


def test_init_from_a_60_class_model_keeps_all_but_the_classifier(tmp_path: Path) -> None:
    torch.manual_seed(0)
    start = build_detector(TINY)
    path = tmp_path / "start.safetensors"
    save_model(start, ModelMetadata(config=TINY), path)
    torch.manual_seed(1)
    target = build_detector(with_classes(TINY, 4))
    fresh_fc = target.head.fc.weight.detach().clone()
    report = init_from_checkpoint(target, path)
    assert report.kind == "fbil"
    assert report.reinitialised == ("head.fc.weight",)
    old, new = start.state_dict(), target.state_dict()
    assert all(torch.equal(old[k], new[k]) for k in new if k != "head.fc.weight")
    assert torch.equal(new["head.fc.weight"], fresh_fc)

    # same size, other classes: the classifier is fresh too
    torch.manual_seed(2)
    same = build_detector(TINY)
    fc = same.head.fc.weight.detach().clone()
    report = init_from_checkpoint(same, path, new_classes=True)
    assert report.reinitialised == ("head.fc.weight",)
    assert torch.equal(same.head.fc.weight, fc)


def test_init_from_a_bare_backbone_and_refusal_of_other_architectures(tmp_path: Path) -> None:
    start = build_detector(TINY)
    backbone = tmp_path / "backbone.pth"
    torch.save(start.backbone.state_dict(), backbone)
    target = build_detector(with_classes(TINY, 4))
    report = init_from_checkpoint(target, backbone)
    assert report.kind == "backbone"
    assert all(k.startswith("head.") for k in report.reinitialised)
    assert "head.fc.weight" in report.reinitialised
    assert all(
        torch.equal(v, target.backbone.state_dict()[k])
        for k, v in start.backbone.state_dict().items()
    )

    wider = build_detector(FBILConfig.tiny(reduce_dim=32))
    path = tmp_path / "wider.safetensors"
    save_model(wider, ModelMetadata(config=FBILConfig.tiny(reduce_dim=32)), path)
    with pytest.raises(CheckpointError, match="(?s)beyond its classifier.*mis-shaped keys"):
        init_from_checkpoint(build_detector(TINY), path)
