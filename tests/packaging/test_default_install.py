"""The default install (``pip install fbil`` at the locked versions) has no torch and serves
``/detect``: a fresh virtual environment gets the project and the runtime lock, then a real
``fbil-serve`` from it answers a request on vtest.avi with detected people. pip takes the wheels
from its cache when it has them (tens of seconds; minutes on a cold cache)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VIDEO = ROOT / "tests" / "data" / "videos" / "vtest.avi"

# run inside the fresh environment: the client starts its fbil-serve and sends one request
CHECK = """
import sys
from importlib.util import find_spec
assert find_spec("torch") is None and find_spec("torchvision") is None, "torch installed"
from fbil.client import Keyframe
from fbil.client.local import local_service
from fbil.client import Client
env = {"FBIL_MAX_DURATION_S": "90"}  # vtest.avi lasts 79.5 s
with local_service(hermetic=True, env=env) as service, Client(service.url) as client:
    result = client.detect(sys.argv[1], [Keyframe(2.0)])
    assert result.keyframes[0].actors, "no actor"
    print("actors:", len(result.keyframes[0].actors), "model:", result.model.backend)
assert "torch" not in sys.modules
"""


@pytest.mark.slow
def test_default_install_has_no_torch_and_serves_detect(tmp_path: Path) -> None:
    source = tmp_path / "src"
    skip = shutil.ignore_patterns(".*", "build", "*.egg-info", "tests", "__pycache__", "docs")
    shutil.copytree(ROOT, source, ignore=skip)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    lock = ROOT / "docker" / "requirements.lock"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-c", str(lock), str(source)],
        check=True, capture_output=True, timeout=900,
    )  # fmt: skip
    freeze = subprocess.run(
        [str(python), "-m", "pip", "freeze"], check=True, capture_output=True, text=True
    ).stdout
    names = {line.split("==")[0].lower() for line in freeze.splitlines() if "==" in line}
    assert not {n for n in names if n.startswith(("torch", "nvidia-", "triton", "cuda-"))}
    assert "onnxruntime" in names and "onnxruntime-gpu" not in names
    run = subprocess.run(
        [str(python), "-c", CHECK, str(VIDEO)], capture_output=True, text=True, timeout=600,
        cwd=tmp_path, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "model: onnx" in run.stdout
    # a torch-only command says which extra it needs, in one line
    export = subprocess.run(
        [str(env_dir / "bin" / "fbil-export"), "--help"], capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert export.returncode == 2 and "pip install 'fbil[export]'" in export.stderr
    assert len(export.stderr.splitlines()) == 1
    assert sys.prefix != str(env_dir)
