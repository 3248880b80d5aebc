"""Layers point down: no module of fbil.model (training included) imports the service or the
exporter; both sit above the model and use it."""

from __future__ import annotations

import ast
from pathlib import Path

import fbil.model

MODEL = Path(fbil.model.__file__).parent
ABOVE = ("fbil.service", "fbil.export")


def upward_imports(source: str) -> list[str]:
    """Every module or name imported from ``ABOVE``, however the import is spelled."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found += [n for n in names if any(n == a or n.startswith(a + ".") for a in ABOVE)]
    return found


def test_the_check_sees_every_spelling() -> None:
    source = (
        "import fbil.service.video\n"
        "from fbil.service import routes\n"
        "from fbil import export\n"
        "def f():\n"
        "    from fbil.export.cli import main\n"
        "import fbil.model.video, fbil.services_like\n"
        "from fbil.model import preprocess\n"
    )
    assert upward_imports(source) == [
        "fbil.service.video",
        "fbil.service",
        "fbil.service.routes",
        "fbil.export",
        "fbil.export.cli",
        "fbil.export.cli.main",
    ]


def test_model_imports_neither_service_nor_export() -> None:
    files = sorted(MODEL.rglob("*.py"))
    assert {"decode.py", "preprocess.py", "datasets.py"} <= {p.name for p in files}
    offenders = {
        str(path.relative_to(MODEL)): found
        for path in files
        if (found := upward_imports(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}
