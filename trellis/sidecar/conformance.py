"""Wire-level conformance checks of a sidecar, in any language: what a trellis server
relies on when it talks to an ActionDispatcher or a GraphLoader.

The dispatcher checks that need a tool use two conventional ones, when the sidecar
lists them (else those checks are skipped): an *echo* tool that returns its arguments,
and a *sleep* tool that waits ``{"seconds": N}``. Names are options (``--echo``,
``--sleep``). Each check is a row of the table: PASS, FAIL or SKIP with what was seen.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc  # type: ignore[import-untyped]
import orjson
from grpc_health.v1 import health_pb2, health_pb2_grpc

from trellis.adapters.grpc.channel import RemoteChannel
from trellis.api import convert
from trellis.api.transport import ChannelOptions, parse_target
from trellis.api.v1 import dispatcher_pb2 as dpb
from trellis.api.v1 import dispatcher_pb2_grpc, graph_pb2, graph_pb2_grpc
from trellis.api.v1 import types_pb2 as pb
from trellis.dispatching import DispatchContext

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
CALL_TIMEOUT = 10.0
# How long the deadline check lets the sidecar overrun the deadline it was given before
# calling it ignored (the RPC's own deadline is far later).
DEADLINE_SLACK = 3.0
MAX_NODES_CHECKED = 50


@dataclass(slots=True)
class Check:
    name: str
    outcome: str
    detail: str = ""


class _Skip(Exception):
    pass


class _Fail(Exception):
    pass


def channel_for(address: str, options: ChannelOptions | None = None) -> RemoteChannel:
    """``HOST:PORT``, ``grpc://HOST:PORT`` or ``unix:///PATH`` (with ``?token_file=...``)."""
    if address.startswith("grpc://"):
        address = address[len("grpc://"):]
    target, channel_options = parse_target(address, options)
    return RemoteChannel(target, channel_options)


async def _run(name: str, check: Callable[[], Awaitable[str]]) -> Check:
    try:
        return Check(name, PASS, await check())
    except _Skip as exc:
        return Check(name, SKIP, str(exc))
    except _Fail as exc:
        return Check(name, FAIL, str(exc))
    except grpc.aio.AioRpcError as err:
        return Check(name, FAIL, f"RPC failed: {err.code().name}: {err.details()}")
    except TimeoutError:
        return Check(name, FAIL, "no answer in time")
    except Exception as exc:
        return Check(name, FAIL, f"{type(exc).__name__}: {exc}")


async def _health(channel: RemoteChannel, service: str) -> str:
    stub = health_pb2_grpc.HealthStub(channel.channel)
    overall = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT)
    if overall.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(overall.status)
        raise _Fail(f"grpc.health.v1 Check(''): {status}")
    try:
        named = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.NOT_FOUND:
            return f"'' SERVING ({service} not registered with health)"
        raise
    if named.status != health_pb2.HealthCheckResponse.SERVING:
        raise _Fail(f"{service}: {health_pb2.HealthCheckResponse.ServingStatus.Name(named.status)}")
    return f"'' and {service} SERVING"


