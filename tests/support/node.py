"""Node.js for tests: the client's node_modules, installed once with `npm ci`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.requirements import missing


def node_modules(package_dir: Path, marker: str) -> Path:
    """``package_dir``/node_modules, after ``npm ci`` when ``marker`` (a package path in
    it) is missing; a skip (a failure under CI=true) without node and npm."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        missing("node and npm are not installed (the Node client tests need them)")
    modules = package_dir / "node_modules"
    if not (modules / marker).is_dir():
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=package_dir,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return modules
