"""Node.js for tests: the client's node_modules, installed once with `npm ci`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.requirements import missing


def node_modules(package_dir: Path, marker: str) -> Path:
    """``package_dir``/node_modules, after ``npm ci`` when ``marker`` (a package path in
    it) is missing or the lock file is newer than the install; a skip (a failure under
    CI=true) without node and npm."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        missing("node and npm are not installed (the Node client tests need them)")
    modules = package_dir / "node_modules"
    # npm records what it installed; an older record than the lock file means the
    # dependencies changed since (a pull, a merge): install again.
    installed = modules / ".package-lock.json"
    lock = package_dir / "package-lock.json"
    stale = not installed.is_file() or installed.stat().st_mtime < lock.stat().st_mtime
    if stale or not (modules / marker).is_dir():
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=package_dir,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return modules
