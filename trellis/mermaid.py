"""A flow as a Mermaid flowchart (docs/cli.md, ``trellis graph``), optionally overlaid with a session."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from trellis.domain import Node, State

_VISITED_STYLE = "fill:#e1f5fe,stroke:#01579b,stroke-width:2px,color:#000;"
_CURRENT_STYLE = "fill:#ffeb3b,stroke:#fbc02d,stroke-width:4px,color:#000;"


def safe_id(node_id: str) -> str:
    """A Mermaid-safe identifier: the characters Mermaid reads as syntax become ``_``."""
    for char in ".-/\\":
        node_id = node_id.replace(char, "_")
    return node_id


def _shape(node: Node, entry: str) -> tuple[str, str]:
    if node.id == entry or node.id == "start" or node.type == "start":
        return "((", "))"
    if node.type == "tool":
        return "[[", "]]"
    if node.type == "question":
        return "[/", "/]"
    return "[", "]"


def _edge(source: Node, target: str, condition: str) -> str:
    jump = posixpath.dirname(source.id) != posixpath.dirname(target)
    label = condition.replace('"', "'")
    if not label:
        arrow = "-.->" if jump else "-->"
    elif jump:
        arrow = f'-. "{label}" .->'
    else:
        arrow = f'-- "{label}" -->'
    return f"    {safe_id(source.id)} {arrow} {safe_id(target)}"


def render_mermaid(nodes: Sequence[Node], state: State | None = None, entry: str = "start") -> str:
    """``graph TD`` with one line per node (sorted by ID), its transitions, signal
    handlers (default ones too), ``on_error`` and ``on_denied`` edges; with
    ``state``, classes marking visited nodes and the current node."""
    lines = ["graph TD"]
    for node in sorted(nodes, key=lambda n: n.id):
        opening, closing = _shape(node, entry)
        label = f"{node.id} <br/> ⏱️ {node.timeout}" if node.timeout else node.id
        lines.append(f'    {safe_id(node.id)}{opening}"{label}"{closing}')
        for transition in node.transitions:
            lines.append(_edge(node, transition.to_node_id, transition.condition))
        for signal in sorted(node.on_signal):
            lines.append(f"    {safe_id(node.id)} -. ⚡ {signal} .-> {safe_id(node.on_signal[signal])}")
        # A default handler catches the signal on any node that has none of its own: one
        # edge from the node that declares it, labelled so, rather than one per node.
        for signal in sorted(node.on_signal_default):
            target = safe_id(node.on_signal_default[signal])
            lines.append(f'    {safe_id(node.id)} -. "⚡ {signal} (default)" .-> {target}')
        if node.on_error:
            lines.append(f"    {safe_id(node.id)} -. on_error .-> {safe_id(node.on_error)}")
        if node.on_denied:
            lines.append(f"    {safe_id(node.id)} -. on_denied .-> {safe_id(node.on_denied)}")
    if state is not None:
        lines += [
            "",
            "    %% Overlay Styles",
            f"    classDef visited {_VISITED_STYLE}",
            f"    classDef current {_CURRENT_STYLE}",
        ]
        for node_id in dict.fromkeys(state.history):
            lines.append(f"    class {safe_id(node_id)} visited;")
        if state.current_node_id:
            lines.append(f"    class {safe_id(state.current_node_id)} current;")
    return "\n".join(lines) + "\n"
