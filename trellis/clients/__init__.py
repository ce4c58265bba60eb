"""The Python SDK of the trellis gRPC service.

``Client`` (asyncio) and ``SyncClient`` (blocking), each with ``.sessions``
(durable sessions kept by the server) and ``.engine`` (stateless: the caller
carries the state). See docs/clients.md.
"""

from trellis.clients.client import Client, Engine, Sessions
from trellis.clients.sync import SyncClient, SyncEngine, SyncSessions

__all__ = ["Client", "Engine", "Sessions", "SyncClient", "SyncEngine", "SyncSessions"]
