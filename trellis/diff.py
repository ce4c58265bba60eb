"""What changed between two states of a session (docs/api.md, "Sessions": Watch), for event streams.

``pending_tool_call``, ``system_context`` and ``locale`` are deliberately not
compared: watchers follow the user-visible parts of a session.
"""

from __future__ import annotations

from trellis.domain import JSONValue, State, StateDiff


def _same(a: JSONValue, b: JSONValue) -> bool:
    """Deep equality that, unlike ``==``, tells ``True`` from ``1`` (numbers compare by value)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict | list | tuple) or isinstance(b, dict | list | tuple):
        return False
    return bool(a == b)


def diff(old: State | None, new: State | None) -> StateDiff | None:
    """The changes from ``old`` to ``new``; None when there is nothing to report."""
    if new is None:
        return None
    current: str | None = None
    status = None
    terminated: bool | None = None
    context: dict[str, JSONValue] | None = None
    appended: tuple[str, ...] | None = None

    if old is None:
        current = new.current_node_id
        status = new.status
        if new.terminated:
            terminated = True
        context = dict(new.context) if new.context else None
        if new.history:
            appended = tuple(new.history)
    else:
        if new.current_node_id != old.current_node_id:
            current = new.current_node_id
        if new.status != old.status:
            status = new.status
        if new.terminated != old.terminated:
            terminated = new.terminated
        changed = {
            key: value
            for key, value in new.context.items()
            if key not in old.context or not _same(old.context[key], value)
        }
        for key in old.context:
            if key not in new.context:
                changed[key] = None
        context = changed or None
        # No prefix check: a rollback shortens the history and reports nothing.
        if new.history and len(new.history) > len(old.history):
            appended = tuple(new.history[len(old.history) :])

    if current is None and status is None and terminated is None and context is None and appended is None:
        return None
    return StateDiff(
        session_id=new.session_id,
        current_node_id=current,
        status=status,
        context=context,
        history_appended=appended,
        terminated=terminated,
    )
