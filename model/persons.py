"""Person boxes for frames without client boxes: the interface every person detector follows.

A detector takes displayed RGB frames and returns, per frame, the people it finds as boxes
normalised to the frame (``x1, y1, x2, y2`` in 0..1) with their scores, best first. The
bundled detector and user-supplied ONNX detectors implement :class:`PersonDetector`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class PersonBoxes:
    """The people found in one frame: ``boxes`` float32 ``(n, 4)`` normalised ``x1, y1, x2,
    y2``; ``scores`` float32 ``(n,)`` in 0..1, in descending order."""

    boxes: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        if self.boxes.shape != (len(self.scores), 4):
            raise ValueError(f"boxes {self.boxes.shape} do not match scores {self.scores.shape}")

    def __len__(self) -> int:
        return len(self.scores)

    def above(self, threshold: float) -> PersonBoxes:
        """Only the people scored ``threshold`` or more."""
        keep = self.scores >= threshold
        return PersonBoxes(self.boxes[keep], self.scores[keep])


class PersonDetector(Protocol):
    """Finds people in displayed frames (uint8 RGB ``(H, W, 3)``, any size)."""

    def detect(self, frames: Sequence[np.ndarray], threshold: float) -> list[PersonBoxes]:
        """People scored ``threshold`` or more in each frame, in frame order."""
        ...

    def describe(self) -> dict[str, object]:
        """What runs (model, tiles, providers) for ``/v1/model``."""
        ...


def load_person_detector(
    path: Path | None = None,
    *,
    providers: list[str] | None = None,
    num_threads: int | None = None,
) -> PersonDetector:
    """The person detector in the ONNX file at ``path`` (None: the bundled one), on ONNX Runtime
    with ``providers`` (None: CPU) and ``num_threads`` intra-op threads (None: runtime default)."""
    raise NotImplementedError("the bundled person detector is being built")
