"""Flows written by the client tests: input, a tool no server-side dispatcher serves
(the client answers it), a signal handler and a terminal node."""

from __future__ import annotations

from pathlib import Path

NODES = {
    "start.md": (
        "---\nwait: true\nsave_to: name\non_signal:\n  interrupt: stopped\nto: lookup\n---\nWho are you?\n"
    ),
    "lookup.md": (
        "---\ndo:\n  name: lookup\n  args:\n    who: \"{{ .name }}\"\nsave_to: found\nto: done\n---\n"
    ),
    "done.md": "---\n---\nBye {{ .name }}, you are {{ .found }}.\n",
    "stopped.md": "---\n---\nStopped.\n",
}


def write_quiz(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in NODES.items():
        (directory / name).write_text(text, encoding="utf-8")
    (directory / "tools.yaml").write_text("tools: []\n", encoding="utf-8")
    return directory


def chain_flow(directory: Path, length: int) -> Path:
    """``length`` nodes start → n1 → n2 ... each waiting for input and saving it to ``v<i>``
    (so every applied input is visible in the context); the last one ends the flow."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(length):
        name = "start" if i == 0 else f"n{i}"
        nxt = f"n{i + 1}"
        body = (
            f"---\nwait: true\nsave_to: v{i}\nto: {nxt}\n---\nstep {i}\n"
            if i < length - 1
            else "---\n---\nend\n"
        )
        (directory / f"{name}.md").write_text(body, encoding="utf-8")
    (directory / "tools.yaml").write_text("tools: []\n", encoding="utf-8")
    return directory
