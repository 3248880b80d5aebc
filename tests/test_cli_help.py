"""``--help`` of the serving and evaluation CLIs answers without importing torch or PyAV."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# call the console script's target with --help in a fresh interpreter, then list what it loaded
HELP = """
import importlib, sys
module, _, name = sys.argv[1].partition(":")
main = getattr(importlib.import_module(module), name)
try:
    code = main(["--help"])
except SystemExit as exit:
    code = exit.code
print("exit code:", code)
print("heavy modules:", sorted(m for m in ("torch", "av") if m in sys.modules))
"""


@pytest.mark.parametrize("script", ["fbil-serve", "fbil-eval", "fbil-train"])
def test_help_imports_neither_torch_nor_pyav(script: str) -> None:
    [entry] = entry_points(group="console_scripts", name=script)
    run = subprocess.run(
        [sys.executable, "-c", HELP, entry.value],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert f"usage: {script}" in run.stdout
    assert "exit code: 0" in run.stdout
    assert "heavy modules: []" in run.stdout
