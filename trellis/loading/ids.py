"""Node IDs and node file extensions (docs/engine.md, "Graphs and node IDs")."""

from __future__ import annotations

NODE_EXTENSIONS = (".md", ".json", ".yaml", ".yml")
"""Node file extensions, in their lookup priority (.md first)."""


def node_extension(name: str) -> str:
    """The node extension ``name`` ends with, or "" when it is not a node file name."""
    for extension in NODE_EXTENSIONS:
        if name.endswith(extension) and len(name) > len(extension):
            return extension
    return ""


def strip_node_extension(name: str) -> str:
    """``choice.json`` → ``choice``. Only node extensions are stripped: an explicit
    ``id: step.2`` stays ``step.2`` (the original stripped any extension; we do not,
    because a dot in an ID is legitimate)."""
    extension = node_extension(name)
    return name[: -len(extension)] if extension else name
