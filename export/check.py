"""Compare an exported artifact with the eager model on fresh random inputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fbil.export.wrapper import ExportedDetector, random_inputs
from fbil.model.detector import FBILDetector

FP32_TOLERANCE = 1e-4
# fp16 networks (GPU): logits are O(1-10); half precision keeps ~3 significant digits through
# the backbone, so differences of a few 1e-2 are expected.
FP16_TOLERANCE = 5e-2

Runner = Callable[[torch.Tensor, torch.Tensor], tuple[np.ndarray, np.ndarray]]


class CheckFailed(RuntimeError):
    """The artifact does not reproduce the eager model within tolerance."""


@dataclass(frozen=True)
class CheckResult:
    num_clips: int
    num_rois: int
    size: tuple[int, int]
    logits_diff: float
    scores_diff: float


def onnx_runner(path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",)) -> Runner:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=list(providers))

    def run(clips: torch.Tensor, rois: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        logits, scores = session.run(
            ["logits", "scores"], {"clips": clips.numpy(), "rois": rois.numpy()}
        )
        return logits, scores

    return run


def torchscript_runner(path: str | Path) -> Runner:
    module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(clips: torch.Tensor, rois: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            logits, scores = module(clips, rois)
        return logits.numpy(), scores.numpy()

    return run


def compare(
    detector: FBILDetector,
    run: Runner,
    *,
    num_frames: int,
    actor_counts: Sequence[int] = (1, 3, 8),
    sizes: Sequence[tuple[int, int]] = ((128, 160), (144, 203)),
    tolerance: float = FP32_TOLERANCE,
    seed: int = 0,
) -> list[CheckResult]:
    """Run eager and artifact on fresh random inputs; raise :class:`CheckFailed` above
    ``tolerance`` (max abs difference of logits or scores)."""
    eager = ExportedDetector(detector).eval()
    gen = torch.Generator().manual_seed(seed)
    results = []
    for height, width in sizes:
        for n in actor_counts:
            num_clips = 1 if n == 1 else 2
            clips, rois = random_inputs(num_clips, n, num_frames, height, width, gen)
            with torch.inference_mode():
                ref_logits, ref_scores = eager(clips, rois)
            logits, scores = run(clips, rois)
            results.append(
                CheckResult(
                    num_clips,
                    n,
                    (height, width),
                    float(np.abs(logits - ref_logits.numpy()).max()),
                    float(np.abs(scores - ref_scores.numpy()).max()),
                )
            )
    worst = max(max(r.logits_diff, r.scores_diff) for r in results)
    if not worst <= tolerance:  # also catches NaN
        raise CheckFailed(f"max abs difference {worst:.3g} exceeds {tolerance:g}")
    return results
