"""SIGTERM to a `trellis serve` process under load: in-flight steps finish, later calls
are refused as unavailable, and the file store holds exactly the acknowledged steps,
every file valid JSON."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from trellis.adapters.file_store import FileStore
from trellis.clients import Client
from trellis.errors import BackendUnavailable
from trellis.server.app import TrellisServer
from trellis.server.config import ServerConfig

ROOT = Path(__file__).resolve().parents[2]
SESSIONS = 6
MAX_CALLS = 200  # per session, a bound on the load loop

SLOW_TOOL = """
import json, os, pathlib, sys, time
args = json.loads(os.environ["TRELLIS_ARGS"])
pathlib.Path(os.environ["MARKERS"], args["tag"]).write_text("started")
time.sleep(0.5)
print("done " + args["tag"])
"""


def write_flow(directory: Path, markers: Path) -> Path:
    directory.mkdir()
    (directory / "start.md").write_text("---\nwait: true\nsave_to: v\nto: work\n---\nready\n")
    (directory / "work.md").write_text(
        '---\ndo:\n  name: slow\n  args:\n    tag: "{{ .v }}"\nsave_to: r\nto: start\n---\n'
    )
    (directory / "slow.py").write_text(SLOW_TOOL)
    (directory / "tools.yaml").write_text(
        f"tools:\n  - name: slow\n    command: {sys.executable!r}\n    args: ['slow.py']\n"
        f"    timeout: 30s\n    env:\n      MARKERS: {str(markers)!r}\n"
    )
    return directory


def started(markers: Path) -> set[str]:
    """The steps whose tool has started (each writes a marker named after its input)."""
    return {p.name for p in markers.iterdir()}


async def drain(stream: asyncio.StreamReader, lines: list[str]) -> None:
    while line := await stream.readline():
        lines.append(line.decode(errors="replace"))
        del lines[:-200]


async def read_port(stderr: asyncio.StreamReader) -> int:
    async with asyncio.timeout(60):
        while True:
            line = (await stderr.readline()).decode()
            if not line:
                raise AssertionError("trellis serve exited before listening")
            if "serving on" in line:
                return int(line.rsplit(":", 1)[1])


async def test_sigterm_finishes_in_flight_steps_and_leaves_a_consistent_file_store(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    flow = write_flow(tmp_path / "flow", markers)
    sessions_dir = tmp_path / "sessions"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "trellis.cli.main",
        "serve",
        str(flow),
        "--listen",
        "127.0.0.1:0",
        "--store",
        f"file:{sessions_dir}",
        "--shutdown-grace",
        "20s",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stderr is not None
        port = await read_port(process.stderr)
        # Keep reading the server's log (a line per step): a full pipe would stall the server.
        log: list[str] = []
        draining = asyncio.create_task(drain(process.stderr, log))
        acked: dict[str, list[str]] = {f"s{k}": [] for k in range(SESSIONS)}
        errors: list[BaseException] = []
        warmed_up = asyncio.Event()
        async with Client(f"127.0.0.1:{port}", timeout=60) as client:
            for sid in acked:
                await client.sessions.start(sid)

            async def load(sid: str) -> None:
                for n in range(MAX_CALLS):
                    tag = f"{sid}-{n}"
                    try:
                        await client.sessions.navigate(sid, tag)
                    except Exception as exc:
                        errors.append(exc)
                        return
                    acked[sid].append(tag)
                    if sum(map(len, acked.values())) >= SESSIONS:
                        warmed_up.set()

            loads = [asyncio.create_task(load(sid)) for sid in acked]
            # Wait until steps are running inside the server (their tool has started and
            # has not answered yet), then stop it.
            async with asyncio.timeout(60):
                await warmed_up.wait()
                running: set[str] = set()
                while not running:
                    await asyncio.sleep(0.01)
                    running = started(markers) - {t for ts in acked.values() for t in ts}
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(60):
                await asyncio.gather(*loads)
                code = await process.wait()
        await draining
        assert code == 0, "".join(log[-20:])
        acked_tags = {t for ts in acked.values() for t in ts}
        # Every step that was running when SIGTERM arrived was finished and acknowledged.
        assert running <= acked_tags, f"in-flight steps lost: {running - acked_tags}"
        # Calls after the signal were refused as "server unavailable", not failed half-way.
        assert len(errors) == SESSIONS and all(isinstance(e, BackendUnavailable) for e in errors), [
            (type(e).__name__, str(e)) for e in errors
        ]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    # Nothing half-written: every file is complete JSON, no temporary is left, and each
    # session holds exactly its acknowledged steps, in order.
    files = sorted(p.name for p in sessions_dir.iterdir())
    assert files == sorted(f"{sid}.json" for sid in acked)
    for name in files:
        json.loads((sessions_dir / name).read_text())
    store = FileStore(sessions_dir)
    for sid, tags in acked.items():
        state = await store.load(sid)
        assert state.history == ["start"] + ["work", "start"] * len(tags), (sid, tags, state.history)
        assert state.context.get("v") == (tags[-1] if tags else None)
        assert state.context.get("r") == (f"done {tags[-1]}" if tags else None)



HELD_TOOL = """
import json, os, pathlib, sys, time
args = json.loads(os.environ["TRELLIS_ARGS"])
markers = pathlib.Path(os.environ["MARKERS"])
(markers / args["tag"]).write_text("started")
for _ in range(6000):  # until the test releases it (bounded: 60 s)
    if (markers / "release").exists():
        break
    time.sleep(0.01)
