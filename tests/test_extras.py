"""Every console script whose extra (or default dependency) is missing says so in one line
naming it, and exits 2; the console scripts all go through :mod:`fbil.model.extras`."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fbil.model.extras import EXTRAS

ROOT = Path(__file__).resolve().parents[1]

# run a console script's target with some modules made unimportable (None in sys.modules)
RUN = """
import importlib, sys
for name in sys.argv[2].split(","):
    sys.modules[name] = None
module, _, name = sys.argv[1].partition(":")
sys.exit(getattr(importlib.import_module(module), name)(["--help"]))
"""

SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
# script -> (a module it cannot run without, what the message must name)
CASES = {
    "fbil-export": ("onnxscript", "pip install 'fbil[export]'"),
    "fbil-train": ("torch", "pip install 'fbil[train]'"),
    "fbil-serve": ("av", "pip install fbil"),
    "fbil-detect": ("onnxruntime", "pip install fbil"),
    "fbil-demo": ("PIL", "pip install fbil"),
    "fbil-eval": ("numpy", "pip install fbil"),
}


def test_every_console_script_checks_its_extra() -> None:
    assert set(SCRIPTS) == set(CASES)
    assert all(target.startswith("fbil.model.extras:") for target in SCRIPTS.values())


@pytest.mark.parametrize("script", sorted(CASES))
def test_a_missing_extra_is_one_line_naming_it(script: str) -> None:
    module, install = CASES[script]
    run = subprocess.run(
        [sys.executable, "-c", RUN, SCRIPTS[script], module],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"{script}: ") and install in lines[0] and module in lines[0]


def test_the_extras_modules_follow_pyproject() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert set(EXTRAS) <= set(extras["optional-dependencies"])
