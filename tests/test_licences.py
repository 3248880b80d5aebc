"""The licence inventory (docs/third_party_licenses.csv, scripts/licences.py) covers exactly the
locked packages, says what their installed metadata says, and holds no GPL/AGPL or unknown
licence outside the reviewed exceptions (copyleft only in the dev lock, never in an image)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("licences", ROOT / "scripts" / "licences.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


licences = _tool()


def inventory() -> dict[str, tuple[str, str]]:
    with licences.INVENTORY.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {r["package"]: (r["version"], r["licence"]) for r in rows}


def test_the_inventory_lists_exactly_the_locked_packages() -> None:
    listed = {name: version for name, (version, _) in inventory().items()}
    assert listed == licences.locked(), "a lock changed: run python scripts/licences.py"


def test_the_inventory_says_what_installed_metadata_says() -> None:
    checked = 0
    for name, (version, licence) in inventory().items():
        here = licences.installed_licence(name, version)
        if here is not None:
            assert licence == here, name
            checked += 1
    assert checked >= len(licences.locked(("requirements.lock",)))  # at least the runtime's


def test_no_gpl_in_what_is_shipped_and_no_unreviewed_copyleft_or_unknown() -> None:
    shipped = licences.locked(licences.SHIPPED)
    refused = []
    for name, (_, licence) in inventory().items():
        copyleft = bool(licences.COPYLEFT.search(licence))
        if copyleft and name in shipped:
            refused.append(f"{name}: {licence} in an image")
        elif (copyleft or licence == "UNKNOWN") and name not in licences.REVIEWED:
            refused.append(f"{name}: {licence}")
    assert refused == []


@pytest.mark.parametrize(
    ("licence", "copyleft"),
    [
        ("GPL-3.0", True),
        ("AGPL-3.0-only", True),
        ("GNU General Public License v2 (GPLv2)", True),
        ("LGPL-2.1-or-later", False),
        ("GNU Lesser General Public License v3 (LGPLv3)", False),
        ("MIT", False),
        ("Apache-2.0 OR BSD-2-Clause", False),
    ],
)
def test_the_copyleft_rule(licence: str, copyleft: bool) -> None:
    assert bool(licences.COPYLEFT.search(licence)) is copyleft
