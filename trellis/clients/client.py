"""The asynchronous Python SDK: ``Client(target)`` with ``.sessions`` and ``.engine``.

Results are the library's own domain objects (StepResult, State, RenderResult,
StateDiff, Node) and failures are the library's own exceptions (SessionNotFound,
InvalidInput, ConflictError, ...), exactly as if the flow ran in process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import grpc  # type: ignore[import-untyped]

from trellis.adapters.grpc.channel import RemoteChannel
from trellis.adapters.grpc.engine import RemoteEngine
from trellis.api import convert, step_reports
from trellis.api.transport import ChannelOptions, parse_target
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import sessions_pb2_grpc
from trellis.api.v1 import step_reports_pb2 as rpb
from trellis.clients.step_stream import StepStream
from trellis.domain import (
    JSONValue,
    LifecycleEvent,
    Node,
    RenderResult,
    SessionEvent,
    State,
    StateDiff,
    StepResult,
    ToolResult,
)
from trellis.errors import BackendUnavailable, SessionNotFound, WatchRevisionCompacted
from trellis.ports.engine import LifecycleHook, deliver
from trellis.ports.store import SessionPage

LOG = logging.getLogger("trellis.clients")
T = TypeVar("T")
RESUME_FOR = 30.0
"""Seconds a session watch keeps trying to reconnect before it gives up."""


class Sessions:
    """Durable sessions kept by the server (the Sessions service).

    Each ``navigate``/``signal`` is one durable step: the server locks the session,
    runs the step (and every tool call a server-side dispatcher serves), saves and
    answers. A CALL_TOOL the server does not serve comes back in the step's actions;
    answer it with ``navigate(session_id, ToolResult(id=call.id, result=...))``.

    Example::

        step = await client.sessions.start("order-7", {"customer": "Ada"})
        while not step.terminal:
            step = await client.sessions.navigate("order-7", input("> "))
    """

    def __init__(
        self, channel: RemoteChannel, hooks: Iterable[LifecycleHook] = (), *, step_stream: bool = False
    ) -> None:
        self._channel = channel
        self._stub = sessions_pb2_grpc.SessionsStub(channel.channel)
        self._hooks = tuple(hooks)
        # Start, Navigate and Signal: unary calls, or steps of one shared Sessions.Steps stream.
        self._stream = StepStream(self._stub, channel.metadata) if step_stream else None
        self._steps: Any = self._stream or self._stub

    async def aclose(self) -> None:
        """End the step stream, if one is open (Client.close does this)."""
        if self._stream is not None:
            await self._stream.close()

    def _replay(self, events: rpb.LifecycleEvents | list[LifecycleEvent]) -> None:
        """The lifecycle events of a step, into the client's hooks (as an in-process
        engine delivers them; a hook's exception is logged)."""
        if not self._hooks:
            return
        if isinstance(events, rpb.LifecycleEvents):
            events = step_reports.events_from_proto(events)
        deliver(self._hooks, events, LOG)

    async def _call(self, method: Callable[..., Awaitable[T]], request: Any, *, idempotent: bool) -> T:
        try:
            return await self._channel.call(method, request, idempotent=idempotent, retry_deadline=True)
        except Exception as exc:
            # A failed step may have fired events too (an unhandled tool error's tool_return).
            self._replay(step_reports.events_of_failure(exc))
            raise

    async def start(
        self,
        session_id: str,
        context: Mapping[str, JSONValue] | None = None,
        *,
        request_id: str | None = None,
    ) -> StepResult:
        """Start ``session_id`` at the entry node, or resume it untouched when it exists
        (``context`` is then ignored); ``created`` in the result says which. Retried
        (see ``navigate``) with one request ID, so a retry of a Start that created the
        session still says ``created``."""
        request = spb.SessionsStartRequest(
            session_id=session_id,
            context_json=convert.dump_json(dict(context or {}), "context"),
            request_id=new_request_id() if request_id is None else request_id,
        )
        reply = await self._call(self._steps.Start, request, idempotent=True)
        self._replay(reply.events)
        return _step(reply)

    async def navigate(
        self,
        session_id: str,
        input: JSONValue | ToolResult = "",
        *,
        request_id: str | None = None,
        expected_revision: int | None = None,
    ) -> StepResult:
        """One step with user input (text, or any JSON value) or the answer to the pending
        tool call.

        Safe to retry, and retried: every call carries a request ID (a fresh UUID unless
        ``request_id`` is given; "" sends none and disables the retries), the server
        applies an ID at most once, so after UNAVAILABLE or a passed deadline the same
        request is sent again (up to the channel's ``retries``, with capped exponential
        backoff) and answered with the first outcome (``replayed`` set when an earlier
        attempt had been applied). ``expected_revision``: apply only while the session is
        at that revision (``state.revision`` of a step or ``get``), else RevisionMismatch."""
        rid = new_request_id() if request_id is None else request_id
        request = spb.SessionsNavigateRequest(
            session_id=session_id, input=convert.input_to_proto(input), request_id=rid
        )
        if expected_revision is not None:
            request.expected_revision = expected_revision
        reply = await self._call(self._steps.Navigate, request, idempotent=bool(rid))
        self._replay(reply.events)
        return _step(reply)

    async def signal(
        self,
        session_id: str,
        name: str,
        *,
        request_id: str | None = None,
        expected_revision: int | None = None,
    ) -> StepResult:
        """One step with a signal such as ``"interrupt"``; UnhandledSignal when no node
        handles it. Request ID, retries and ``expected_revision`` as for ``navigate``."""
        rid = new_request_id() if request_id is None else request_id
        request = spb.SessionsSignalRequest(session_id=session_id, signal=name, request_id=rid)
        if expected_revision is not None:
            request.expected_revision = expected_revision
        reply = await self._call(self._steps.Signal, request, idempotent=bool(rid))
        self._replay(reply.events)
        return _step(reply)

    async def get(self, session_id: str) -> StepResult:
        """The stored state and its actions; SessionNotFound when there is no such session."""
        request = spb.SessionsGetRequest(session_id=session_id)
        reply = await self._channel.call(self._stub.Get, request, idempotent=True)
        return convert.step_from_proto(reply.step)

    async def list(self, page_size: int = 0, page_token: str = "") -> SessionPage:
        """One page of session IDs in ascending order (0 = the server's page size); pass
        ``next_page_token`` back for the next page (empty on the last one)."""
        request = spb.SessionsListRequest(page_size=page_size, page_token=page_token)
        reply = await self._channel.call(self._stub.List, request, idempotent=True)
        return SessionPage(list(reply.session_ids), reply.next_page_token)

    async def delete(self, session_id: str) -> None:
        """Forget a session; deleting a missing one is not an error."""
        request = spb.SessionsDeleteRequest(session_id=session_id)
        await self._channel.call(self._stub.Delete, request, idempotent=True)

    async def watch(
        self, session_id: str, *, start_revision: int = 0, resume_for: float = RESUME_FOR
    ) -> AsyncGenerator[StateDiff, None]:
        """The session's changes as they are saved (each with its ``revision``), until the
        session is deleted or the caller stops iterating (or cancels). SessionNotFound
        when the session does not exist. Reconnects and resumes by itself; see
        ``watch_events`` for ``start_revision``, ``resume_for`` and what can be raised.

        Example::

            async for diff in client.sessions.watch("order-7"):
                print(diff.revision, diff.current_node_id, diff.context)
        """
        events = self.watch_events(session_id, start_revision=start_revision, resume_for=resume_for)
        try:
            async for event in events:
                if event.diff is not None:
                    yield event.diff
        finally:
            await events.aclose()

    async def watch_events(
        self, session_id: str, *, start_revision: int = 0, resume_for: float = RESUME_FOR
    ) -> AsyncGenerator[SessionEvent, None]:
        """The session's changes, bookmarks and deletion (trellis.domain.SessionEvent).

        ``start_revision`` 0 watches from now; n > 0 gets every change saved at revision n
        or later (pass the last revision you received + 1, e.g. after a restart). When
        the connection breaks or the server goes away, the watch reconnects (through
        the channel: another replica behind the same address, or the next address of
        an ``ipv4:`` list) and resumes after the last revision received, so no change is
        lost or repeated; it gives up with BackendUnavailable after ``resume_for``
        seconds without a server. WatchRevisionCompacted (its ``current`` holds the
        session now, None when it is gone) when the changes since that revision are no
        longer kept: start over from ``current`` and watch from its revision + 1.
        """
        next_revision = start_revision
        attempt = 0
        failing_since: float | None = None
        while True:
            request = spb.SessionsWatchRequest(
                session_id=session_id, start_revision=next_revision, allow_bookmarks=True
            )
            call = self._stub.Watch(request, metadata=self._channel.metadata)
            try:
                async for message in call:
                    attempt, failing_since = 0, None
                    event = convert.watch_event_from_proto(message)
                    next_revision = max(next_revision, event.revision + 1)
                    yield event
                    if event.deleted:
                        return
                if not next_revision:
                    return  # a server without revisions ends the stream on deletion
                problem: BaseException = BackendUnavailable(f"the watch of session {session_id!r} ended")
            except grpc.aio.AioRpcError as err:
                problem = self._channel.error(err)
            finally:
                call.cancel()
            if isinstance(problem, SessionNotFound) and next_revision:
                yield SessionEvent(revision=next_revision - 1, deleted=True)  # deleted while away
                return
            if isinstance(problem, WatchRevisionCompacted):
                problem.current = await self._current(session_id)
            loop = asyncio.get_running_loop()
            failing_since = failing_since if failing_since is not None else loop.time()
            if not isinstance(problem, BackendUnavailable) or loop.time() - failing_since > resume_for:
                raise problem
            await asyncio.sleep(self._channel.options.backoff(attempt))
            attempt += 1

    async def _current(self, session_id: str) -> StepResult | None:
        try:
            return await self.get(session_id)
        except SessionNotFound:
            return None


