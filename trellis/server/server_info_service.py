"""ServerInfo.GetServerInfo: what this server is and allows (protos/trellis/v1/server_info.proto).

Everything comes from the configuration, read once at start; only kinds of
backends are named (the URL's scheme), never an address, path or secret.
"""

from __future__ import annotations

from typing import Any

import grpc  # type: ignore[import-untyped]

import trellis
from trellis.adapters.rules import MAX_SESSION_ID_BYTES
from trellis.api import API_REVISION, MAX_STREAM_STEPS
from trellis.api.v1 import server_info_pb2 as ipb
from trellis.api.v1 import server_info_pb2_grpc
from trellis.server.config import ServerConfig
from trellis.server.guards import Servicer, guarded_unary
from trellis.server.limits import Limits
from trellis.server.observe import Observer
from trellis.server.sessions_service import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE


def _kind(url: str) -> str:
    """The scheme of a backend URL ("etcd://h:p/x" -> "etcd"), nothing of where it points."""
    return url.partition(":")[0].lower()


def server_info(
    config: ServerConfig,
    limits: Limits,
    services: list[str],
    *,
    signing: bool,
    hot_reload: bool,
    tool_dispatch: bool,
) -> ipb.GetServerInfoResponse:
    loader = config.loader or ("dir" if config.flow_dir else "")
    return ipb.GetServerInfoResponse(
        server_version=trellis.__version__,
        api_revision=API_REVISION,
        services=services,
        limits=ipb.ServerLimits(
            max_message_bytes=limits.max_message_bytes,
            max_input_bytes=limits.max_input_bytes,
            max_context_bytes=limits.max_context_bytes,
            max_state_bytes=limits.state_limit,
            max_session_id_bytes=MAX_SESSION_ID_BYTES,
            default_page_size=DEFAULT_PAGE_SIZE,
            max_page_size=MAX_PAGE_SIZE,
            max_watch_streams=config.max_watch_streams,
            max_stream_steps=MAX_STREAM_STEPS,
        ),
        features=ipb.ServerFeatures(
            state_signing=signing,
            auth_required=bool(config.token or config.token_file),
            tls=bool(config.tls_cert),
            store=_kind(config.store),
            loader=_kind(loader),
            tool_dispatch=tool_dispatch,
            hot_reload=hot_reload,
        ),
    )


class ServerInfoService(Servicer, server_info_pb2_grpc.ServerInfoServicer):
    service_name = "ServerInfo"

    def __init__(self, info: ipb.GetServerInfoResponse, observer: Observer) -> None:
        super().__init__(observer)
        self._info = info

    @guarded_unary
    async def GetServerInfo(
        self, request: ipb.GetServerInfoRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        return self._info
