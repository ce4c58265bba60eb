"""The examples walked end to end twice, with their real tools: the way `trellis run`
opens a flow (in-process SessionManager, the flow's tools.yaml), and through a real
`trellis serve` composition's Sessions service with the SDK. Both reach the same end."""

from __future__ import annotations

import pytest

from tests.support.cli import EXAMPLES
from tests.support.compat_flows import SessionsLike
from tests.support.servers import flow_server
from trellis.adapters.memory_store import MemoryStore
from trellis.adapters.process_dispatcher import ProcessDispatcher
from trellis.cli.project import open_flow
from trellis.clients import Client
from trellis.domain import Status, StepResult
from trellis.sessions import SessionManager

# What the user types at each prompt: the tour's path runs its word-count tool; the
# saga needs no input (its tools run, the car fails, the bookings are compensated).
ANSWERS = {"saga": [], "tour": ["Ada", "tool", "finish", ""]}


async def _drive(sessions: SessionsLike, answers: list[str]) -> StepResult:
    step = await sessions.start("walk")
    for answer in answers:
        step = await sessions.navigate("walk", answer)
    return step


def _end(step: StepResult) -> dict[str, object]:
    state = step.state
    return {
        "node": state.current_node_id,
        "status": state.status,
        "history": state.history,
        "context": state.context,
        "actions": step.render.actions,
    }


@pytest.mark.parametrize("example", sorted(ANSWERS))
async def test_an_example_walks_alike_in_process_and_through_the_sessions_service(example: str) -> None:
    flow = open_flow(EXAMPLES / example)
    tools = ProcessDispatcher.from_file(flow.tools_file)
    local = await _drive(SessionManager(flow.engine, MemoryStore(), dispatcher=tools), ANSWERS[example])
    settings = {"entry_node": flow.entry, "default_error_node": flow.error_node}
    async with flow_server(flow.directory, **settings) as server:
        async with Client(f"127.0.0.1:{server.port}") as client:
            remote = await _drive(client.sessions, ANSWERS[example])
    assert _end(remote) == _end(local)
    assert local.state.status is Status.TERMINATED, f"{example} did not end: {local.state.history}"