class DispatcherChecks:
    def __init__(self, channel: RemoteChannel, echo: str = "echo", sleep: str = "sleep") -> None:
        self._channel = channel
        self._stub = dispatcher_pb2_grpc.ActionDispatcherStub(channel.channel)
        self._echo = echo
        self._sleep = sleep
        self._tools: dict[str, dpb.ToolInfo] = {}
        self._run_id = uuid.uuid4().hex[:12]

    async def _dispatch(
        self, name: str, args: dict[str, Any], context: DispatchContext, rpc_seconds: float = CALL_TIMEOUT
    ) -> pb.ToolResult:
        call = pb.ToolCall(
            id=f"conformance-{uuid.uuid4().hex[:8]}",
            name=name,
            args_json=orjson.dumps(args).decode(),
            idempotency_key=context.idempotency_key,
        )
        reply = await self._stub.Dispatch(
            dpb.DispatchRequest(call=call, context=convert.dispatch_context_to_proto(context)),
            timeout=rpc_seconds,
            metadata=self._channel.metadata,
        )
        if reply.result.id != call.id:
            raise _Fail(f"the result's id {reply.result.id!r} is not the call's {call.id!r}")
        result: pb.ToolResult = reply.result
        return result

    def _context(self, **fields: Any) -> DispatchContext:
        return DispatchContext(session_id=f"conformance-{self._run_id}", node_id="conformance", **fields)

    def _need(self, tool: str) -> None:
        if tool not in self._tools:
            raise _Skip(f"the sidecar lists no {tool!r} tool (name it with --echo/--sleep)")

    async def health(self) -> str:
        return await _health(self._channel, "trellis.v1.ActionDispatcher")

    async def list_tools(self) -> str:
        reply = await self._stub.ListTools(
            dpb.ListToolsRequest(), timeout=CALL_TIMEOUT, metadata=self._channel.metadata
        )
        if not reply.tools:
            raise _Fail("ListTools returned no tools")
        for index, tool in enumerate(reply.tools):
            if tool.name in self._tools:
                raise _Fail(f"tool {tool.name!r} is listed twice")
            try:
                convert.tool_info_from_proto(tool, f"tools[{index}]")
            except Exception as exc:
                raise _Fail(str(exc)) from None
            self._tools[tool.name] = tool
        return f"{len(reply.tools)} tools: {', '.join(sorted(self._tools))}"

    async def unknown_tool(self) -> str:
        result = await self._dispatch(f"no-such-tool-{self._run_id}", {}, self._context())
        if not result.is_error:
            raise _Fail("a call of an unknown tool succeeded")
        return f"error result: {result.error[:60]}"

    async def invalid_arguments(self) -> str:
        self._need(self._sleep)
        if not self._tools[self._sleep].args_schema_json:
            raise _Skip(f"{self._sleep!r} declares no argument schema")
        result = await self._dispatch(self._sleep, {"seconds": "not a number"}, self._context())
        if not result.is_error:
            raise _Fail(f"{self._sleep}(seconds='not a number') succeeded")
        return f"error result: {result.error[:60]}"

    async def echo(self) -> str:
        self._need(self._echo)
        args = {"text": "olá 🙂", "n": 3, "nested": {"list": [1, None, True]}}
        result = await self._dispatch(self._echo, args, self._context())
        if result.is_error:
            raise _Fail(f"error result: {result.error}")
        if orjson.loads(result.result_json or "null") != args:
            raise _Fail(f"result {result.result_json!r} is not the arguments")
        return "arguments came back intact"

    async def dedupe(self) -> str:
        self._need(self._echo)
        key = f"conformance-key-{uuid.uuid4().hex}"
        first = await self._dispatch(self._echo, {"run": 1}, self._context(idempotency_key=key))
        retry = self._context(idempotency_key=key, attempt=2)
        again = await self._dispatch(self._echo, {"run": 2}, retry)
        if first.is_error or again.is_error:
            raise _Fail(f"error result: {first.error or again.error}")
        if orjson.loads(again.result_json or "null") != {"run": 1}:
            raise _Fail(f"the retry with the same key ran again (got {again.result_json})")
        return "a retry with the same key got the first run's result"

    async def stale_fence(self) -> str:
        self._need(self._echo)
        session = f"conformance-fence-{uuid.uuid4().hex[:8]}"
        newer = DispatchContext(session_id=session, node_id="conformance", fencing_token=1000)
        result = await self._dispatch(self._echo, {"token": 1000}, newer)
        if result.is_error:
            raise _Fail(f"the current holder's call failed: {result.error}")
        older = DispatchContext(session_id=session, node_id="conformance", fencing_token=999)
        try:
            stale = await self._dispatch(self._echo, {"token": 999}, older)
        except grpc.aio.AioRpcError as err:
            if err.code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION):
                return f"refused with {err.code().name}"
            raise
        if stale.is_error and stale.error_type == "StaleFencingToken":
            return "refused with an error result (StaleFencingToken)"
        raise _Fail("a call with token 999 ran after one with token 1000 for the same session")

    async def deadline(self) -> str:
        self._need(self._sleep)
        given = 0.5
        started = time.monotonic()
        context = self._context(deadline=time.time() + given)
        try:
            result = await self._dispatch(
                self._sleep, {"seconds": 30}, context, rpc_seconds=given + DEADLINE_SLACK
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise _Fail(f"no answer {DEADLINE_SLACK:g}s past the context's deadline") from None
            raise
        took = time.monotonic() - started
        if not result.is_error:
            raise _Fail("a 30 s sleep with a 0.5 s deadline succeeded")
        return f"error result after {took:.2f}s: {result.error[:50]}"

    async def run(self) -> list[Check]:
        checks = [
            ("health", self.health),
            ("ListTools shape", self.list_tools),
            ("unknown tool is an error result", self.unknown_tool),
            ("invalid arguments are an error result", self.invalid_arguments),
            ("echo round trip", self.echo),
            ("idempotency key dedupe", self.dedupe),
            ("stale fencing token refused", self.stale_fence),
            ("deadline honoured", self.deadline),
        ]
        return [await _run(name, check) for name, check in checks]


class LoaderChecks:
    def __init__(self, channel: RemoteChannel) -> None:
        self._channel = channel
        self._stub = graph_pb2_grpc.GraphLoaderStub(channel.channel)
        self._ids: list[str] = []

    async def health(self) -> str:
        return await _health(self._channel, "trellis.v1.GraphLoader")

    async def list_nodes(self) -> str:
        reply = await self._stub.ListNodes(
            graph_pb2.ListNodesRequest(), timeout=CALL_TIMEOUT, metadata=self._channel.metadata
        )
        self._ids = list(reply.node_ids)
        if not self._ids:
            raise _Fail("ListNodes returned no nodes")
        if len(set(self._ids)) != len(self._ids):
            raise _Fail("ListNodes returned a node ID twice")
        return f"{len(self._ids)} nodes"

    async def get_nodes(self) -> str:
        if not self._ids:
            raise _Skip("no nodes listed")
        for node_id in self._ids[:MAX_NODES_CHECKED]:
            reply = await self._stub.GetNode(
                graph_pb2.GetNodeRequest(node_id=node_id),
                timeout=CALL_TIMEOUT,
                metadata=self._channel.metadata,
            )
            if reply.node.id != node_id:
                raise _Fail(f"GetNode({node_id!r}) returned node {reply.node.id!r}")
        return f"{min(len(self._ids), MAX_NODES_CHECKED)} nodes read back by ID"

    async def unknown_node(self) -> str:
        try:
            await self._stub.GetNode(
                graph_pb2.GetNodeRequest(node_id=f"no-such-node-{uuid.uuid4().hex[:8]}"),
                timeout=CALL_TIMEOUT,
                metadata=self._channel.metadata,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return "NOT_FOUND"
            raise _Fail(f"expected NOT_FOUND, got {err.code().name}") from None
        raise _Fail("GetNode of an unknown ID succeeded")

    async def watch(self) -> str:
        call = self._stub.Watch(graph_pb2.GraphLoaderWatchRequest(), metadata=self._channel.metadata)
        try:
            # A watch stays open until something changes: no answer within the wait is right.
            async with asyncio.timeout(1.0):
                await call.read()
            return "open (an event arrived)"
        except TimeoutError:
            return "open, waiting for changes"
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNIMPLEMENTED or "WATCH_NOT_SUPPORTED" in str(err.details()):
                raise _Skip("the loader cannot watch") from None
            raise
        finally:
            call.cancel()

    async def run(self) -> list[Check]:
        checks = [
            ("health", self.health),
            ("ListNodes", self.list_nodes),
            ("GetNode of each listed node", self.get_nodes),
            ("unknown node is NOT_FOUND", self.unknown_node),
            ("Watch stays open", self.watch),
        ]
        return [await _run(name, check) for name, check in checks]


def table(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'check'.ljust(width)}  result  detail", f"{'-' * width}  ------  ------"]
    lines += [f"{c.name.ljust(width)}  {c.outcome.ljust(6)}  {c.detail}" for c in checks]
    failed = sum(c.outcome == FAIL for c in checks)
    passed = sum(c.outcome == PASS for c in checks)
    skipped = sum(c.outcome == SKIP for c in checks)
    lines.append(f"{passed} passed, {failed} failed, {skipped} skipped")
    return "\n".join(lines)
