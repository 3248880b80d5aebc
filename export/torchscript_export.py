"""TorchScript export: a file that ``torch.jit.load`` runs without this repository."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from fbil.export.wrapper import ExportedDetector, example_inputs
from fbil.model.detector import FBILDetector
from fbil.model.metadata import ModelMetadata

METADATA_FILE = "fbil.json"


def export_torchscript(
    detector: FBILDetector,
    metadata: ModelMetadata,
    path: str | Path,
    *,
    fp16: bool = False,
    extra_metadata: dict[str, Any] | None = None,
) -> Path:
    """Trace ``forward(clips, rois) -> (logits, scores)`` and save it with the metadata JSON as
    the extra file ``fbil.json``. Loading needs torch and torchvision (for ``roi_align``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = ExportedDetector(detector, fp16=fp16).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(
            module, example_inputs(metadata.preprocess.num_frames), check_trace=False
        )
    doc = {**metadata.to_dict(), **(extra_metadata or {})}
    traced.save(str(path), _extra_files={METADATA_FILE: json.dumps(doc)})
    return path


def read_torchscript_metadata(path: str | Path) -> dict[str, Any]:
    extra = {METADATA_FILE: ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[METADATA_FILE])
