"""Where a model runs when nobody says: the one "CUDA if available" rule."""

from __future__ import annotations

import torch

AUTO = "auto"


def default_device() -> torch.device:
    """The first CUDA device when torch can use one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a :class:`torch.device`; ``None`` or ``"auto"``: :func:`default_device`."""
    if device is None or device == AUTO:
        return default_device()
    return torch.device(device)
