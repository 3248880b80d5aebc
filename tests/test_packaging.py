"""One installed namespace: the wheel holds only ``fbil``; a user's own ``model``/``service``
modules in the working directory change nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_only_the_fbil_namespace(tmp_path: Path) -> None:
    # built from a copy: setuptools writes build/ and *.egg-info/ beside the sources
    source = tmp_path / "src"
    skip = shutil.ignore_patterns(".*", "build", "*.egg-info", "tests", "__pycache__")
    shutil.copytree(ROOT, source, ignore=skip)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "--wheel-dir", str(tmp_path), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    [wheel] = tmp_path.glob("fbil-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"fbil"}
    for module in ("fbil/model/detector.py", "fbil/model/training/train.py",
                   "fbil/service/app.py", "fbil/export/cli.py", "fbil/client/client.py",
                   "fbil/model/data/demo/model.onnx",
                   "fbil/model/data/detector/ssdlite_mobilenet_v2_person.onnx",
                   "fbil/model/data/detector/LICENSE",
                   "fbil/model/data/detector/provenance.json"):  # fmt: skip
        assert module in names
    assert not any(n.startswith("fbil/__init__") for n in names), "fbil is a namespace package"
    # every module of every folder (a subpackage left out of pyproject's list is missing from
    # the wheel and the image, while editable installs and the tests still find it)
    for folder in ("model", "service", "export", "client"):
        for path in (ROOT / folder).rglob("*.py"):
            relative = path.relative_to(ROOT).as_posix()
            assert f"fbil/{relative}" in names, f"{relative} is not in the wheel"
    for path in (ROOT / "model" / "data").rglob("*"):
        if path.is_file():
            assert f"fbil/{path.relative_to(ROOT).as_posix()}" in names, path


def test_modules_named_like_our_folders_in_the_working_directory_change_nothing(
    tmp_path: Path,
) -> None:
    (tmp_path / "model.py").write_text("raise SystemExit('the local model.py was imported')\n")
    for name in ("service", "export"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise SystemExit('local {name}/')\n")
    code = (
        "import fbil.service.settings, fbil.export.cli, fbil.model.labels as labels; "
        "print(len(labels.ava_v22()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "60"
