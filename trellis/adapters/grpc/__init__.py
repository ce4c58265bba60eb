"""Remote adapters: the ports implemented by calling a trellis server's services.

``RemoteGraphLoader``, ``RemoteStateStore``, ``RemoteDispatcher`` and ``RemoteEngine``
each wrap a ``RemoteChannel`` (TLS, token, deadlines, keepalive, retries of idempotent
calls) and raise the same trellis exceptions as the in-process adapters, so they pass
the same contract suites. Configure them as ``grpc://HOST:PORT`` in ``trellis serve``.
"""

from trellis.adapters.grpc.channel import RemoteChannel
from trellis.adapters.grpc.dispatcher import RemoteDispatcher
from trellis.adapters.grpc.engine import RemoteEngine
from trellis.adapters.grpc.loader import RemoteGraphLoader
from trellis.adapters.grpc.store import RemoteStateStore
from trellis.api.transport import ChannelOptions, parse_target

__all__ = [
    "ChannelOptions",
    "RemoteChannel",
    "RemoteDispatcher",
    "RemoteEngine",
    "RemoteGraphLoader",
    "RemoteStateStore",
    "parse_target",
]
