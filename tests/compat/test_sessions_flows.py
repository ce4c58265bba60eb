"""Every flow of the Go original walked end to end through a real server's Sessions
service with the SDK, next to the same walk through an in-process SessionManager: both
reach the same end (node, status, history, context, actions) with the same tool calls.

The server serves the flow's directory with the CLI's entry and error node; the
stand-in tools are its dispatcher, so it runs them inside its durable steps. (The other
compat tests also run through the Sessions service, see conftest.py; this one compares
the two ends itself.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.compat_flows import (
    CONTEXTS,
    ServedFlows,
    StandInTools,
    flow_names,
    open_manager,
    require_flows,
    walk,
)
from trellis.domain import StepResult
from trellis.errors import TrellisError

pytestmark = pytest.mark.in_process_only(reason="walks in process and through the Sessions service itself")


@pytest.fixture(scope="module", autouse=True)
def flows() -> Path:
    return require_flows()


def _state(step: StepResult) -> dict[str, object]:
    state = step.state
    return {
        "node": state.current_node_id,
        "status": state.status,
        "terminated": state.terminated,
        "history": state.history,
        "context": state.context,
        "pending": state.pending_tool_call,
    }


def _end(step: StepResult) -> dict[str, object]:
    """The end state and what the last step showed (the nodes it passed through, then its own)."""
    return {**_state(step), "actions": step.render.actions, "terminal": step.render.terminal}


@pytest.mark.parametrize("name", flow_names())
async def test_every_flow_walks_alike_through_the_sessions_service(name: str) -> None:
    context = CONTEXTS.get(name, {})
    local_tools = StandInTools()
    local: StepResult | TrellisError
    try:
        local = await walk(open_manager(name, local_tools), context)
    except TrellisError as exc:  # the one broken flow fails its start, alike on both sides
        local = exc

    served_tools = StandInTools()
    servers = ServedFlows()
    try:
        client = await servers.client(name, served_tools)
        remote: StepResult | TrellisError
        try:
            remote = await walk(client.sessions, context)
        except TrellisError as exc:
            remote = exc
        if isinstance(remote, StepResult):
            stored = await client.sessions.get("walk")
            assert _state(stored) == _state(remote), "the stored session differs from the last step"
    finally:
        await servers.aclose()

    if isinstance(local, TrellisError):
        assert type(remote) is type(local) and str(remote) == str(local)
        return
    assert isinstance(remote, StepResult), f"{name}: {remote!r}"
    assert _end(remote) == _end(local)
    assert served_tools.calls == local_tools.calls
