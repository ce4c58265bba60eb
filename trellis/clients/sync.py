"""The blocking Python SDK: ``SyncClient(target)``, the same calls as ``Client`` without ``await``.

The asynchronous client runs on a private event loop in a daemon thread; each call
blocks until its result is there. One SyncClient may be shared by threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Awaitable, Coroutine, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

from trellis.api.transport import ChannelOptions
from trellis.clients.client import Client
from trellis.domain import (
    JSONValue,
    Node,
    RenderResult,
    SessionEvent,
    State,
    StateDiff,
    StepResult,
    ToolResult,
)
from trellis.ports.engine import LifecycleHook
from trellis.ports.store import SessionPage

T = TypeVar("T")


class _Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="trellis-client", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


class SyncSessions:
    """Blocking twin of trellis.clients.client.Sessions.

    Example::

        step = client.sessions.start("me")
        step = client.sessions.navigate("me", "Ada")
    """

    def __init__(self, loop: _Loop, client: Client) -> None:
        self._loop = loop
        self._async = client.sessions

    def start(
        self,
        session_id: str,
        context: Mapping[str, JSONValue] | None = None,
        *,
        request_id: str | None = None,
    ) -> StepResult:
        return self._loop.run(self._async.start(session_id, context, request_id=request_id))

    def navigate(
        self,
        session_id: str,
        input: JSONValue | ToolResult = "",
        *,
        request_id: str | None = None,
        expected_revision: int | None = None,
    ) -> StepResult:
        return self._loop.run(
            self._async.navigate(
                session_id, input, request_id=request_id, expected_revision=expected_revision
            )
        )

    def signal(
        self,
        session_id: str,
        name: str,
        *,
        request_id: str | None = None,
        expected_revision: int | None = None,
    ) -> StepResult:
        return self._loop.run(
            self._async.signal(session_id, name, request_id=request_id, expected_revision=expected_revision)
        )

    def get(self, session_id: str) -> StepResult:
        return self._loop.run(self._async.get(session_id))

    def list(self, page_size: int = 0, page_token: str = "") -> SessionPage:
        return self._loop.run(self._async.list(page_size, page_token))

    def delete(self, session_id: str) -> None:
        self._loop.run(self._async.delete(session_id))

    def watch(self, session_id: str, *, start_revision: int = 0) -> Iterator[StateDiff]:
        """The session's saved changes, blocking for each; closing the generator ends the watch.
        Resumes by itself after a broken connection (see Sessions.watch_events)."""
        yield from self._follow(self._async.watch(session_id, start_revision=start_revision))

    def watch_events(self, session_id: str, *, start_revision: int = 0) -> Iterator[SessionEvent]:
        """Changes, bookmarks and the deletion, blocking for each (Sessions.watch_events)."""
        yield from self._follow(self._async.watch_events(session_id, start_revision=start_revision))

    def _follow(self, stream: AsyncGenerator[T, None]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self._loop.run(_await(anext(stream)))
                except StopAsyncIteration:
                    return
        finally:
            self._loop.run(stream.aclose())


class SyncEngine:
    """Blocking twin of trellis.clients.client.Engine.

    Example::

        step = client.engine.start("s1")
        step = client.engine.navigate(step.state, "yes")
    """

    def __init__(self, loop: _Loop, client: Client) -> None:
        self._loop = loop
        self._async = client.engine

    def start(self, session_id: str, context: Mapping[str, JSONValue] | None = None) -> StepResult:
        return self._loop.run(self._async.start(session_id, context))

    def render(self, state: State) -> RenderResult:
        return self._loop.run(self._async.render(state))

    def navigate(self, state: State, input: JSONValue | ToolResult = "") -> StepResult:
        return self._loop.run(self._async.navigate(state, input))

    def signal(self, state: State, name: str) -> StepResult:
        return self._loop.run(self._async.signal(state, name))

    def inspect(self) -> list[Node]:
        return self._loop.run(self._async.inspect())


class SyncClient:
    """A blocking client of a trellis server; same arguments as ``Client``.

    Example::

        with SyncClient("127.0.0.1:50051", token="...") as client:
            step = client.sessions.start("me")
            while not step.terminal:
                step = client.sessions.navigate("me", input("> "))
    """

    def __init__(
        self,
        target: str,
        *,
        tls: bool = False,
        token: str = "",
        ca_file: str = "",
        cert_file: str = "",
        key_file: str = "",
        timeout: float = 30.0,
        options: ChannelOptions | None = None,
        hooks: Iterable[LifecycleHook] = (),
        step_stream: bool = False,
    ) -> None:
        # hooks run on the client's own event-loop thread, before the blocking call returns.
        settings: dict[str, Any] = {
            "tls": tls,
            "token": token,
            "ca_file": ca_file,
            "cert_file": cert_file,
            "key_file": key_file,
            "timeout": timeout,
            "options": options,
            "hooks": tuple(hooks),
            "step_stream": step_stream,
        }
        self._loop = _Loop()
        try:
            self._client = self._loop.run(_make(target, settings))
        except BaseException:
            self._loop.stop()
            raise
        self.sessions = SyncSessions(self._loop, self._client)
        self.engine = SyncEngine(self._loop, self._client)
        self._closed = False

    def health(self) -> None:
        self._loop.run(self._client.health())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.run(self._client.close())
        finally:
            self._loop.stop()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


async def _make(target: str, options: dict[str, Any]) -> Client:
    # The grpc.aio channel belongs to the loop it is created on: create it there.
    return Client(target, **options)
