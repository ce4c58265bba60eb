"""The GraphLoader service: exposes any GraphLoader (and its watch, when it has one)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc  # type: ignore[import-untyped]

from trellis.api import convert
from trellis.api.v1 import graph_pb2 as gpb
from trellis.api.v1 import graph_pb2_grpc
from trellis.errors import WatchNotSupported
from trellis.ports.loader import GraphLoader, Watchable
from trellis.server.guards import Servicer, guarded_stream, guarded_unary
from trellis.server.observe import Observer
from trellis.server.watch_streams import WatchStreams


class GraphLoaderService(Servicer, graph_pb2_grpc.GraphLoaderServicer):
    service_name = "GraphLoader"

    def __init__(
        self, loader: GraphLoader, observer: Observer, watch_streams: WatchStreams | None = None
    ) -> None:
        super().__init__(observer)
        self._loader = loader
        self._watch_streams = watch_streams or WatchStreams()

    @guarded_unary
    async def GetNode(
        self, request: gpb.GetNodeRequest, context: grpc.aio.ServicerContext
    ) -> gpb.GetNodeResponse:
        node = await self._loader.get_node(request.node_id)
        return gpb.GetNodeResponse(node=convert.node_to_proto(node))

    @guarded_unary
    async def ListNodes(
        self, request: gpb.ListNodesRequest, context: grpc.aio.ServicerContext
    ) -> gpb.ListNodesResponse:
        return gpb.ListNodesResponse(node_ids=await self._loader.list_nodes())

    @guarded_stream
    async def Watch(
        self, request: gpb.GraphLoaderWatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gpb.GraphLoaderWatchResponse]:
        if not isinstance(self._loader, Watchable):
            raise WatchNotSupported(f"the server's loader ({type(self._loader).__name__}) cannot watch")
        with self._watch_streams.slot("GraphLoader.Watch"):
            changes = self._loader.watch()
            try:
                async for change in changes:
                    node_ids, revision = convert.graph_change_fields(change)
                    yield gpb.GraphLoaderWatchResponse(node_ids=node_ids, revision=revision)
            finally:
                close = getattr(changes, "aclose", None)
                if close is not None:
                    await close()