print("done " + args["tag"])
"""


@asynccontextmanager
async def held_server(tmp_path: Path) -> AsyncIterator[tuple[TrellisServer, Path]]:
    """A server whose tool runs until the test writes ``markers/release``."""
    markers = tmp_path / "markers"
    markers.mkdir()
    flow = write_flow(tmp_path / "flow", markers)
    (flow / "slow.py").write_text(HELD_TOOL)
    server = TrellisServer(ServerConfig(flow_dir=str(flow), listen="127.0.0.1:0", shutdown_grace=60))
    await server.start()
    try:
        yield server, markers
    finally:
        (markers / "release").write_text("")
        await server.stop()


async def wait_started(markers: Path, tags: set[str]) -> None:
    async with asyncio.timeout(60):
        while started(markers) != tags:  # noqa: ASYNC110 - a file another process writes
            await asyncio.sleep(0.01)


async def test_calls_arriving_while_steps_drain_are_refused_as_unavailable(tmp_path: Path) -> None:
    """The race of the SIGTERM test, made deterministic: a stop begins while a step runs (its
    tool waits for the test); a call arriving then is refused as retryable UNAVAILABLE saying
    why, the running step finishes and is acknowledged, and only then does the server stop."""
    async with held_server(tmp_path) as (server, markers):
        async with Client(f"127.0.0.1:{server.port}?retries=0", timeout=60) as client:
            await client.sessions.start("a")
            running = asyncio.ensure_future(client.sessions.navigate("a", "a1"))
            await wait_started(markers, {"a1"})
            stopping = asyncio.ensure_future(server.stop())
            health = health_pb2_grpc.HealthStub(client.channel.channel)
            async with asyncio.timeout(60):
                while True:  # until the server says it is stopping
                    reply = await health.Check(health_pb2.HealthCheckRequest())
                    if reply.status != health_pb2.HealthCheckResponse.SERVING:
                        break
                    await asyncio.sleep(0.01)
            for late in (client.sessions.start("b"), client.sessions.navigate("a", "a2")):
                with pytest.raises(BackendUnavailable, match="shutting down") as caught:
                    await late
                assert caught.value.reason == "BACKEND_UNAVAILABLE"
            assert not stopping.done()
            (markers / "release").write_text("")
            async with asyncio.timeout(60):
                step = await running
                await stopping
            assert step.state.context["r"] == "done a1"


async def test_a_call_the_server_cancels_reaches_the_client_as_unavailable(tmp_path: Path) -> None:
    """A stop without grace (a second SIGTERM) cancels the running step: the client gets
    BackendUnavailable (the outcome of a non-idempotent call is unknown, as after a broken
    connection), not an unclassified CANCELLED error."""
    async with held_server(tmp_path) as (server, markers):
        async with Client(f"127.0.0.1:{server.port}?retries=0", timeout=60) as client:
            await client.sessions.start("a")
            running = asyncio.ensure_future(client.sessions.navigate("a", "a1"))
            await wait_started(markers, {"a1"})
            await server.stop_now()
            with pytest.raises(BackendUnavailable):
                async with asyncio.timeout(60):
                    await running
