"""`trellis run --server`: the local run's terminal/JSON loop over a session on a server."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from typing import Any

from tests.support.servers import EXAMPLES, ROOT, flow_server
from trellis.clients import Client

TOUR = EXAMPLES / "tour"


async def trellis_run(*args: str, stdin: str) -> tuple[int, list[dict[str, Any]], str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "trellis.cli.main", "run", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    async with asyncio.timeout(120):
        out, err = await process.communicate(stdin.encode())
    events = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert process.returncode is not None
    return process.returncode, events, err.decode()


def texts(events: list[dict[str, Any]]) -> str:
    """Every text the run showed, in order (where a step boundary falls does not matter)."""
    return "".join(
        a["payload"]
        for e in events
        if e["type"] == "step"
        for a in e["actions"]
        if a["type"] == "RENDER_CONTENT"
    )


async def test_a_remote_run_walks_the_tour_like_a_local_run() -> None:
    answers = "Ada\ntool\nfinish\n\n"
    local_code, local, _ = await trellis_run(str(TOUR), "--json", stdin=answers)
    async with flow_server(TOUR) as server:
        code, remote, err = await trellis_run(
            "--server", f"127.0.0.1:{server.port}", str(TOUR), "--json", stdin=answers
        )
        assert code == local_code == 0, err
        # Same path, same text, same end; the tool ran on the server, not in the terminal.
        assert remote[-1]["history"] == local[-1]["history"]
        assert texts(remote) == texts(local)
        assert any(e["type"] == "tool" for e in local) and not any(e["type"] == "tool" for e in remote)
        assert remote[-1]["type"] == "end" and remote[-1]["history"][-1] == "finish"
        assert remote[-1]["context"]["stats"]["letters"] == 3
        # Without --session the throw-away session is deleted when the run ends.
        async with Client(f"127.0.0.1:{server.port}") as client:
            assert (await client.sessions.list()).session_ids == []


async def test_a_remote_session_is_kept_and_resumed() -> None:
    async with flow_server(TOUR) as server:
        target = f"127.0.0.1:{server.port}"
        code, first, err = await trellis_run(
            "--server", target, str(TOUR), "--json", "-s", "me", stdin="Bo\n"
        )
        assert code == 0, err
        assert first[-1]["node"] == "menu"
        code, second, err = await trellis_run(
            "--server", target, str(TOUR), "--json", "-s", "me", stdin="finish\n"
        )
        assert code == 0, err
        assert any(e["type"] == "notice" and "resuming session 'me'" in e["message"] for e in second)
        assert second[-1]["context"]["name"] == "Bo" and second[-1]["node"] == "finish"
        async with Client(target) as client:
            assert (await client.sessions.get("me")).state.current_node_id == "finish"


async def test_an_unreachable_server_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _events, err = await trellis_run("--server", f"127.0.0.1:{port}", str(TOUR), stdin="")
    assert code != 0
    assert f"cannot reach the trellis server at 127.0.0.1:{port}" in err
    assert "Traceback" not in err


async def test_options_that_need_a_local_flow_are_refused_with_server() -> None:
    code, _events, err = await trellis_run("--server", "127.0.0.1:1", str(TOUR), "--watch", stdin="")
    assert code == 2 and "--watch is not available with --server" in err
