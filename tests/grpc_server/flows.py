"""A small flow used by the server tests: input, a served process tool, a tool the
server does not serve (answered by the client), and a terminal node."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

NODES = {
    "start.md": """\
        ---
        wait: true
        save_to: name
        on_signal_default:
          interrupt: stopped
        to: shout
        ---
        What is your name?
        """,
    "shout.md": """\
        ---
        do:
          name: shout
          args:
            text: "{{ .name }}"
        save_to: shouted
        to: lookup
        ---
        """,
    "lookup.md": """\
        ---
        do:
          name: lookup
          args:
            who: "{{ .name }}"
        save_to: found
        to: done
        ---
        """,
    "done.md": """\
        ---
        ---
        Bye {{ .shouted }} ({{ .found }})
        """,
    "stopped.md": """\
        ---
        ---
        Stopped.
        """,
}

SHOUT = """
import json, os, pathlib, sys, time
args = json.loads(os.environ["TRELLIS_ARGS"])
marker = os.environ.get("SHOUT_MARKER")
if marker:
    pathlib.Path(marker).write_text("started")
    time.sleep(float(os.environ.get("SHOUT_SLEEP", "0")))
print(args["text"].upper())
"""


def write_flow(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in NODES.items():
        (directory / name).write_text(textwrap.dedent(text), encoding="utf-8")
    (directory / "shout.py").write_text(textwrap.dedent(SHOUT), encoding="utf-8")
    (directory / "tools.yaml").write_text(
        f"pass_env: [SHOUT_MARKER, SHOUT_SLEEP]\ntools:\n  - name: shout\n    command: {sys.executable!r}\n"
        "    args: ['shout.py']\n    timeout: 30s\n",
        encoding="utf-8",
    )
    return directory