def new_request_id() -> str:
    """A fresh request ID (a random UUID): unique for every step a client sends."""
    return str(uuid.uuid4())


def _step(
    reply: spb.SessionsStartResponse | spb.SessionsNavigateResponse | spb.SessionsSignalResponse,
) -> StepResult:
    created = isinstance(reply, spb.SessionsStartResponse) and reply.created
    return dataclasses.replace(convert.step_from_proto(reply.step), created=created, replayed=reply.replayed)


class Engine:
    """The stateless engine (the Engine service): the caller carries the state.

    No tool is run and nothing is stored: a CALL_TOOL comes back as an action and
    is answered with ``navigate(state, ToolResult(...))``. When the server signs
    states, the signature of each returned state is remembered and sent back with it.

    Example::

        step = await client.engine.start("s1")
        step = await client.engine.navigate(step.state, "Ada")
        print(step.render.actions)
    """

    def __init__(self, channel: RemoteChannel, hooks: Iterable[LifecycleHook] = ()) -> None:
        self._remote = RemoteEngine(channel, owns_channel=False, hooks=hooks)

    async def start(self, session_id: str, context: Mapping[str, JSONValue] | None = None) -> StepResult:
        """A fresh state at the entry node, rendered."""
        return await self._remote.start_step(session_id, context)

    async def render(self, state: State) -> RenderResult:
        """The actions of ``state``'s current node."""
        return await self._remote.render(state)

    async def navigate(self, state: State, input: JSONValue | ToolResult = "") -> StepResult:
        """The next state for an input or a tool result, rendered; ``state`` is not changed.
        When the node it reached cannot be rendered, that error is raised (the state
        moved: ``render`` of it raises the same; the EnginePort's ``navigate`` of
        trellis.adapters.grpc.RemoteEngine returns the moved state)."""
        return await self._remote.navigate_step(state, input)

    async def signal(self, state: State, name: str) -> StepResult:
        """The next state after a signal, rendered; UnhandledSignal when nothing handles it."""
        return await self._remote.signal_step(state, name)

    async def inspect(self) -> list[Node]:
        """Every node of the server's graph, sorted by ID."""
        return await self._remote.inspect()


