"""Loading published and our own weights; clear errors for files that do not fit."""

from __future__ import annotations

import dataclasses
import os
import pickle

import pytest
import torch

from fbil import model
from fbil.model.artifact import read_safetensors_metadata
from fbil.model.checkpoint import CheckpointError, remap_keys


def tiny_config() -> model.FBILConfig:
    return model.FBILConfig.tiny()


def test_remap_table():
    state = {
        "module.backbone.module.slow_conv1.weight": 1,
        "module.head.module.fc.weight": 2,
        "module.other": 3,
        "plain": 4,
    }
    assert remap_keys(state) == {
        "backbone.slow_conv1.weight": 1,
        "head.fc.weight": 2,
        "other": 3,
        "plain": 4,
    }


def test_published_checkpoint_wrong_config_lists_mismatches(reference):
    config = model.load_config(reference("parity_tiny", "config.yaml"))
    head = dataclasses.replace(config.head, reduce_dim=32)
    det = model.build_detector(dataclasses.replace(config, head=head))
    with pytest.raises(CheckpointError, match="mis-shaped keys") as err:
        model.load_checkpoint(det, reference("parity_tiny", "checkpoint.pth.tar"))
    assert "head.conv_reduce.weight" in str(err.value)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    det = model.build_detector(tiny_config())
    state = {f"module.{k}": v for k, v in det.state_dict().items()}
    del state["module.head.fc.weight"]
    state["module.head.extra.weight"] = torch.zeros(1)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as err:
        model.load_checkpoint(model.build_detector(tiny_config()), path)
    assert "missing keys (1): head.fc.weight" in str(err.value)
    assert "unexpected keys (1): head.extra.weight" in str(err.value)


def test_pickle_with_objects_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": Evil()}, path)  # protocol 2: a GLOBAL os.system opcode
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        model.load_checkpoint(model.build_detector(tiny_config()), path)
    raw = tmp_path / "evil4.pkl"
    with open(raw, "wb") as f:
        pickle.dump({"state_dict": Evil()}, f, protocol=4)
    with pytest.raises(CheckpointError):
        model.load_checkpoint(model.build_detector(tiny_config()), raw)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        model.load_checkpoint(model.build_detector(tiny_config()), path)
    with pytest.raises(CheckpointError, match="does not exist"):
        model.load_checkpoint(model.build_detector(tiny_config()), tmp_path / "nope.pth")
    bad = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], bad)
    with pytest.raises(CheckpointError, match="no state dict"):
        model.load_checkpoint(model.build_detector(tiny_config()), bad)


def test_backbone_pretrain_loads_backbone_only(tmp_path):
    src = model.build_detector(tiny_config())
    state = dict(src.backbone.state_dict())
    state["fc.weight"] = torch.zeros(3, 3)  # classifier of the pretrain task: ignored
    path = tmp_path / "k700.pth.tar"
    torch.save({"state_dict": state}, path)
    det = model.build_detector(tiny_config())
    head_before = {k: v.clone() for k, v in det.head.state_dict().items()}
    info = model.load_checkpoint(det, path)
    assert info.kind == "backbone"
    assert info.ignored_keys == ("fc.weight",)
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(det.backbone.state_dict()[k], v)
    for k, v in det.head.state_dict().items():
        assert torch.equal(head_before[k], v)


def test_backbone_pretrain_missing_key_is_an_error(tmp_path):
    state = dict(model.build_detector(tiny_config()).backbone.state_dict())
    del state["Tconv1.weight"]
    path = tmp_path / "k700.pth.tar"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="Tconv1.weight"):
        model.load_checkpoint(model.build_detector(tiny_config()), path)


def test_own_format_roundtrip_embeds_everything(tmp_path, reference, parity_inputs, parity_outputs):
    det, meta = model.load_model(
        reference("parity_tiny", "checkpoint.pth.tar"), reference("parity_tiny", "config.yaml")
    )
    assert meta.source_sha256 and len(meta.source_sha256) == 64
    path = tmp_path / "model.safetensors"
    model.save_model(det, meta, path)
    assert read_safetensors_metadata(path) == meta
    det2, meta2 = model.load_model(path)  # no config needed: one file is enough
    assert meta2 == meta
    assert meta2.preprocess.num_frames == 32 and meta2.preprocess.short_side == 256
    with torch.inference_mode():
        logits = det2(parity_inputs["clips"], parity_inputs["rois"])
    assert (logits - parity_outputs["logits"]).abs().max() < 1e-4


def test_a_file_that_is_no_checkpoint_says_so_not_that_it_lacks_a_config(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    junk, evil, evil4 = tmp_path / "junk.pt", tmp_path / "evil.pt", tmp_path / "evil4.pt"
    junk.write_bytes(b"not a checkpoint at all")
    torch.save({"state_dict": Evil()}, evil)
    evil4.write_bytes(pickle.dumps(Evil(), protocol=4))
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as err:
        model.load_model(junk)
    assert "embeds no config" not in str(err.value)
    for path, refused in ((evil, "GLOBAL posix.system"), (evil4, "Unsupported operand")):
        with pytest.raises(CheckpointError, match="refusing to unpickle") as err:
            model.load_model(path)
        message = str(err.value)
        assert "not a checkpoint of plain weights" in message and refused in message
        assert "weights_only` set to `False`" not in message  # torch's advice to load unsafely


def test_published_checkpoint_needs_a_config(reference):
    with pytest.raises(CheckpointError, match="embeds no config"):
        model.load_model(reference("parity_tiny", "checkpoint.pth.tar"))
