"""The metadata every artifact carries: where each format keeps it, and reading it back."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fbil import model
from fbil.model import artifact
from fbil.model.artifact import MetadataError


def as_read(doc: dict) -> dict:
    """``doc`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(doc))


@pytest.fixture(scope="module")
def meta() -> model.ModelMetadata:
    return model.ModelMetadata(config=model.FBILConfig.tiny(), name="tiny", version="7")


def test_safetensors_header_entry_is_the_compact_document(tmp_path: Path, meta):
    path = tmp_path / "m.safetensors"
    model.save_model(model.build_detector(meta.config), meta, path)
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
    # the on-disk format: one header entry "fbil", json.dumps of ModelMetadata.to_dict()
    assert header == {"fbil": json.dumps(meta.to_dict())}
    assert artifact.read_safetensors_document(path) == as_read(meta.to_dict())
    assert artifact.read_safetensors_metadata(path) == meta


def test_files_without_metadata_read_as_none(tmp_path: Path):
    torch_file = tmp_path / "w.pth"
    torch.save({"w": torch.zeros(2)}, torch_file)
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, str(bare))
    assert artifact.read_safetensors_metadata(torch_file) is None
    assert artifact.read_safetensors_metadata(bare) is None
    assert artifact.read_safetensors_metadata(tmp_path / "missing.safetensors") is None
    assert artifact.read_sidecar_document(tmp_path) is None
    assert artifact.document_from_extra_files({artifact.TORCHSCRIPT_FILE: ""}, "x.pt") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [("{not json", "not JSON"), ("[1, 2]", "not a JSON object"), ('{"format": "v0"}', "v0")],
)
def test_unreadable_metadata_is_a_metadata_error(tmp_path: Path, text: str, message: str):
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"fbil": text})
    with pytest.raises(MetadataError, match=message) as info:
        artifact.read_safetensors_metadata(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, model.ConfigError)  # what the CLIs report as a bad model


def test_writers_spell_the_format(tmp_path: Path, meta):
    extra = {"exporter": {"name": "fbil-export"}, "fp16": False}
    doc = {**meta.to_dict(), **extra}
    assert artifact.document(meta, extra) == doc
    assert artifact.onnx_metadata_props(meta, extra) == {
        "fbil": json.dumps(doc),
        "name": "tiny",
        "version": "7",
    }
    assert list(artifact.onnx_metadata_props(meta)) == ["fbil", "name", "version"]
    assert artifact.torchscript_extra_files(meta, extra) == {"fbil.json": json.dumps(doc)}
    path = artifact.write_sidecar(tmp_path, meta, extra)
    assert path == tmp_path / "model.json"
    assert path.read_text() == json.dumps(doc, indent=2) + "\n"
    assert artifact.read_sidecar_document(tmp_path) == as_read(doc)
    assert artifact.to_metadata(doc, path) == meta


def test_onnx_without_its_entry_is_described_by_the_sidecar(tmp_path: Path, meta):
    onnx_file = tmp_path / "model.onnx"
    assert artifact.onnx_document(onnx_file, {"name": "tiny"}) is None
    artifact.write_sidecar(tmp_path, meta, {"fp16": True})
    in_sidecar = as_read({**meta.to_dict(), "fp16": True})
    assert artifact.onnx_document(onnx_file, {"name": "tiny"}) == in_sidecar
    own = {"fbil": json.dumps(meta.to_dict())}
    assert artifact.onnx_document(onnx_file, own) == as_read(meta.to_dict())  # the entry wins


def test_bundled_demo_model_carries_the_same_metadata_in_both_places():
    demo = Path(str(resources.files("fbil.model").joinpath("data/demo")))
    in_onnx = artifact.read_onnx_document(demo / "model.onnx")
    in_sidecar = artifact.read_sidecar_document(demo)
    assert in_onnx is not None and in_onnx == in_sidecar
    metadata = artifact.to_metadata(in_onnx, demo / "model.onnx")
    assert metadata.demo and metadata.name == "fbil-demo-synthetic"
    assert len(metadata.labels) == 60 and metadata.preprocess.num_frames == 16


def test_bundled_demo_weights_are_those_of_the_onnx_model():
    """model.safetensors (fine-tuning starts from it: ``init_from: demo``) is what model.onnx
    was exported from: same metadata, same scores on a random clip."""
    from fbil.model.checkpoint import demo_weights_path
    from fbil.model.training.train_config import _init_from
    from fbil.service.runtimes import load_runtime

    assert _init_from("demo") == demo_weights_path()
    eager = load_runtime(demo_weights_path(), "eager", device="cpu")
    onnx = load_runtime(demo_weights_path().with_suffix(".onnx"), "onnx", device="cpu")
    ignore = {"source_sha256": None}
    assert eager.metadata.to_dict() | ignore == onnx.metadata.to_dict() | ignore
    spec = eager.metadata.preprocess
    generator = torch.Generator().manual_seed(0)
    clips = torch.randn((1, 3, spec.num_frames, spec.short_side, 160), generator=generator)
    rois = torch.tensor([[0, 0.1, 0.2, 0.5, 0.9], [0, 0.5, 0.1, 0.8, 0.7]])
    torch.testing.assert_close(
        onnx.predict(clips, rois), eager.predict(clips, rois), atol=1e-5, rtol=0
    )
