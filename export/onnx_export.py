"""ONNX export with dynamic batch, actor count, frame count and frame size."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch.export import Dim

from fbil.export.wrapper import INPUT_NAMES, OUTPUT_NAMES, ExportedDetector, example_inputs
from fbil.model import artifact
from fbil.model.detector import FBILDetector
from fbil.model.metadata import ModelMetadata

DEFAULT_OPSET = 18


def _dynamic_shapes(alpha: int) -> dict[str, dict[int, Any]]:
    return {
        "clips": {
            0: Dim("batch", min=1, max=256),
            2: alpha * Dim("frames_div_alpha", min=1, max=1024),
            3: Dim("height", min=16, max=8192),
            4: Dim("width", min=16, max=8192),
        },
        "rois": {0: Dim("num_rois", min=1, max=4096)},
    }


def _export(module: torch.nn.Module, args: tuple, metadata: ModelMetadata, opset: int):  # type: ignore[no-untyped-def]
    return torch.onnx.export(
        module,
        args,
        input_names=list(INPUT_NAMES),
        output_names=list(OUTPUT_NAMES),
        dynamic_shapes=_dynamic_shapes(metadata.config.backbone.alpha),
        opset_version=opset,
        dynamo=True,
        external_data=False,
        verbose=False,
    )


def export_onnx(
    detector: FBILDetector,
    metadata: ModelMetadata,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    extra_metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``path`` (a single self-contained .onnx file) and return it.

    Inputs ``clips`` float32 ``(B,3,T,H,W)`` and ``rois`` float32 ``(N,5)``; outputs ``logits``
    and ``scores`` ``(N,C)``; any H, W >= 16; T a multiple of alpha. The model's
    metadata (with ``extra_metadata``) goes into ``metadata_props`` (:mod:`fbil.model.artifact`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = ExportedDetector(detector, fp16=fp16).eval()
    args = example_inputs(metadata.preprocess.num_frames)
    with warnings.catch_warnings():
        # torchvision's adaptive sampling_ratio=-1 is ONNX's 0 (adaptive): the same numbers,
        # tested in tests/export/test_roi_align_onnx.py
        warnings.filterwarnings("ignore", message=".*RoIAlign with a non-zero sampling_ratio")
        program = _export(module, args, metadata, opset)
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    proto = program.model_proto
    _strip_debug_metadata(proto)
    for key, value in artifact.onnx_metadata_props(metadata, extra_metadata).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "fbil-export"
    onnx.save_model(proto, str(path))
    return path


def _strip_debug_metadata(proto: onnx.ModelProto) -> None:
    """Drop the exporter's per-node debug records (FX node text, module scopes, stack traces
    with this machine's absolute source paths): the same weights then export to the same bytes
    wherever the repository is checked out, and the artifact leaks no local paths."""
    graphs = [proto.graph, *proto.functions]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            del node.metadata_props[:]
            for attr in node.attribute:
                graphs += [attr.g] if attr.HasField("g") else []
                graphs += list(attr.graphs)
