"""The one "CUDA if available" rule."""

from __future__ import annotations

import pytest
import torch

from fbil.model.device import default_device, resolve_device


@pytest.mark.parametrize("cuda", [True, False])
def test_auto_means_cuda_when_available(monkeypatch: pytest.MonkeyPatch, cuda: bool):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    expected = torch.device("cuda" if cuda else "cpu")
    assert default_device() == resolve_device() == resolve_device("auto") == expected


def test_a_named_device_is_kept(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
