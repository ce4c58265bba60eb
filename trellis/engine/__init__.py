"""The pure engine (docs/engine.md): compiled nodes, Start/Render/Navigate/Signal/Inspect."""

from trellis.engine.compiled import CompiledNode
from trellis.engine.engine import Engine
from trellis.engine.follow import follow_graph

__all__ = ["CompiledNode", "Engine", "follow_graph"]
