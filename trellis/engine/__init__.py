"""The pure engine (spec §3-§12): compiled nodes, Start/Render/Navigate/Signal/Inspect."""

from trellis.engine.compiled import CompiledNode
from trellis.engine.engine import Engine
from trellis.engine.follow import follow_graph

__all__ = ["CompiledNode", "Engine", "follow_graph"]
