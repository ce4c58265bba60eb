"""The pure engine (spec §3-§12): compiled nodes, Start/Render/Navigate/Signal/Inspect."""

from trellis.engine.compiled import CompiledNode
from trellis.engine.engine import Engine, watch_and_invalidate

__all__ = ["CompiledNode", "Engine", "watch_and_invalidate"]
