"""The StateStore service: exposes any StateStore (conditional saves included).

A Save may carry the caller's fence (its lock's name and fencing token). The
service keeps, with each session's state, the largest token a save of it was
made under (``State.fence_token``) and refuses a save under a smaller one
(LockLost): the check reads the stored state and the write is conditioned on
the revision it read, so no other save can slip in between (Kleppmann's
fencing token, checked by the storage itself). The request IDs recently
applied to a session (trellis.request_ids) travel beside the state.
"""

from __future__ import annotations

import grpc  # type: ignore[import-untyped]

from trellis.adapters.rules import check_expected_revision
from trellis.api import convert
from trellis.api.v1 import store_pb2 as spb
from trellis.api.v1 import store_pb2_grpc
from trellis.domain import AppliedRequest, State
from trellis.errors import ConflictError, InvalidInput, LockLost, SessionNotFound
from trellis.ports.store import StateStore
from trellis.request_ids import RECENT_REQUESTS, check_request_id
from trellis.server.guards import Servicer, guarded_unary
from trellis.server.limits import Limits
from trellis.server.observe import Observer


class StateStoreService(Servicer, store_pb2_grpc.StateStoreServicer):
    service_name = "StateStore"

    def __init__(self, store: StateStore, observer: Observer, limits: Limits) -> None:
        super().__init__(observer, limits)
        self._store = store
        self._limits = limits

    @guarded_unary
    async def Save(self, request: spb.SaveRequest, context: grpc.aio.ServicerContext) -> spb.SaveResponse:
        if request.state.session_id and request.state.session_id != request.session_id:
            raise InvalidInput(
                f"state.session_id {request.state.session_id!r} does not match "
                f"session_id {request.session_id!r}",
                field="state.session_id",
            )
        self._limits.check_stored_state(request.state, request.session_id)
        state = convert.state_from_proto(request.state)
        state.session_id = request.session_id
        state.requests = _requests_from(request)
        expected = request.expected_revision if request.HasField("expected_revision") else None
        if request.HasField("fence"):
            revision = await self._fenced_save(request.session_id, state, expected, request.fence)
        else:
            revision = await self._store.save(request.session_id, state, expected_revision=expected)
        return spb.SaveResponse(revision=revision)

    async def _fenced_save(
        self, session_id: str, state: State, expected: int | None, fence: spb.StoreFence
    ) -> int:
        if fence.token <= 0:
            raise InvalidInput(f"fence.token: must be positive, got {fence.token}")
        for _ in range(_FENCED_ATTEMPTS):
            try:
                current: State | None = await self._store.load(session_id)
            except SessionNotFound:
                current = None
            stored = current.revision if current is not None else 0
            check_expected_revision(session_id, stored, expected)
            if current is not None and current.fence_token > fence.token:
                raise LockLost(
                    f"lock {fence.key!r} (token {fence.token}) was taken over: session {session_id!r} "
                    f"was saved under token {current.fence_token}; not saved"
                )
            state.fence_token = fence.token
            try:
                # Conditioned on the revision whose token was just compared.
                return await self._store.save(session_id, state, expected_revision=stored)
            except ConflictError:
                if expected is not None:
                    raise
                # An unconditional save that raced another one: compare the tokens again.
        raise ConflictError(f"session {session_id!r} kept changing while a fenced save was compared")

    @guarded_unary
    async def Load(self, request: spb.LoadRequest, context: grpc.aio.ServicerContext) -> spb.LoadResponse:
        state = await self._store.load(request.session_id)
        response = spb.LoadResponse(state=convert.state_to_proto(state))
        for applied in state.requests:
            response.requests.add(id=applied.id, digest=applied.digest)
        return response

    @guarded_unary
    async def Delete(
        self, request: spb.StateStoreDeleteRequest, context: grpc.aio.ServicerContext
    ) -> spb.StateStoreDeleteResponse:
        await self._store.delete(request.session_id)
        return spb.StateStoreDeleteResponse()

    @guarded_unary
    async def List(
        self, request: spb.StateStoreListRequest, context: grpc.aio.ServicerContext
    ) -> spb.StateStoreListResponse:
        if request.page_size < 0:
            raise InvalidInput(f"page_size: must not be negative, got {request.page_size}", field="page_size")
        page = await self._store.list(request.page_size, request.page_token)
        return spb.StateStoreListResponse(session_ids=page.session_ids, next_page_token=page.next_page_token)


_FENCED_ATTEMPTS = 3
"""Tries of an unconditional fenced save that keeps racing other saves."""
_MAX_DIGEST = 32


def _requests_from(request: spb.SaveRequest) -> tuple[AppliedRequest, ...]:
    """The request IDs of a Save, checked like those of a step (hostile input)."""
    if len(request.requests) > RECENT_REQUESTS:
        raise InvalidInput(
            f"requests: {len(request.requests)} request IDs; a session keeps at most {RECENT_REQUESTS}"
        )
    applied = []
    for item in request.requests:
        check_request_id(item.id)
        if not item.id or len(item.digest) > _MAX_DIGEST:
            raise InvalidInput(
                f"requests: an entry needs an ID and a digest of at most {_MAX_DIGEST} characters"
            )
        applied.append(AppliedRequest(item.id, item.digest))
    return tuple(applied)
