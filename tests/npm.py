"""Pinned npm packages for the tests that check files against a project's published types or schemas."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

CACHE = Path.home() / ".cache" / "eventcast"


def installed(directory: Path, packages: Mapping[str, str]) -> Path:
    """``packages`` (name -> exact version) installed once into ``directory`` (a failed install fails the test)."""
    for tool in ("node", "npm"):
        assert shutil.which(tool), f"{tool} is missing: run `make test` (it installs nodejs and npm)"
    present = all(
        (directory / "node_modules" / name / "package.json").exists()
        and json.loads((directory / "node_modules" / name / "package.json").read_text())["version"] == version
        for name, version in packages.items()
    )
    if not present:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "package.json").write_text(
            json.dumps({"private": True, "dependencies": dict(packages)}, indent=2)
        )
        result = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--no-save"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, (
            f"npm install of {dict(packages)} failed:\n{result.stdout}{result.stderr}"
        )
    return directory