class Client:
    """An asynchronous client of a trellis server.

    ``target``: ``HOST:PORT`` (``grpc://`` prefix and ``?options`` accepted, see
    trellis.api.transport.parse_target). ``tls``: use TLS (implied by
    ``ca_file``/``cert_file``); ``cert_file`` + ``key_file``: mutual TLS; ``token``:
    bearer token for a server started with --token-file; ``timeout``: default
    deadline of each call in seconds; ``hooks``: lifecycle hooks (docs/engine.md) that receive
    the events the server's engine fired for each step or engine call, in order,
    before it returns. ``step_stream``: send ``sessions.start``/``navigate``/``signal``
    over one shared Sessions.Steps stream instead of a unary call each: the same
    results, errors and retries, at a fraction of the CPU per step when many steps run
    at once (docs/clients.md, "The step stream").

    Example::

        async with Client("127.0.0.1:50051") as client:
            step = await client.sessions.start("me")
            step = await client.sessions.navigate("me", "Ada")
            print(step.state.context)
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
        base = options or ChannelOptions(
            tls=tls, token=token, ca_file=ca_file, cert_file=cert_file, key_file=key_file, timeout=timeout
        )
        address, resolved = parse_target(target.removeprefix("grpc://"), base)
        self.channel = RemoteChannel(address, resolved)
        self.sessions = Sessions(self.channel, hooks, step_stream=step_stream)
        self.engine = Engine(self.channel, hooks)

    async def health(self) -> None:
        """Return when the server answers SERVING; raise BackendUnavailable otherwise."""
        await self.channel.probe()

    async def close(self) -> None:
        await self.sessions.aclose()
        await self.channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
