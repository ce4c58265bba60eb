"""The inspector's files on the HTTP listener: served only when asked for, a fixed list
(nothing else of the file system), loading nothing from another origin, and adding no
way around the token. A real TrellisServer in this process, over loopback HTTP."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.cli import copy_example, run_cli
from tests.support.servers import flow_server
from trellis.errors import ConfigError
from trellis.server.app import TrellisServer
from trellis.server.config import load_config

TOKEN = "s3cret-token"


@pytest.fixture
def tour(tmp_path: Path) -> Path:
    return copy_example("tour", tmp_path)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


def url(server: TrellisServer, path: str) -> str:
    return f"http://127.0.0.1:{server.http_port}{path}"


async def test_the_page_and_its_files_are_served(tour: Path, http: aiohttp.ClientSession) -> None:
    async with flow_server(tour, http_listen="127.0.0.1:0", inspector=True) as server:
        async with http.get(url(server, "/"), allow_redirects=False) as reply:
            assert reply.status == 302 and reply.headers["Location"] == "inspector/"
        async with http.get(url(server, "/inspector/")) as reply:
            assert reply.status == 200 and reply.content_type == "text/html"
            csp = reply.headers["Content-Security-Policy"]
            page = await reply.text()
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "default-src 'none'" in csp
        assert '<label for="answer">' in page and 'role="log"' in page
        # Every script and style the page loads is one of its own files, by relative path.
        loaded = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert sorted(loaded) == ["#answer", "data:,", "inspector.css", "inspector.js", "mermaid.js"]
        for name, kind in [("inspector.js", "text/javascript"), ("inspector.css", "text/css")]:
            async with http.get(url(server, f"/inspector/{name}")) as reply:
                assert reply.status == 200 and reply.content_type == kind
        async with http.get(url(server, "/inspector/mermaid.js")) as reply:
            assert reply.status == 200
            assert b'globalThis["mermaid"]' in await reply.read()


async def test_only_the_listed_files_are_served(tour: Path, http: aiohttp.ClientSession) -> None:
    async with flow_server(tour, http_listen="127.0.0.1:0", inspector=True) as server:
        for path in (
            "/inspector/nothing.js",
            "/inspector/vendor/README.md",
            "/inspector/..%2Finspector.py",
            "/inspector/%2e%2e/gateway.py",
            "/inspector/static/index.html",
        ):
            async with http.get(url(server, path)) as reply:
                assert reply.status == 404, path
        # The Connect routes are untouched: a POST under /inspector/ is no method.
        async with http.post(
            url(server, "/inspector/inspector.js"), data=b"{}", headers={"Content-Type": "application/json"}
        ) as reply:
            assert reply.status == 404
            assert (await reply.json())["code"] == "unimplemented"


async def test_off_unless_asked_for(tour: Path, http: aiohttp.ClientSession) -> None:
    async with flow_server(tour, http_listen="127.0.0.1:0") as server:
        for path in ("/", "/inspector/", "/inspector/inspector.js"):
            async with http.get(url(server, path), allow_redirects=False) as reply:
                # 405 where the path has the shape of a Connect route (POST only)
                assert reply.status in (404, 405), path
    with pytest.raises(ConfigError, match="http_listen"):
        load_config(flags={"flow_dir": str(tour), "inspector": True}, environ={})
    result = run_cli("serve", str(tour), "--inspector")
    assert result.code == 2 and "inspector" in result.err and "http_listen" in result.err


async def test_the_page_is_public_but_the_api_behind_it_is_not(
    tour: Path, http: aiohttp.ClientSession
) -> None:
    async with flow_server(tour, http_listen="127.0.0.1:0", inspector=True, token=TOKEN) as server:
        # The page holds no data, and a browser cannot send a token with a navigation.
        async with http.get(url(server, "/inspector/")) as reply:
            assert reply.status == 200
        # What the page calls still needs the token, as for any other caller.
        body = {"Content-Type": "application/json"}
        async with http.post(url(server, "/trellis.v1.Sessions/List"), data=b"{}", headers=body) as reply:
            assert reply.status == 401
        async with http.post(
            url(server, "/trellis.v1.Sessions/List"),
            data=b"{}",
            headers={**body, "Authorization": f"Bearer {TOKEN}"},
        ) as reply:
            assert reply.status == 200
