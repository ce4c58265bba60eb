"""Starting the HTTP listener from the server's configuration and its public servicers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trellis.server.config import ServerConfig
from trellis.server.http import inspector
from trellis.server.http.calls import PublicMethods
from trellis.server.http.gateway import HttpGateway, ssl_context

Registration = tuple[Any, Any]
"""A generated ``add_*Servicer_to_server`` function and the servicer it registers."""


async def start_http(
    config: ServerConfig, interceptors: Sequence[Any], public: Sequence[Registration]
) -> HttpGateway:
    """The gateway serving ``public`` behind ``interceptors``, bound to ``http_listen``
    (with the gRPC listener's TLS settings when it has any)."""
    from trellis.server.app import split_host_port

    host, port = split_host_port(config.http_listen, "http_listen")
    context = None
    if config.tls_cert or config.tls_key or config.tls_client_ca:
        context = ssl_context(config.tls_cert, config.tls_key, config.tls_client_ca)
    methods = PublicMethods(interceptors)
    for add, servicer in public:
        add(servicer, methods)
    extra = inspector.routes() if config.inspector else []
    # Idle event streams are probed as often as gRPC pings idle connections.
    gateway = HttpGateway(
        methods, max_body_bytes=config.max_message_bytes, keepalive=config.keepalive_time, extra_routes=extra
    )
    await gateway.start(host, port, context)
    return gateway
