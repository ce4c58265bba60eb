"""Saying that an answer matched no transition (the CLI's "no transition matched").

The engine keeps such a state where it was, with nothing to tell it from a node
rendered again; a host that does not compare states itself (a gRPC client) would
hear nothing. The session manager and the Engine service put this SYSTEM_MESSAGE
first in the step's actions instead, so every transport says it the same way.
"""

from __future__ import annotations

from dataclasses import replace

from trellis.domain import Action, ActionType, JSONValue, RenderResult, State, Status, ToolResult

NO_TRANSITION_MATCHED = "no transition matched that answer"


def matched_nothing(before: State, after: State, answer: JSONValue | ToolResult) -> bool:
    """Whether ``answer`` (an input, not a tool result) left an active state where it was."""
    return (
        not isinstance(answer, ToolResult)
        and before.status is Status.ACTIVE
        and after.status is Status.ACTIVE
        and before.current_node_id == after.current_node_id
        and len(before.history) == len(after.history)
    )


def with_no_match_notice(render: RenderResult) -> RenderResult:
    notice = Action(ActionType.SYSTEM_MESSAGE, NO_TRANSITION_MATCHED)
    return replace(render, actions=(notice, *render.actions), input_rejected=True)
