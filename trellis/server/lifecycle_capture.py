"""The lifecycle events of the call being served, for its reply.

The server's engine has one set of hooks for every call, so a hook cannot know
which reply an event belongs to. ``record`` is that hook: it appends to the
list of the call in whose task (a context variable) the engine fired the event.
Each gRPC call runs in its own task, so concurrent calls never mix their events.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from trellis.api.step_reports import MAX_EVENTS_PER_REPLY, attach_events
from trellis.domain import LifecycleEvent


class CapturedEvents:
    """The events of one call: the first MAX_EVENTS_PER_REPLY, and how many came after."""

    __slots__ = ("dropped", "events")

    def __init__(self) -> None:
        self.events: list[LifecycleEvent] = []
        self.dropped = 0

    def add(self, event: LifecycleEvent) -> None:
        # Bounded here already, so a step of a thousand automatic moves holds no more.
        if len(self.events) < MAX_EVENTS_PER_REPLY:
            self.events.append(event)
        else:
            self.dropped += 1


_CURRENT: ContextVar[CapturedEvents | None] = ContextVar("trellis_captured_events", default=None)


def record(event: LifecycleEvent) -> None:
    """A LifecycleHook: keep ``event`` for the reply of the call being served, if any."""
    captured = _CURRENT.get()
    if captured is not None:
        captured.add(event)


@contextmanager
def capturing() -> Iterator[CapturedEvents]:
    """Collect the events the engine fires inside this block (in this task). When the block
    raises, the events fired before are attached to the exception, for its status."""
    captured = CapturedEvents()
    token = _CURRENT.set(captured)
    try:
        yield captured
    except Exception as exc:
        attach_events(exc, captured.events, captured.dropped)
        raise
    finally:
        _CURRENT.reset(token)
