"""ONNX RoiAlign (as exported) gives torchvision's numbers: adaptive sampling, aligned False."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
from torch.export import Dim
from torchvision.ops import roi_align


class RoiAlign7(torch.nn.Module):
    def forward(self, feats: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return roi_align(feats, boxes, 7, 1.0, -1, False)


def test_roi_align_matches_torchvision(tmp_path):
    path = tmp_path / "roi.onnx"
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 8, 16, 29, generator=gen)
    boxes = torch.tensor([[0, 1.0, 2.0, 10.0, 12.0], [1, 0.5, 0.5, 3.0, 4.0]])
    torch.onnx.export(
        RoiAlign7(), (feats, boxes), str(path), input_names=["feats", "boxes"],
        dynamic_shapes={"feats": {0: Dim("b"), 2: Dim("h"), 3: Dim("w")},
                        "boxes": {0: Dim("n")}},
        dynamo=True, opset_version=18, verbose=False,
    )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    cases = [
        torch.tensor([[0, 3.3, 2.2, 5.8, 8.7], [1, 0.2, 1.1, 2.7, 7.3]]),  # ordinary
        torch.tensor([[0, 0.0, 0.0, 29.0, 16.0], [1, 20.5, 3.0, 28.9, 15.9]]),  # whole map, edge
        torch.tensor([[0, 5.1, 5.2, 5.3, 5.4], [0, 14.0, 7.0, 35.0, 20.0]]),  # tiny; past edge
        torch.tensor([[0, -2.0, -1.0, 4.0, 3.0], [1, 1.0, 1.0, 28.0, 2.0]]),  # negative; thin
    ]
    for boxes in cases:
        expected = roi_align(feats, boxes, 7, 1.0, -1, False).numpy()
        (got,) = session.run(None, {"feats": feats.numpy(), "boxes": boxes.numpy()})
        assert np.abs(got - expected).max() < 1e-5, boxes
