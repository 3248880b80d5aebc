"""Where a model runs when nobody says: the one "CUDA if available" rule.

:func:`default_device` and :func:`resolve_device` are the torch runtimes' (they import torch);
:func:`cuda_device_count` asks the CUDA driver itself, for ONNX Runtime without torch.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

AUTO = "auto"


def default_device() -> torch.device:
    """The first CUDA device when torch can use one, else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a :class:`torch.device`; ``None`` or ``"auto"``: :func:`default_device`."""
    import torch

    if device is None or device == AUTO:
        return default_device()
    return torch.device(device)


def cuda_device_count() -> int:
    """The CUDA devices the driver (``libcuda.so.1``) reports; 0 without a driver or device."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value
