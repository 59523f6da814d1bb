"""What a wheel ships: every data file the package reads is covered by package-data."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_package_data_covers_every_data_file():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["neurofm"]
    package = ROOT / "neurofm"
    data = [
        p for p in package.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]  # fmt: skip
    assert any(p.parts[-2] == "atlas_centroids" for p in data)  # the bundled Schaefer tables
    covered = {p for pattern in globs for p in package.glob(pattern) if p.is_file()}
    assert [str(p.relative_to(package)) for p in data if p not in covered] == []
