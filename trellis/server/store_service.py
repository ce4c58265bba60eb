"""The StateStore service: exposes any StateStore (conditional saves included).

Fencing tokens do not cross the wire: a remote caller holding a lock checks it
itself before Save (the etcd store, which fences atomically, is used directly).
"""

from __future__ import annotations

import grpc  # type: ignore[import-untyped]

from trellis.api import convert
from trellis.api.v1 import store_pb2 as spb
from trellis.api.v1 import store_pb2_grpc
from trellis.errors import InvalidInput
from trellis.ports.store import StateStore
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
        expected = request.expected_revision if request.HasField("expected_revision") else None
        revision = await self._store.save(request.session_id, state, expected_revision=expected)
        return spb.SaveResponse(revision=revision)

    @guarded_unary
    async def Load(self, request: spb.LoadRequest, context: grpc.aio.ServicerContext) -> spb.LoadResponse:
        state = await self._store.load(request.session_id)
        return spb.LoadResponse(state=convert.state_to_proto(state))

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
