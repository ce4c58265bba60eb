"""Small Python programs used as process tools in the tests (written to tmp_path, run with sys.executable)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

ECHO = """
import os, sys
sys.stdout.buffer.write(os.environb[b"TRELLIS_ARGS"])
"""

FAIL = """
import sys
sys.stderr.write("boom: the tool failed\\n")
sys.exit(3)
"""


def write_tools(directory: Path, scripts: dict[str, str], extra: str = "") -> Path:
    """Write each script as ``<name>.py`` and a tools.yaml running it; return the tools.yaml path."""
    lines = ["tools:"]
    for name, source in scripts.items():
        (directory / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        lines += [f"  - name: {name}", f"    command: {sys.executable!r}", f"    args: ['{name}.py']"]
    path = directory / "tools.yaml"
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path
