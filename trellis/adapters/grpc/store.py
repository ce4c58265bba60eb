"""RemoteStateStore: the StateStore port as a client of a server's StateStore service."""

from __future__ import annotations

from trellis.adapters.grpc.channel import RemoteChannel
from trellis.adapters.state_json import reject_non_finite
from trellis.api import convert
from trellis.api.v1 import store_pb2 as spb
from trellis.api.v1 import store_pb2_grpc
from trellis.domain import AppliedRequest, State
from trellis.errors import InvalidInput, LockLost
from trellis.ports.locker import LockHandle
from trellis.ports.store import SessionPage


class RemoteStateStore:
    """A StateStore whose sessions live in another process.

    A fenced save sends the lock's fencing token with the state: the StateStore service
    refuses it (LockLost) when a save under a larger token of that session was stored
    before, checked in the same conditional write as the state. A handle this process
    already knows to be lost is refused here, before the call. The request IDs recently
    applied to a session travel beside its state both ways. Loads and lists are retried
    on UNAVAILABLE; a save is not (it may have been applied before the connection broke).
    """

    def __init__(self, channel: RemoteChannel, *, owns_channel: bool = True) -> None:
        self._channel = channel
        self._stub = store_pb2_grpc.StateStoreStub(channel.channel)
        self._owns_channel = owns_channel

    async def save(
        self,
        session_id: str,
        state: State,
        *,
        expected_revision: int | None = None,
        fence: LockHandle | None = None,
    ) -> int:
        if fence is not None and not fence.held():
            raise LockLost(f"session {session_id!r}: the lock (token {fence.token}) is no longer held")
        request = spb.SaveRequest(session_id=session_id, state=convert.state_to_proto(state))
        request.state.session_id = session_id
        if "null" in request.state.context_json or "null" in request.state.system_context_json:
            # The JSON codec writes NaN and infinities as null: refuse them as every store does.
            reject_non_finite(state.context, "context")
            reject_non_finite(state.system_context, "system_context")
        if expected_revision is not None:
            request.expected_revision = expected_revision
        for applied in state.requests:
            request.requests.add(id=applied.id, digest=applied.digest)
        if fence is not None:
            request.fence.key = fence.key
            request.fence.token = fence.token
        reply = await self._channel.call(self._stub.Save, request, idempotent=False)
        return int(reply.revision)

    async def load(self, session_id: str) -> State:
        reply = await self._channel.call(
            self._stub.Load, spb.LoadRequest(session_id=session_id), idempotent=True
        )
        state = convert.state_from_proto(reply.state)
        state.requests = tuple(AppliedRequest(r.id, r.digest) for r in reply.requests)
        return state

    async def delete(self, session_id: str) -> None:
        await self._channel.call(
            self._stub.Delete, spb.StateStoreDeleteRequest(session_id=session_id), idempotent=True
        )

    async def list(self, page_size: int = 0, page_token: str = "") -> SessionPage:
        if page_size < 0:
            raise InvalidInput(f"page_size: must not be negative, got {page_size}")
        reply = await self._channel.call(
            self._stub.List,
            spb.StateStoreListRequest(page_size=page_size, page_token=page_token),
            idempotent=True,
        )
        return SessionPage(list(reply.session_ids), reply.next_page_token)

    async def probe(self) -> None:
        await self._channel.probe()

    async def aclose(self) -> None:
        if self._owns_channel:
            await self._channel.close()
