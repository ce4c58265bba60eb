"""Bearer tokens (health stays open) and TLS / mutual TLS with real certificates."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.grpc_server.conftest import failure, running
from tests.requirements import missing
from trellis.api.v1 import graph_pb2 as gpb
from trellis.api.v1 import graph_pb2_grpc, sessions_pb2_grpc
from trellis.api.v1 import sessions_pb2 as spb
from trellis.server.app import TrellisServer
from trellis.server.config import ServerConfig
from trellis.server.security import bearer_metadata, channel_credentials


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


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_pki(d: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=trellis-test-ca",
        cwd=d,
    )
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            cwd=d,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
            cwd=d,
        )


async def test_mutual_tls(flow: Path, tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        missing("the openssl command (to make certificates) is not installed")
    pki = tmp_path / "pki"
    pki.mkdir()
    _make_pki(pki)
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
