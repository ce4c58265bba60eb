"""Replays the hostile-input attacks of issue 8 against a real `trellis serve` process
and prints what a caller got, what the server logged and how its memory grew.

    .venv/bin/python tools/hostile_attacks.py [--starts 1000] [--context-kib 255]

The server runs from this checkout (PYTHONPATH decides which trellis is imported, so
the same script measures another checkout too), with a memory store, on loopback,
with TRELLIS_TOKEN and TRELLIS_SIGNING_KEY in its environment. Attacks:

1. a 1.5 MB tool result for a session waiting on a tool, then Get/Load of that session;
2. malformed protobuf: random bytes and invalid UTF-8 to every unary method;
3. Starts with big contexts until the memory store refuses (or --starts are done);
4. a process tool that prints its environment.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import orjson

from trellis.api.v1 import dispatcher_pb2 as dpb
from trellis.api.v1 import dispatcher_pb2_grpc, sessions_pb2_grpc, store_pb2_grpc
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import store_pb2 as stpb
from trellis.api.v1 import types_pb2 as pb

TOKEN = "attack-token-0123456789"
SIGNING_KEY = "attack-signing-key-0123456789"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
NODES = {
    "start.md": "---\nwait: true\nsave_to: v\nto: fetch\n---\nready\n",
    "fetch.md": "---\ndo:\n  name: fetch\nsave_to: data\nto: show\n---\n",
    "show.md": "---\nwait: true\nto: show\n---\n{{ .data }}\n",
}
PRINT_ENV = "import json, os\nprint(json.dumps(dict(os.environ)))\n"
UNARY = [
    "/trellis.v1.Engine/Start", "/trellis.v1.Engine/Render", "/trellis.v1.Engine/Navigate",
    "/trellis.v1.Engine/Signal", "/trellis.v1.Sessions/Start", "/trellis.v1.Sessions/Get",
    "/trellis.v1.Sessions/Navigate", "/trellis.v1.Sessions/Signal", "/trellis.v1.Sessions/Delete",
    "/trellis.v1.StateStore/Save", "/trellis.v1.StateStore/Load", "/trellis.v1.StateStore/Delete",
    "/trellis.v1.GraphLoader/GetNode", "/trellis.v1.ActionDispatcher/Dispatch",
]


def write_flow(directory: Path) -> Path:
    directory.mkdir()
    for name, text in NODES.items():
        (directory / name).write_text(text)
    (directory / "printenv.py").write_text(PRINT_ENV)
    (directory / "tools.yaml").write_text(
        f"tools:\n  - name: printenv\n    command: {sys.executable!r}\n    args: [printenv.py]\n"
    )
    return directory


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def outcome(call: Any) -> tuple[str, str]:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, (exc.details() or "")[:140]
    return "OK", ""


async def huge_tool_result(channel: grpc.aio.Channel) -> None:
    sessions = sessions_pb2_grpc.SessionsStub(channel)
    store = store_pb2_grpc.StateStoreStub(channel)
    await sessions.Start(spb.SessionsStartRequest(session_id="big"), metadata=AUTH)
    waiting = await sessions.Navigate(
        spb.SessionsNavigateRequest(session_id="big", input=pb.Input(text="go")), metadata=AUTH
    )
    huge = orjson.dumps("x" * 1_500_000).decode()
    result = pb.ToolResult(id=waiting.step.state.pending_tool_call, result_json=huge)
    code, details = await outcome(
        sessions.Navigate(
            spb.SessionsNavigateRequest(session_id="big", input=pb.Input(tool_result=result)), metadata=AUTH
        )
    )
    print(f"1. 1.5 MB tool result: Navigate -> {code}: {details}")
    for name, call in (
        ("Sessions.Get", sessions.Get(spb.SessionsGetRequest(session_id="big"), metadata=AUTH)),
        ("StateStore.Load", store.Load(stpb.LoadRequest(session_id="big"), metadata=AUTH)),
    ):
        code, details = await outcome(call)
        print(f"   then {name} -> {code} {details}")


async def malformed(channel: grpc.aio.Channel, count: int) -> collections.Counter[str]:
    rng = random.Random(8)
    codes: collections.Counter[str] = collections.Counter()
    for n in range(count):
        method = UNARY[n % len(UNARY)]
        if n % 2:
            body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        else:
            junk = bytes(rng.randrange(128, 256) for _ in range(rng.randrange(1, 40)))
            body = b"\x0a" + bytes([len(junk)]) + junk
        code, _ = await outcome(channel.unary_unary(method)(body, metadata=AUTH))
        codes[code] += 1
    return codes


async def starts(channel: grpc.aio.Channel, count: int, kib: int, pid: int) -> None:
    sessions = sessions_pb2_grpc.SessionsStub(channel)
    context = orjson.dumps({"blob": "x" * (kib * 1024 - 16)}).decode()
    before = rss_kib(pid)
    codes: collections.Counter[str] = collections.Counter()
    began = time.monotonic()
    for n in range(count):
        code, _ = await outcome(
            sessions.Start(spb.SessionsStartRequest(session_id=f"s{n}", context_json=context), metadata=AUTH)
        )
        codes[code] += 1
    took = time.monotonic() - began
    print(
        f"3. {count} Starts with {kib} KiB contexts: {dict(codes)}; server RSS "
        f"{before // 1024} -> {rss_kib(pid) // 1024} MB in {took:.1f} s"
    )
    code, _ = await outcome(sessions.Get(spb.SessionsGetRequest(session_id="s0"), metadata=AUTH))
    print(f"   then Get of the first session -> {code}")


async def tool_environment(channel: grpc.aio.Channel) -> None:
    dispatcher = dispatcher_pb2_grpc.ActionDispatcherStub(channel)
    reply = await dispatcher.Dispatch(
        dpb.DispatchRequest(call=pb.ToolCall(id="e", name="printenv")), metadata=AUTH
    )
    seen = orjson.loads(reply.result.result_json) if reply.result.result_json else {}
    leaked = [name for name, value in seen.items() if value in (TOKEN, SIGNING_KEY)]
    print(f"4. a tool printing its environment: {len(seen)} variables {sorted(seen)}; secrets: {leaked}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=1000)
    parser.add_argument("--context-kib", type=int, default=255)
    parser.add_argument("--malformed", type=int, default=344)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        flow = write_flow(Path(tmp) / "flow")
        env = {**os.environ, "TRELLIS_TOKEN": TOKEN, "TRELLIS_SIGNING_KEY": SIGNING_KEY}
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "trellis.cli.main", "serve", str(flow), "--listen", "127.0.0.1:0",
            stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env,
        )
        assert server.stderr is not None
        log: list[str] = []
        while not log or "serving on" not in log[-1]:
            line = (await server.stderr.readline()).decode()
            if not line:
                raise SystemExit("the server did not start:\n" + "".join(log))
            log.append(line)
        port = int(log[-1].rsplit(":", 1)[1])

        async def drain() -> None:
            assert server.stderr is not None
            while line := await server.stderr.readline():
                log.append(line.decode(errors="replace"))

        draining = asyncio.create_task(drain())
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await huge_tool_result(channel)
                mark = len(log)
                codes = await malformed(channel, args.malformed)
                await asyncio.sleep(0.5)  # let the server's log catch up (a measurement, not a test)
                lines = log[mark:]
                errors = sum(1 for line in lines if re.search(r"\bERROR\b", line))
                tracebacks = sum(1 for line in lines if line.startswith("Traceback"))
                print(
                    f"2. {args.malformed} malformed requests: {dict(codes)}; server log: {len(lines)} lines, "
                    f"{errors} at ERROR, {tracebacks} tracebacks"
                )
                await starts(channel, args.starts, args.context_kib, server.pid)
                await tool_environment(channel)
        finally:
            server.terminate()
            await server.wait()
            await draining


if __name__ == "__main__":
    asyncio.run(main())
