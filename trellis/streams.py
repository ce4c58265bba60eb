"""QueueStream: the one async stream a source feeds and a consumer iterates.

Loader watches (in-process, etcd, remote) and session watches are all this:
events queued from the moment the stream exists, so nothing published right
after ``watch()`` returns is lost; an object rather than an async generator on
purpose, because a consumer may wrap ``anext(stream)`` in a timeout and call it
again afterwards (a cancelled async generator would be closed for good).

A source either pushes (``publish``, ``fail``, ``end``) or is a coroutine given
as ``feed``, run as a task for as long as the stream is open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final, Generic, TypeVar

T = TypeVar("T")

_END: Final = object()


class QueueStream(Generic[T]):
    """Async iterator of T. Ends after ``aclose()``, ``end()``, or when its feed returns;
    a feed's exception (or ``fail``) is raised to the consumer after the queued items."""

    def __init__(
        self,
        *,
        maxsize: int = 0,
        feed: Callable[[Callable[[T], object]], Awaitable[None]] | None = None,
        on_close: Callable[[QueueStream[T]], None] | None = None,
        wait_closed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``maxsize`` > 0 bounds the queue: ``publish`` then drops what does not fit
        and returns False (a slow consumer never blocks its source). ``feed(publish)``
        is run as a task while the stream is open (started now when a loop runs, else
        by the first ``anext``). ``on_close`` releases the source's resources (it also
        runs when the stream is garbage collected); ``wait_closed`` lets ``aclose`` wait
        until they are released."""
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._maxsize = maxsize
        self._feed = feed
        self._task: asyncio.Task[None] | None = None
        self._on_close = on_close
        self._wait_closed = wait_closed
        self._closed = False
        if feed is not None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return
            self._start_feed()

    # --- the source's side ---------------------------------------------------------

    def publish(self, item: T) -> bool:
        """Queue ``item``; False when the stream is closed or full (the item is dropped)."""
        if self._closed or (self._maxsize and self._queue.qsize() >= self._maxsize):
            return False
        self._queue.put_nowait(item)
        return True

    def fail(self, exc: BaseException) -> None:
        """End the stream with ``exc``, raised to the consumer after the queued items."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(exc)

    def end(self) -> None:
        """The consumer gets StopAsyncIteration after the queued items."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(_END)

    @property
    def closed(self) -> bool:
        return self._closed

    # --- the consumer's side -------------------------------------------------------

    def __aiter__(self) -> QueueStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._task is None and self._feed is not None and not self._closed:
            self._start_feed()
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # stay ended for later calls
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._queue.put_nowait(_END)
            raise item
        return item  # type: ignore[return-value]

    async def aclose(self) -> None:
        """Stop the stream and release what the source holds for it."""
        self.end()
        self._release()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        waiter, self._wait_closed = self._wait_closed, None
        if waiter is not None:
            await waiter()

    def _release(self) -> None:
        callback, self._on_close = self._on_close, None
        if callback is not None:
            callback(self)

    def _start_feed(self) -> None:
        assert self._feed is not None
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run_feed(self._feed), name="trellis-stream-feed")

    async def _run_feed(self, feed: Callable[[Callable[[T], object]], Awaitable[None]]) -> None:
        try:
            await feed(self.publish)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.fail(exc)
        self.end()

    def __del__(self) -> None:
        # A consumer that is cancelled and drops the stream stops the source too.
        try:
            self._release()
        except Exception:
            pass  # nothing useful can be done during garbage collection
