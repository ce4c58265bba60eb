"""Flows for the distributed-mode system tests, written as directories to publish.

* ``write_counter_flow``: a chain ``c0 -> c1 -> ... -> cN`` of input nodes; the input
  given at ``ci`` is saved to ``got_i``. One acknowledged step therefore appends
  exactly one history entry (``c{i+1}``), moves the counter (the index of the
  current node) by one and records WHICH request was applied at that position:
  a client that sends a unique token per request can tell a lost step (token
  acknowledged, not stored), a step applied twice (token stored twice) and a gap
  (a missing ``got_i``).
* ``write_slow_flow``: ``start`` (input, saved to ``name``) -> ``work`` (a process
  tool that blocks while a marker is configured) -> ``done``, to hold a session's
  lock for as long as a test needs.
"""

from __future__ import annotations

import sys
from pathlib import Path

COUNTER_PREFIX = "c"


def counter_node(index: int) -> str:
    return f"{COUNTER_PREFIX}{index}"


def write_counter_flow(directory: Path, length: int, *, banner: str = "step") -> Path:
    """``length`` input nodes and a terminal one; ``banner`` is in every node's text
    (change it to publish a new version)."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(length):
        (directory / f"{counter_node(i)}.md").write_text(
            f"---\nwait: true\nsave_to: got_{i}\nto: {counter_node(i + 1)}\n---\n{banner} {i}\n",
            encoding="utf-8",
        )
    (directory / f"{counter_node(length)}.md").write_text(f"---\n---\n{banner} end\n", encoding="utf-8")
    return directory


# The slow tool: blocks while $SLOW_MARKER is set (writing its PID there first), until
# $SLOW_MARKER.release exists, its server process is gone (SIGKILL'd servers leave no
# orphans sleeping) or 60 s passed; then answers "worked:<text>".
SLOW_TOOL = """\
import json, os, pathlib, time
args = json.loads(os.environ["TRELLIS_ARGS"])
marker = os.environ.get("SLOW_MARKER")
if marker:
    parent = os.getppid()
    pathlib.Path(marker).write_text(str(os.getpid()))
    release = pathlib.Path(marker + ".release")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and os.getppid() == parent and not release.exists():
        time.sleep(0.02)
print("worked:" + args["text"])
"""

SLOW_NODES = {
    "start.md": "---\nwait: true\nsave_to: name\nto: work\n---\nWho?\n",
    "work.md": '---\ndo:\n  name: slow\n  args:\n    text: "{{ .name }}"\nsave_to: result\nto: done\n---\n',
    "done.md": "---\nwait: true\nsave_to: after\nto: finish\n---\nDone {{ .result }}\n",
    "finish.md": "---\n---\nBye\n",
}


def write_slow_flow(directory: Path) -> Path:
    """The flow (to publish) and its tools.yaml (the server's --dispatcher)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in SLOW_NODES.items():
        (directory / name).write_text(text, encoding="utf-8")
    (directory / "slow.py").write_text(SLOW_TOOL, encoding="utf-8")
    (directory / "tools.yaml").write_text(
        "pass_env: [SLOW_MARKER]\n"
        f"tools:\n  - name: slow\n    command: {sys.executable!r}\n    args: ['slow.py']\n    timeout: 90s\n",
        encoding="utf-8",
    )
    return directory
