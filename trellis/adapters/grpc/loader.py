"""RemoteGraphLoader: the GraphLoader and Watchable ports as a client of a GraphLoader service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc  # type: ignore[import-untyped]

from trellis.adapters.grpc.channel import RemoteChannel
from trellis.api import convert
from trellis.api.v1 import graph_pb2 as gpb
from trellis.api.v1 import graph_pb2_grpc
from trellis.domain import Node
from trellis.errors import BackendUnavailable
from trellis.ports.loader import GraphChange
from trellis.streams import QueueStream

LOG = logging.getLogger("trellis.adapters.grpc")
# A server that restarts or shuts down ends its streams with one of these.
_RECONNECT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})


class RemoteGraphLoader:
    """Nodes served by another process. Reads are retried on UNAVAILABLE.

    ``watch`` follows the server's change stream. When the stream breaks because the
    server went away (UNAVAILABLE), it is re-opened with capped exponential backoff
    for as long as the consumer keeps iterating; after a reconnect it first yields a
    GraphChange with empty ``node_ids`` ("anything may have changed"), since edits
    made while it was disconnected were not seen. Other errors (e.g. the server's
    loader cannot watch: WatchNotSupported) end the iteration with that exception.
    """

    def __init__(self, channel: RemoteChannel, *, owns_channel: bool = True) -> None:
        self._channel = channel
        self._stub = graph_pb2_grpc.GraphLoaderStub(channel.channel)
        self._owns_channel = owns_channel
        self._streams: set[QueueStream[GraphChange]] = set()

    async def get_node(self, node_id: str) -> Node:
        reply = await self._channel.call(
            self._stub.GetNode, gpb.GetNodeRequest(node_id=node_id), idempotent=True
        )
        return convert.node_from_proto(reply.node)

    async def list_nodes(self) -> list[str]:
        reply = await self._channel.call(self._stub.ListNodes, gpb.ListNodesRequest(), idempotent=True)
        return list(reply.node_ids)

    def watch(self) -> QueueStream[GraphChange]:
        # A stream fed by a task, not an async generator: a consumer waiting with a
        # timeout must not end the watch, the task keeps following the server.
        stream = QueueStream[GraphChange](feed=self._follow, on_close=self._streams.discard)
        self._streams.add(stream)
        return stream

    async def _follow(self, emit: Callable[[GraphChange], object]) -> None:
        """Feed ``emit`` with the server's changes, reconnecting while the server is away."""
        attempt = 0
        reconnected = False
        while True:
            call = self._stub.Watch(gpb.GraphLoaderWatchRequest(), metadata=self._channel.metadata)
            try:
                if reconnected:
                    # A server-streaming call says nothing until its first change, so a
                    # unary call on the same connection proves the server is back (and was
                    # sent after the stream's request) before the reconnect is announced.
                    await self._channel.call(self._stub.ListNodes, gpb.ListNodesRequest(), idempotent=False)
                    reconnected = False
                    attempt = 0
                    emit(GraphChange(frozenset()))
                async for message in call:
                    attempt = 0
                    emit(convert.graph_change_from_fields(list(message.node_ids), message.revision))
                # The server ended the stream (its loader closed, e.g. on shutdown): re-open.
                reconnected = True
            except grpc.aio.AioRpcError as err:
                if err.code() not in _RECONNECT:
                    raise self._channel.error(err) from None
                reconnected = True
                LOG.info("graph watch on %s lost (%s); reconnecting", self._channel.address, err.details())
            except BackendUnavailable:
                reconnected = True
            finally:
                call.cancel()
            await asyncio.sleep(self._channel.options.backoff(attempt))
            attempt = min(attempt + 1, 16)

    async def probe(self) -> None:
        await self._channel.probe()

    async def aclose(self) -> None:
        """End every watch and, when owned, close the channel."""
        for stream in list(self._streams):
            await stream.aclose()
        if self._owns_channel:
            await self._channel.close()
