"""Opening a flow directory the way every subcommand does: loader, entry, engine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trellis.adapters.directory_loader import DirectoryLoader, entry_node_id, has_default_error_node
from trellis.engine.engine import Engine

TOOLS_FILE = "tools.yaml"
TOOL_REGISTRY_FILES = ("tools.yaml", "tools.json")
DEFAULT_ERROR_NODE = "error"


def tool_registry_ids(directory: Path) -> frozenset[str]:
    """The node ID the loader gives the root tool registry (tools.yaml is a YAML file,
    so it also reads as a node): the CLI treats it as configuration, not a node."""
    if any((directory / name).is_file() for name in TOOL_REGISTRY_FILES):
        return frozenset({"tools"})
    return frozenset()


@dataclass(frozen=True, slots=True)
class Flow:
    directory: Path
    loader: DirectoryLoader
    engine: Engine
    entry: str
    error_node: str

    @property
    def tools_file(self) -> Path:
        """``tools.yaml``, else ``tools.json``, at the flow's root (which may not exist)."""
        for name in TOOL_REGISTRY_FILES:
            if (self.directory / name).is_file():
                return self.directory / name
        return self.directory / TOOLS_FILE


def open_flow(directory: Path, *, html: bool = False, error_node: bool = True) -> Flow:
    """The flow in ``directory``: entry node by the CLI's rule (start, main, index, then the
    folder's name; docs/engine.md, "Graphs and node IDs"), and ``error`` as default error node when present
    (unless ``error_node`` is false). ``html``: the engine's HTML interpolator."""
    loader = DirectoryLoader(directory)
    entry = entry_node_id(directory)
    default_error = DEFAULT_ERROR_NODE if error_node and has_default_error_node(directory) else ""
    engine = Engine(loader, entry_node=entry, default_error_node=default_error, html=html)
    error_node_id = default_error
    return Flow(directory, loader, engine, entry, error_node_id)
