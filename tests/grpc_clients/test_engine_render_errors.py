"""The SDK's stateless engine calls when the node a call reached cannot be rendered: the
render error is raised (as ``render`` of the new state raises it) and carries the new
state, so the caller goes on from where the flow is."""

from __future__ import annotations

import pytest

from tests.support.servers import serving
from trellis.adapters.memory_loader import MemoryLoader
from trellis.clients import Client
from trellis.errors import ContextValidationError

FLOW = [
    {"id": "start", "required_context": ["api_key"], "to": "next"},
    {"id": "next", "required_context": ["token"], "wait": True, "to": "end"},
    {"id": "end", "content": "done"},
]


async def test_the_render_error_carries_the_state_the_call_reached() -> None:
    async with serving(loader=MemoryLoader(FLOW)) as served:
        async with Client(served.target) as client:
            with pytest.raises(ContextValidationError) as started:
                await client.engine.start("s1")
            assert started.value.missing_keys == ["api_key"]
            state = started.value.state  # type: ignore[attr-defined]
            assert state.current_node_id == "start"

            state.context["api_key"] = "k"
            with pytest.raises(ContextValidationError) as moved:
                await client.engine.navigate(state, "")
            assert moved.value.missing_keys == ["token"]
            reached = moved.value.state  # type: ignore[attr-defined]
            assert reached.current_node_id == "next"

            reached.context["token"] = "t"
            step = await client.engine.navigate(reached, "")
            assert (step.state.current_node_id, step.terminal) == ("end", True)
