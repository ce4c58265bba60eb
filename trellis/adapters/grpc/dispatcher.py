"""RemoteDispatcher: the ActionDispatcher port as a client of a tool sidecar's service.

What it adds to one Dispatch RPC:

* discovery: the sidecar's ListTools answer says which tools it serves and how to
  call them (timeout, retry policy, idempotent). It is read by ``refresh`` at start
  and at every health probe, so a sidecar that starts late or restarts with another
  tool list is re-read. ``tools=`` (configured names) overrides what is served;
  ``policies`` (server configuration) override what the sidecar declares.
* the dispatch context (session, node, attempt, deadline, idempotency key, fencing
  token) on every request; the attempt's deadline is the RPC's gRPC deadline, and a
  cancelled step cancels the RPC, hence the tool in the sidecar.
* retries by the tool's policy, only for idempotent tools or calls that carry an
  idempotency key (the sidecar then runs the tool once per key).

Outcomes: an attempt past its timeout is an error result (type ``Timeout``), so the
node's ``on_error`` is taken; a sidecar that cannot be reached (after any retries)
raises BackendUnavailable, so the step fails as a whole and nothing is saved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence

import grpc  # type: ignore[import-untyped]

from trellis.adapters.grpc.channel import RemoteChannel
from trellis.api import convert
from trellis.api.v1 import dispatcher_pb2 as dpb
from trellis.api.v1 import dispatcher_pb2_grpc
from trellis.dispatching import TIMEOUT_ERROR, UNAVAILABLE_ERROR, DispatchContext, ToolInfo, ToolPolicy
from trellis.domain import ToolCall, ToolResult
from trellis.errors import BackendUnavailable, DispatchError, InvalidInput, LockLost, TrellisError

LOG = logging.getLogger("trellis.dispatcher")

# Default time of one attempt when neither the sidecar nor the server names one.
DEFAULT_TOOL_TIMEOUT = 30.0
LIST_TOOLS_TIMEOUT = 5.0


class RemoteDispatcher:
    """Runs tool calls on a remote ActionDispatcher service.

    ``tools``: the names this dispatcher serves, overriding its ListTools answer
    (None = what it lists; every tool while it has not answered, or when it does not
    implement ListTools; with ``claims_unknown=False``, none until it has answered).
    ``policies``: per-tool timeout/retry set by the server.
    """

    def __init__(
        self,
        channel: RemoteChannel,
        tools: Iterable[str] | None = None,
        *,
        owns_channel: bool = True,
        policies: Mapping[str, ToolPolicy] | None = None,
        claims_unknown: bool = True,
    ) -> None:
        self._channel = channel
        self._stub = dispatcher_pb2_grpc.ActionDispatcherStub(channel.channel)
        self._tools = frozenset(tools) if tools is not None else None
        self._owns_channel = owns_channel
        self._policies = dict(policies or {})
        # Whether, before its first ListTools answer, it serves every tool (the one default
        # dispatcher) or none (one of several sidecars a router picks from by their lists).
        self._claims_unknown = claims_unknown
        # None: never answered ListTools (or does not implement it).
        self._catalog: dict[str, ToolInfo] | None = None

    @property
    def tools(self) -> frozenset[str] | None:
        if self._tools is not None:
            return self._tools
        return frozenset(self._catalog) if self._catalog is not None else None

    @property
    def address(self) -> str:
        return self._channel.address

    def serves(self, tool_name: str) -> bool:
        if self._tools is not None:
            return tool_name in self._tools
        if self._catalog is None:
            return self._claims_unknown
        return tool_name in self._catalog

    def info(self, tool_name: str) -> ToolInfo:
        """How a call of ``tool_name`` is made: the sidecar's declaration under the
        server's policy."""
        declared = self._catalog.get(tool_name) if self._catalog is not None else None
        policy = self._policies.get(tool_name)
        if policy is None:
            return declared or ToolInfo(name=tool_name)
        return policy.over(declared, tool_name)

    async def list_tools(self) -> Sequence[ToolInfo]:
        """The sidecar's ListTools answer. Raises BackendUnavailable when it cannot be
        reached, DispatchError when the answer is invalid."""
        try:
            reply = await self._stub.ListTools(
                dpb.ListToolsRequest(), timeout=LIST_TOOLS_TIMEOUT, metadata=self._channel.metadata
            )
        except grpc.aio.AioRpcError as err:
            raise self._channel.error(err) from None
        try:
            return [convert.tool_info_from_proto(t, f"tools[{i}]") for i, t in enumerate(reply.tools)]
        except InvalidInput as exc:
            raise DispatchError(f"dispatcher {self.address}: invalid ListTools answer: {exc}") from None

    async def refresh(self) -> None:
        """Read the sidecar's tool list again (a sidecar without ListTools serves every tool)."""
        try:
            tools = await self.list_tools()
        except TrellisError as exc:
            if "UNIMPLEMENTED" in str(exc):
                self._catalog = None
                return
            raise
        catalog = {tool.name: tool for tool in tools}
        if self._catalog is None or catalog.keys() != self._catalog.keys():
            LOG.info("dispatcher %s serves: %s", self.address, ", ".join(sorted(catalog)) or "no tools")
        self._catalog = catalog

    async def dispatch(self, call: ToolCall, context: DispatchContext | None = None) -> ToolResult:
        info = self.info(call.name)
        context = context or DispatchContext(idempotency_key=call.idempotency_key)
        if not context.idempotency_key:
            context = DispatchContext(
                session_id=context.session_id,
                node_id=context.node_id,
                attempt=context.attempt,
                deadline=context.deadline,
                idempotency_key=call.idempotency_key,
                fencing_token=context.fencing_token,
            )
        policy = info.retry
        # A retry must not run a tool twice: only an idempotent tool, or one the sidecar
        # deduplicates by the call's idempotency key, is retried.
        retryable = policy is not None and (info.idempotent or bool(context.idempotency_key))
        timeout = info.timeout or self._channel.options.timeout or DEFAULT_TOOL_TIMEOUT
        while True:
            result, unavailable = await self._attempt(call, context, timeout)
            failed = unavailable is not None or result is None or result.is_error
            if not failed or not retryable or policy is None:
                break
            error_type = UNAVAILABLE_ERROR if unavailable is not None else result.error_type if result else ""
            next_attempt = context.attempt + 1
            wait = policy.wait_before(next_attempt)
            if not policy.retries(error_type) or not policy.allows(next_attempt):
                break
            if context.deadline is not None and time.time() + wait >= context.deadline:
                break
            LOG.info(
                "tool %r (call %r) attempt %d failed (%s); retrying in %.3gs",
                call.name, call.id, context.attempt, error_type or "error", wait,
            )
            await asyncio.sleep(wait)
            context = context.next_attempt()
        if unavailable is not None:
            raise unavailable
        assert result is not None
        return result

    async def _attempt(
        self, call: ToolCall, context: DispatchContext, seconds: float
    ) -> tuple[ToolResult | None, BackendUnavailable | None]:
        if context.deadline is not None:
            seconds = min(seconds, max(context.deadline - time.time(), 0.001))
        sent = DispatchContext(
            session_id=context.session_id,
            node_id=context.node_id,
            attempt=context.attempt,
            deadline=time.time() + seconds,
            idempotency_key=context.idempotency_key,
            fencing_token=context.fencing_token,
        )
        request = dpb.DispatchRequest(
            call=convert.tool_call_to_proto(call), context=convert.dispatch_context_to_proto(sent)
        )
        try:
            reply = await self._channel.call(self._stub.Dispatch, request, idempotent=False, deadline=seconds)
        except TimeoutError:
            # grpc cancelled the call, in the sidecar too; the flow decides what follows.
            return (
                ToolResult(
                    id=call.id,
                    is_error=True,
                    error=f"tool {call.name!r} timed out after {seconds:.3g}s "
                    f"(dispatcher {self.address}, attempt {context.attempt})",
                    error_type=TIMEOUT_ERROR,
                ),
                None,
            )
        except BackendUnavailable as exc:
            # Say which tool and which sidecar: the channel's words are about "a server".
            exc.message = (
                f"tool {call.name!r} (call {call.id!r}, attempt {context.attempt}) was not run: "
                f"dispatcher sidecar {self.address} is unavailable ({exc.message})"
            )
            exc.args = (exc.message,)
            return None, exc
        except (DispatchError, LockLost):
            raise  # LockLost: the sidecar refused a stale fencing token; the step must fail as such
        except TrellisError as exc:
            raise DispatchError(
                f"tool {call.name!r} (call {call.id!r}) could not be dispatched: {exc}"
            ) from exc
        return convert.tool_result_from_proto(reply.result, "result"), None

    async def probe(self) -> None:
        """Health check, then the tool list again: a sidecar that came back may serve
        other tools than before."""
        await self._channel.probe()
        await self.refresh()

    async def aclose(self) -> None:
        if self._owns_channel:
            await self._channel.close()
