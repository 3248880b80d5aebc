"""Which optional dependencies (pyproject.toml's extras) each part needs, and the entry points
that check them first: a command whose extra is not installed prints one line naming it
(``pip install 'fbil[torch]'``) and exits 2, instead of an ``ImportError`` traceback.

The default install serves ONNX models; ``torch`` adds the eager and TorchScript runtimes,
``export`` the exporters, ``train`` training, ``gpu`` ONNX Runtime on CUDA.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from importlib.util import find_spec

# extra -> the modules it provides (what is looked for before a command runs)
EXTRAS: dict[str, tuple[str, ...]] = {
    "torch": ("torch", "torchvision", "safetensors"),
    "export": ("torch", "torchvision", "safetensors", "onnx", "onnxscript"),
    "train": ("torch", "torchvision", "safetensors", "tensorboard"),
    "gpu": ("onnxruntime", "onnx"),
}
# what the default install provides; a missing one means a broken install, not an extra
DEFAULT_MODULES = ("numpy", "av", "onnxruntime", "fastapi", "uvicorn", "httpx", "PIL", "yaml")


class MissingExtraError(ImportError):
    """A part of fbil whose extra is not installed; ``str()`` is the one line to show."""

    def __init__(self, what: str, extra: str | None, missing: Sequence[str]) -> None:
        self.extra, self.missing = extra, tuple(missing)
        needs = (
            f"the '{extra}' extra: pip install 'fbil[{extra}]'"
            if extra
            else ("fbil's default dependencies: pip install fbil")
        )
        super().__init__(f"{what} needs {needs} (missing: {', '.join(missing)})")


def missing_modules(modules: Sequence[str]) -> list[str]:
    """Those of ``modules`` that cannot be imported here."""
    return [m for m in modules if find_spec(m) is None]


def require(extra: str, what: str) -> None:
    """:class:`MissingExtraError` unless every module of ``extra`` can be imported."""
    if missing := missing_modules(EXTRAS[extra]):
        raise MissingExtraError(what, extra, missing)


def _run(command: str, target: str, extra: str | None, argv: Sequence[str] | None) -> int:
    try:
        if extra is not None:
            require(extra, command)
        elif missing := missing_modules(DEFAULT_MODULES):
            raise MissingExtraError(command, None, missing)
    except MissingExtraError as e:
        print(f"{command}: {e}", file=sys.stderr)
        return 2
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)(argv)


def serve(argv: Sequence[str] | None = None) -> int:
    """``fbil-serve`` (default install; a torch model file asks for ``torch`` when loaded)."""
    return _run("fbil-serve", "fbil.service.cli:main", None, argv)


def detect(argv: Sequence[str] | None = None) -> int:
    """``fbil-detect`` (default install)."""
    return _run("fbil-detect", "fbil.service.detect_cli:main", None, argv)


def demo(argv: Sequence[str] | None = None) -> int:
    """``fbil-demo`` (default install)."""
    return _run("fbil-demo", "fbil.client.demo:main", None, argv)


def export(argv: Sequence[str] | None = None) -> int:
    """``fbil-export`` (``export`` extra)."""
    return _run("fbil-export", "fbil.export.cli:main", "export", argv)


def train(argv: Sequence[str] | None = None) -> int:
    """``fbil-train`` (``train`` extra)."""
    return _run("fbil-train", "fbil.model.training.train_cli:main", "train", argv)


def evaluate(argv: Sequence[str] | None = None) -> int:
    """``fbil-eval`` (default install: the AVA metric is numpy)."""
    return _run("fbil-eval", "fbil.model.training.eval_cli:main", None, argv)
