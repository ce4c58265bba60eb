"""A cancel-safe stream of GraphChange events, shared by the in-process loaders.

It is an object, not an async generator, on purpose: a consumer may wrap
``anext(stream)`` in a timeout and call it again afterwards (an async generator
would be closed by the cancellation). Events are queued from the moment the
stream is created, so a change made right after ``watch()`` returns is not lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

from trellis.ports.loader import GraphChange

_END: Final = object()


class ChangeStream:
    """Async iterator of GraphChange. Ends after ``aclose()`` or when its source ends it."""

    def __init__(
        self,
        on_close: Callable[[ChangeStream], None] | None = None,
        wait_closed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``on_close`` releases the source's resources (it also runs when the stream is
        garbage collected); ``wait_closed`` lets ``aclose`` wait until they are released."""
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._on_close = on_close
        self._wait_closed = wait_closed
        self._closed = False

    def publish(self, change: GraphChange) -> None:
        if not self._closed:
            self._queue.put_nowait(change)

    def end(self) -> None:
        """Called by the source: the consumer gets StopAsyncIteration after the queued events."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(_END)

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> ChangeStream:
        return self

    async def __anext__(self) -> GraphChange:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # stay ended for later calls
            raise StopAsyncIteration
        assert isinstance(item, GraphChange)
        return item

    async def aclose(self) -> None:
        """Stop the stream and release what the source holds for it."""
        self.end()
        callback, self._on_close = self._on_close, None
        if callback is not None:
            callback(self)
        waiter, self._wait_closed = self._wait_closed, None
        if waiter is not None:
            await waiter()

    def __del__(self) -> None:
        # A consumer that is cancelled and drops the stream stops the watch too.
        callback, self._on_close = self._on_close, None
        if callback is not None:
            try:
                callback(self)
            except Exception:
                pass  # nothing useful can be done during garbage collection
