"""Exported parity_tiny artifacts reproduce the published outputs and the eager model."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from fbil import model
from fbil.export import check
from fbil.model import artifact

TOL = 1e-4


@pytest.fixture(scope="module")
def stored(reference):
    inputs = torch.load(reference("parity_tiny", "inputs.pt"), weights_only=True)
    outputs = torch.load(reference("parity_tiny", "outputs.pt"), weights_only=True)
    return inputs, outputs


@pytest.fixture(scope="module")
def eager(reference):
    det, _ = model.load_model(
        reference("parity_tiny", "checkpoint.pth.tar"), reference("parity_tiny", "config.yaml")
    )
    return det


def test_onnx_reproduces_stored_outputs(parity_artifacts, stored):
    inputs, outputs = stored
    logits, scores = check.onnx_runner(parity_artifacts / "model.onnx")(
        inputs["clips"], inputs["rois"]
    )
    assert np.abs(logits - outputs["logits"].numpy()).max() < TOL
    assert np.abs(scores - outputs["scores"].numpy()).max() < TOL


def test_torchscript_reproduces_stored_outputs(parity_artifacts, stored):
    inputs, outputs = stored
    logits, scores = check.torchscript_runner(parity_artifacts / "model.torchscript.pt")(
        inputs["clips"], inputs["rois"]
    )
    assert np.abs(logits - outputs["logits"].numpy()).max() < TOL
    assert np.abs(scores - outputs["scores"].numpy()).max() < TOL


def test_one_onnx_file_serves_any_actor_count_and_size(parity_artifacts, eager):
    results = check.compare(
        eager,
        check.onnx_runner(parity_artifacts / "model.onnx"),
        num_frames=16,
        actor_counts=(1, 2, 5, 16),
        sizes=((128, 160), (96, 171)),
        seed=3,
    )
    assert len(results) == 8
    assert max(r.logits_diff for r in results) < TOL


def test_check_detects_a_wrong_artifact(parity_artifacts, eager):
    run = check.onnx_runner(parity_artifacts / "model.onnx")

    def off_by_a_bit(clips, rois):
        logits, scores = run(clips, rois)
        return logits + 1e-3, scores

    with pytest.raises(check.CheckFailed, match="exceeds"):
        check.compare(eager, off_by_a_bit, num_frames=16, actor_counts=(1,), sizes=((64, 64),))


def test_metadata_everywhere(parity_artifacts, reference):
    onnx_meta = artifact.read_onnx_document(parity_artifacts / "model.onnx")
    ts_meta = artifact.read_torchscript_document(parity_artifacts / "model.torchscript.pt")
    sidecar = json.loads((parity_artifacts / "model.json").read_text())
    for doc in (onnx_meta, ts_meta, sidecar):
        assert doc is not None
        meta = model.ModelMetadata.from_dict(doc)  # enough to serve: config, labels, preprocess
        assert len(meta.labels) == 60 and meta.labels[0].name == "bend/bow (at the waist)"
        assert meta.preprocess.num_frames == 32 and meta.preprocess.short_side == 256
        assert doc["source_sha256"] == model.checkpoint.sha256_file(
            reference("parity_tiny", "checkpoint.pth.tar")
        )
        assert doc["exporter"]["name"] == "fbil-export"
    assert onnx_meta == sidecar == ts_meta


def test_torchscript_runs_without_this_repo(parity_artifacts, stored, reference):
    """A fresh interpreter that cannot import fbil still runs the file."""
    inputs, outputs = stored
    code = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "fbil":
                    raise ImportError("repo import blocked: " + name)
        sys.meta_path.insert(0, Block())
        import torch, torchvision  # torchvision registers roi_align
        m = torch.jit.load({str(parity_artifacts / "model.torchscript.pt")!r})
        inp = torch.load({str(reference("parity_tiny", "inputs.pt"))!r}, weights_only=True)
        logits, scores = m(inp["clips"], inp["rois"])
        torch.save(logits, sys.argv[1])
        """
    )
    out = parity_artifacts / "isolated_logits.pt"
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, cwd="/")
    logits = torch.load(out, weights_only=True)
    assert (logits - outputs["logits"]).abs().max() < TOL


def test_artifacts_carry_no_build_machine_paths(parity_artifacts):
    """No absolute path of this checkout (the exporter's per-node stack traces) in the ONNX
    file: exports are reproducible across machines and leak nothing local."""
    checkout = str(Path(model.__file__).resolve().parents[1]).encode()
    data = (parity_artifacts / "model.onnx").read_bytes()
    assert checkout not in data
    assert b"pkg.torch.onnx.stack_trace" not in data
