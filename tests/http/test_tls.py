"""The HTTP listener takes the gRPC port's TLS settings: the same certificate, and with a
client CA, no call without a client certificate."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.support.cli import copy_example
from tests.support.pki import make_pki
from tests.support.requirements import missing
from tests.support.servers import flow_server


async def _list(port: int, context: ssl.SSLContext) -> int:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        http.post(
            f"https://127.0.0.1:{port}/trellis.v1.Sessions/List",
            data=b"{}",
            headers={"Content-Type": "application/json"},
            ssl=context,
        ) as reply,
    ):
        assert orjson.loads(await reply.read()) == {}
        return reply.status


async def test_mutual_tls_on_the_http_listener(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        missing("the openssl command (to make certificates) is not installed")
    pki = make_pki(tmp_path / "pki")
    tour = copy_example("tour", tmp_path)
    settings = {
        "http_listen": "127.0.0.1:0",
        "tls_cert": str(pki / "server.pem"),
        "tls_key": str(pki / "server.key"),
        "tls_client_ca": str(pki / "ca.pem"),
    }
    async with flow_server(tour, **settings) as server:
        with_cert = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        with_cert.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
        assert await _list(server.http_port, with_cert) == 200
        without = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
            await _list(server.http_port, without)
        # Plain HTTP to the TLS listener gets no reply from the services.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            with pytest.raises(aiohttp.ClientError):
                async with http.post(
                    f"http://127.0.0.1:{server.http_port}/trellis.v1.Sessions/List",
                    data=b"{}",
                    headers={"Content-Type": "application/json"},
                ) as reply:
                    await reply.read()
