"""Watch streams under load (issue 8.3): a server-wide cap, one file watcher for every
graph watch, and hot reload that outlives the removal of the flow directory."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.grpc_server.flows import write_flow
from tests.support.grpc_server import failure, running
from trellis.adapters.directory_loader import DirectoryLoader
from trellis.api.v1 import engine_pb2 as epb
from trellis.api.v1 import engine_pb2_grpc, graph_pb2_grpc, sessions_pb2_grpc
from trellis.api.v1 import graph_pb2 as gpb
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import types_pb2 as pb
from trellis.server.app import TrellisServer
from trellis.server.config import ServerConfig
from trellis.server.watch_streams import DEFAULT_MAX_WATCH_STREAMS

C = grpc.StatusCode
BOUND = 15.0  # seconds any one wait below may take before the test fails


def _inotify_instances() -> int:
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            count += os.readlink(fd) == "anon_inode:inotify"
        except OSError:
            continue
    return count


async def _all_live(streams: list[Any], flow: Path) -> None:
    """Edit a node until every graph watch stream has reported a change (so each is open)."""
    pending = {asyncio.ensure_future(stream.read()): stream for stream in streams}
    async with asyncio.timeout(BOUND):
        attempt = 0
        while pending:
            attempt += 1
            (flow / "stopped.md").write_text(f"---\n---\nStopped, edit {attempt}.\n")
            done, _ = await asyncio.wait(pending, timeout=0.2)
            for task in done:
                task.result()  # an error status fails the test here
                del pending[task]


def _loader(server: TrellisServer) -> DirectoryLoader:
    assert server.composition is not None and isinstance(server.composition.loader, DirectoryLoader)
    return server.composition.loader


async def _watching(loader: DirectoryLoader) -> None:
    """Until the server's hot reload holds the loader's file watcher (it subscribes as it starts)."""
    for _ in range(500):  # bounded
        if loader.watcher_count() == 1:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the server's hot reload never started watching")


def test_the_default_cap_is_in_the_configuration() -> None:
    assert ServerConfig().max_watch_streams == DEFAULT_MAX_WATCH_STREAMS == 256


async def test_streams_beyond_the_cap_are_refused_and_the_others_keep_working(flow: Path) -> None:
    config = ServerConfig(flow_dir=str(flow), max_watch_streams=3)
    async with running(config) as (_server, channel):
        graph = graph_pb2_grpc.GraphLoaderStub(channel)
        sessions = sessions_pb2_grpc.SessionsStub(channel)
        await sessions.Start(spb.SessionsStartRequest(session_id="s"))
        open_streams = [graph.Watch(gpb.GraphLoaderWatchRequest()) for _ in range(3)]
        await _all_live(open_streams, flow)

        # Graph and session watches count against the one budget.
        code, reason, message = await failure(graph.Watch(gpb.GraphLoaderWatchRequest()).read())
        assert (code, reason) == (C.RESOURCE_EXHAUSTED, "TOO_MANY_WATCH_STREAMS")
        assert "max_watch_streams=3" in message
        extra = sessions.Watch(spb.SessionsWatchRequest(session_id="s"))
        assert (await failure(extra.read()))[:2] == (C.RESOURCE_EXHAUSTED, "TOO_MANY_WATCH_STREAMS")

        # The open streams still deliver, and the server still serves.
        await _all_live(open_streams, flow)
        assert (await sessions.Get(spb.SessionsGetRequest(session_id="s"))).step.state.session_id == "s"

        # Closing one frees its place (the server notices the cancellation asynchronously).
        open_streams.pop().cancel()
        async with asyncio.timeout(BOUND):
            while True:
                replacement = graph.Watch(gpb.GraphLoaderWatchRequest())
                try:
                    await _all_live([replacement], flow)
                    break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == C.RESOURCE_EXHAUSTED
                    await asyncio.sleep(0.05)
        for stream in [*open_streams, replacement]:
            stream.cancel()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts inotify instances through /proc")
async def test_many_graph_watch_streams_share_the_servers_one_file_watcher(flow: Path) -> None:
    async with running(ServerConfig(flow_dir=str(flow))) as (server, channel):
        loader = _loader(server)
        await _watching(loader)
        before = _inotify_instances()
        graph = graph_pb2_grpc.GraphLoaderStub(channel)
        streams = [graph.Watch(gpb.GraphLoaderWatchRequest()) for _ in range(50)]
        await _all_live(streams, flow)
        assert loader.watcher_count() == 1
        assert _inotify_instances() <= before  # not one more for 50 streams
        for stream in streams:
            stream.cancel()


async def _rendered(channel: grpc.aio.Channel, node_id: str) -> str:
    engine = engine_pb2_grpc.EngineStub(channel)
    state = pb.State(session_id="r", current_node_id=node_id, history=[node_id])
    reply = await engine.Render(epb.EngineRenderRequest(state=state))
    return str(reply.actions[0].render_content)


async def test_hot_reload_resumes_after_the_flow_directory_is_removed_and_recreated(flow: Path) -> None:
    async with running(ServerConfig(flow_dir=str(flow))) as (server, channel):
        loader = _loader(server)
        await _watching(loader)
        assert "Stopped." in await _rendered(channel, "stopped")  # compiled and cached now
        graph = graph_pb2_grpc.GraphLoaderStub(channel)
        stream = graph.Watch(gpb.GraphLoaderWatchRequest())
        await _all_live([stream], flow)

        await asyncio.to_thread(shutil.rmtree, flow)
        await asyncio.to_thread(write_flow, flow)
        new_text = "---\n---\nStopped, in the new directory.\n"
        await asyncio.to_thread((flow / "stopped.md").write_text, new_text)

        # (a) the loader's watch reports a full reload ...
        async with asyncio.timeout(BOUND):
            while (await stream.read()).node_ids:
                pass
        # (b) ... and the server's engine serves the new content.
        content = ""
        async with asyncio.timeout(BOUND):
            while "new directory" not in content:
                content = await _rendered(channel, "stopped")
                await asyncio.sleep(0.05)
        # Later edits keep arriving.
        (flow / "stopped.md").write_text("---\n---\nStopped, edited again.\n")
        async with asyncio.timeout(BOUND):
            while "edited again" not in content:
                content = await _rendered(channel, "stopped")
                await asyncio.sleep(0.05)
        stream.cancel()
