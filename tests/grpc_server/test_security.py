"""Bearer tokens (health stays open) and TLS / mutual TLS with real certificates."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.grpc_server import failure, running
from tests.support.pki import make_pki
from tests.support.requirements import missing
from trellis.api.transport import bearer_metadata, channel_credentials
from trellis.api.v1 import graph_pb2 as gpb
from trellis.api.v1 import graph_pb2_grpc, sessions_pb2_grpc
from trellis.api.v1 import sessions_pb2 as spb
from trellis.server.app import TrellisServer
from trellis.server.config import ServerConfig


async def test_a_token_is_required_except_for_health(flow: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("# rotated tokens, one a line\nold-token\nnew-token\n")
    async with running(ServerConfig(flow_dir=str(flow), token_file=str(token_file))) as (_, channel):
        sessions = sessions_pb2_grpc.SessionsStub(channel)
        code, reason, message = await failure(sessions.Start(spb.SessionsStartRequest(session_id="t")))
        assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
        assert "authorization" in message
        code, reason, _ = await failure(
            sessions.Start(spb.SessionsStartRequest(session_id="t"), metadata=bearer_metadata("guess"))
        )
        assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
        # A server-streaming method is refused the same way.
        watch = sessions.Watch(spb.SessionsWatchRequest(session_id="t"))
        code, reason, _ = await failure(watch.read())
        assert code == grpc.StatusCode.UNAUTHENTICATED

        for token in ("old-token", "new-token"):
            started = await sessions.Start(
                spb.SessionsStartRequest(session_id="t"), metadata=bearer_metadata(token)
            )
            assert started.step.state.session_id == "t"

        health = health_pb2_grpc.HealthStub(channel)
        checked = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert checked.status == health_pb2.HealthCheckResponse.SERVING


async def test_mutual_tls(flow: Path, tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        missing("the openssl command (to make certificates) is not installed")
    pki = make_pki(tmp_path / "pki")
    config = ServerConfig(
        flow_dir=str(flow),
        listen="127.0.0.1:0",
        tls_cert=str(pki / "server.pem"),
        tls_key=str(pki / "server.key"),
        tls_client_ca=str(pki / "ca.pem"),
    )
    server = TrellisServer(config)
    port = await server.start()
    target = f"127.0.0.1:{port}"
    try:
        with_cert = channel_credentials(str(pki / "ca.pem"), str(pki / "client.pem"), str(pki / "client.key"))
        async with grpc.aio.secure_channel(target, with_cert) as channel:
            ids = (await graph_pb2_grpc.GraphLoaderStub(channel).ListNodes(gpb.ListNodesRequest())).node_ids
            assert "start" in ids
        # Without a client certificate the handshake is refused.
        without = channel_credentials(str(pki / "ca.pem"))
        async with grpc.aio.secure_channel(target, without) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await graph_pb2_grpc.GraphLoaderStub(channel).ListNodes(gpb.ListNodesRequest(), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        # Plain text to a TLS port does not get through either.
        async with grpc.aio.insecure_channel(target) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await graph_pb2_grpc.GraphLoaderStub(channel).ListNodes(gpb.ListNodesRequest(), timeout=5)
    finally:
        await server.stop(grace=1.0)
