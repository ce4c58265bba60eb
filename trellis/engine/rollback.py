"""SAGA rollback (docs/engine.md, "Tools and sagas"): walk the history backwards, asking for each ``undo``.

Differences from the original (docs/engine-differences.md, fixes #8, #10):
* a node whose own ``do`` succeeded and then navigated to ``rollback`` is not
  popped blindly: its ``undo`` runs first (the caller passes ``pop=False``);
* an ``undo`` without an ID is awaited (and emitted) under its name;
* a fully unwound state is ``terminated`` with the ``terminated`` flag set.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from trellis.domain import State, Status
from trellis.engine.compiled import CompiledNode


async def unwind(
    state: State, *, pop: bool, load: Callable[[str], Awaitable[CompiledNode]]
) -> tuple[State, CompiledNode | None]:
    """Continue the rollback on ``state`` (which the caller owns and may be changed).

    Returns the state and the node whose undo is now pending, or None when the
    history is exhausted and the state terminated. ``load`` raises on a node that
    cannot be loaded ("rollback failed: could not load node <id>").
    """
    state.status = Status.ROLLING_BACK
    state.pending_tool_call = ""
    history = state.history
    if pop and history:
        history.pop()
    while history:
        node_id = history[-1]
        state.current_node_id = node_id
        node = await load(node_id)
        if node.undo is not None:
            state.pending_tool_call = node.undo.id
            return state, node
        history.pop()
    state.status = Status.TERMINATED
    state.current_node_id = ""
    state.terminated = True
    return state, None
