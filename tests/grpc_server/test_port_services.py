"""GraphLoader, StateStore and ActionDispatcher services: any port, exposed as is
(the last two on the internal listener)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import orjson

from tests.support.grpc_server import failure
from trellis.api.v1 import dispatcher_pb2 as dpb
from trellis.api.v1 import dispatcher_pb2_grpc, engine_pb2_grpc, graph_pb2_grpc, store_pb2_grpc
from trellis.api.v1 import engine_pb2 as epb
from trellis.api.v1 import graph_pb2 as gpb
from trellis.api.v1 import store_pb2 as spb
from trellis.api.v1 import types_pb2 as pb


async def test_graph_loader_get_list_and_not_found(served) -> None:
    _, channel = served
    loader = graph_pb2_grpc.GraphLoaderStub(channel)
    ids = (await loader.ListNodes(gpb.ListNodesRequest())).node_ids
    assert list(ids) == sorted(ids) and "start" in ids
    node = (await loader.GetNode(gpb.GetNodeRequest(node_id="start"))).node
    assert node.wait and node.save_to == "name" and node.source
    code, reason, message = await failure(loader.GetNode(gpb.GetNodeRequest(node_id="nope")))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "NODE_NOT_FOUND")
    assert "nope" in message


async def test_graph_watch_reports_edits_and_the_server_reloads(served, flow: Path) -> None:
    server, channel = served
    loader = graph_pb2_grpc.GraphLoaderStub(channel)
    stream = loader.Watch(gpb.GraphLoaderWatchRequest())
    first: asyncio.Task[gpb.GraphLoaderWatchResponse] = asyncio.ensure_future(stream.read())
    for attempt in range(100):  # the watcher starts asynchronously: edit until it reports (bounded)
        (flow / "stopped.md").write_text(f"---\n---\nStopped, edit {attempt}.\n")
        done, _pending = await asyncio.wait({first}, timeout=0.2)
        if done:
            break
    assert first.done(), "no change event after editing a node file"
    # A change names the edited node, or is empty when the loader cannot tell.
    assert set(first.result().node_ids) in ({"stopped"}, set())
    stream.cancel()

    def reloads() -> float:
        return server.observer.registry.get_sample_value("trellis_loader_reloads_total") or 0.0

    # The server follows the same changes and drops its compiled nodes: the edit is served.
    engine = engine_pb2_grpc.EngineStub(channel)
    state = pb.State(session_id="r", current_node_id="stopped", history=["stopped"])
    content = ""
    for _ in range(100):
        content = (await engine.Render(epb.EngineRenderRequest(state=state))).actions[0].render_content
        if "edit" in content:
            break
        await asyncio.sleep(0.05)
    assert "edit" in content and reloads() >= 1


async def test_state_store_conditional_saves(internal) -> None:
    store = store_pb2_grpc.StateStoreStub(internal)
    state = pb.State(session_id="k", current_node_id="start", context_json='{"a": 1}', history=["start"])
    rev = (await store.Save(spb.SaveRequest(session_id="k", state=state, expected_revision=0))).revision
    assert rev > 0
    code, reason, _ = await failure(
        store.Save(spb.SaveRequest(session_id="k", state=state, expected_revision=0))
    )
    assert (code, reason) == (grpc.StatusCode.ABORTED, "REVISION_CONFLICT")
    rev2 = (await store.Save(spb.SaveRequest(session_id="k", state=state, expected_revision=rev))).revision
    assert rev2 > rev
    code, reason, _ = await failure(
        store.Save(spb.SaveRequest(session_id="k", state=state, expected_revision=rev))
    )
    assert code == grpc.StatusCode.ABORTED
    loaded = (await store.Load(spb.LoadRequest(session_id="k"))).state
    assert loaded.revision == rev2 and orjson.loads(loaded.context_json) == {"a": 1}
    listed = await store.List(spb.StateStoreListRequest())
    assert list(listed.session_ids) == ["k"]
    await store.Delete(spb.StateStoreDeleteRequest(session_id="k"))
    code, reason, _ = await failure(store.Load(spb.LoadRequest(session_id="k")))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
    nameless = pb.State(current_node_id="start")
    code, reason, _ = await failure(store.Save(spb.SaveRequest(session_id="", state=nameless)))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SESSION_ID")
    code, reason, message = await failure(store.Save(spb.SaveRequest(session_id="other", state=state)))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT")
    assert "does not match" in message


async def test_dispatcher_runs_served_tools_and_reports_unknown_ones_as_tool_errors(internal) -> None:
    dispatcher = dispatcher_pb2_grpc.ActionDispatcherStub(internal)
    call = pb.ToolCall(id="c1", name="shout", args_json='{"text": "hey"}', idempotency_key="k1")
    result = (await dispatcher.Dispatch(dpb.DispatchRequest(call=call))).result
    assert result.id == "c1" and not result.is_error
    assert orjson.loads(result.result_json) == "HEY"
    unknown = (await dispatcher.Dispatch(dpb.DispatchRequest(call=pb.ToolCall(id="c2", name="nope")))).result
    assert unknown.is_error and "nope" in unknown.error
    code, reason, _ = await failure(
        dispatcher.Dispatch(dpb.DispatchRequest(call=pb.ToolCall(id="c3", name="shout", args_json="[")))
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT")
