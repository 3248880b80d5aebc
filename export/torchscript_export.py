"""TorchScript export: a file that ``torch.jit.load`` runs without this repository."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from fbil.export.wrapper import ExportedDetector, example_inputs
from fbil.model import artifact
from fbil.model.detector import FBILDetector
from fbil.model.metadata import ModelMetadata


def export_torchscript(
    detector: FBILDetector,
    metadata: ModelMetadata,
    path: str | Path,
    *,
    fp16: bool = False,
    extra_metadata: dict[str, Any] | None = None,
) -> Path:
    """Trace ``forward(clips, rois) -> (logits, scores)`` and save it with the metadata (and
    ``extra_metadata``) as an extra file (:mod:`fbil.model.artifact`). Loading needs torch and
    torchvision (for ``roi_align``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = ExportedDetector(detector, fp16=fp16).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(
            module, example_inputs(metadata.preprocess.num_frames), check_trace=False
        )
    traced.save(str(path), _extra_files=artifact.torchscript_extra_files(metadata, extra_metadata))
    return path
