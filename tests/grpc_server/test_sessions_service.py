"""Sessions over gRPC: durable steps, served tools dispatched inside the step,
other tools answered by the client, watch, pagination, errors."""

from __future__ import annotations

import asyncio

import grpc
import orjson
import pytest
from google.rpc import error_details_pb2, status_pb2

from tests.support.grpc_server import failure, running
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import sessions_pb2_grpc
from trellis.api.v1 import types_pb2 as pb
from trellis.server.config import ServerConfig


def stub(channel: grpc.aio.Channel) -> sessions_pb2_grpc.SessionsStub:
    return sessions_pb2_grpc.SessionsStub(channel)


async def test_a_session_runs_to_its_end_with_served_and_client_answered_tools(served) -> None:
    _, channel = served
    sessions = stub(channel)
    started = await sessions.Start(spb.SessionsStartRequest(session_id="s1", context_json='{"visits": 2}'))
    assert started.created
    assert started.step.state.current_node_id == "start"
    assert started.step.state.revision > 0
    assert [a.WhichOneof("kind") for a in started.step.actions] == ["render_content", "request_input"]
    assert orjson.loads(started.step.state.context_json) == {"visits": 2}

    # The answer moves to `shout` (a process tool this server serves: run inside the step)
    # and on to `lookup`, whose tool nobody serves: it comes back as a pending CALL_TOOL.
    step = (
        await sessions.Navigate(spb.SessionsNavigateRequest(session_id="s1", input=pb.Input(text="ada")))
    ).step
    assert step.state.current_node_id == "lookup"
    assert step.state.status == pb.STATUS_WAITING_FOR_TOOL
    context = orjson.loads(step.state.context_json)
    assert context["shouted"] == "ADA"
    assert type(context["visits"]) is int
    call = step.actions[-1].call_tool
    assert call.name == "lookup" and orjson.loads(call.args_json) == {"who": "ada"}
    assert call.idempotency_key
    assert not step.terminal

    result = pb.ToolResult(id=call.id, result_json='{"city": "London"}')
    done = (
        await sessions.Navigate(
            spb.SessionsNavigateRequest(session_id="s1", input=pb.Input(tool_result=result))
        )
    ).step
    assert done.terminal
    assert done.state.current_node_id == "done"
    assert done.actions[0].render_content.startswith("Bye ADA")

    again = await sessions.Start(spb.SessionsStartRequest(session_id="s1"))
    assert not again.created
    assert again.step.state.current_node_id == "done"
    got = await sessions.Get(spb.SessionsGetRequest(session_id="s1"))
    assert got.step.state.revision == done.state.revision


async def test_errors_carry_codes_and_reasons_and_leave_the_session_unchanged(served) -> None:
    _, channel = served
    sessions = stub(channel)
    code, reason, _ = await failure(sessions.Get(spb.SessionsGetRequest(session_id="missing")))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")

    started = await sessions.Start(spb.SessionsStartRequest(session_id="s2"))
    code, reason, message = await failure(
        sessions.Navigate(spb.SessionsNavigateRequest(session_id="s2", input=pb.Input(text="x" * 5000)))
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT")
    assert "size=5000" in message

    code, reason, _ = await failure(
        sessions.Navigate(
            spb.SessionsNavigateRequest(session_id="s2", input=pb.Input(tool_result=pb.ToolResult(id="nope")))
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and reason == "UNEXPECTED_TOOL_RESULT"

    code, reason, _ = await failure(
        sessions.Signal(spb.SessionsSignalRequest(session_id="s2", signal="bogus"))
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "UNHANDLED_SIGNAL")

    code, reason, _ = await failure(
        sessions.Start(spb.SessionsStartRequest(session_id="s3", context_json="[not an object]"))
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT")

    code, reason, _ = await failure(sessions.Start(spb.SessionsStartRequest(session_id="../etc")))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SESSION_ID")

    after = await sessions.Get(spb.SessionsGetRequest(session_id="s2"))
    assert after.step.state == started.step.state


async def test_signal_delete_and_paginated_list(served) -> None:
    _, channel = served
    sessions = stub(channel)
    for name in ("c", "a", "b", "d"):
        await sessions.Start(spb.SessionsStartRequest(session_id=name))
    stopped = await sessions.Signal(spb.SessionsSignalRequest(session_id="a", signal="interrupt"))
    assert stopped.step.state.current_node_id == "stopped"

    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = await sessions.List(spb.SessionsListRequest(page_size=3, page_token=token))
        assert len(page.session_ids) <= 3
        seen += page.session_ids
        token = page.next_page_token
        if not token:
            break
    assert seen == ["a", "b", "c", "d"]
    first = await sessions.List(spb.SessionsListRequest(page_size=2))
    assert list(first.session_ids) == ["a", "b"] and "b" not in (first.next_page_token, "")

    await sessions.Delete(spb.SessionsDeleteRequest(session_id="b"))
    await sessions.Delete(spb.SessionsDeleteRequest(session_id="b"))  # idempotent
    listed = await sessions.List(spb.SessionsListRequest())
    assert list(listed.session_ids) == ["a", "c", "d"]


async def test_watch_streams_the_diffs_of_one_session(served) -> None:
    server, channel = served
    sessions = stub(channel)
    await sessions.Start(spb.SessionsStartRequest(session_id="w"))
    await sessions.Start(spb.SessionsStartRequest(session_id="other"))
    stream = sessions.Watch(spb.SessionsWatchRequest(session_id="w"))
    received: list[pb.StateDiff] = []

    async def read() -> None:
        async for item in stream:
            received.append(item.diff)
            if item.diff.status == pb.STATUS_WAITING_FOR_TOOL:
                return

    reader = asyncio.create_task(read())
    for _ in range(200):  # until the server has subscribed the watch (bounded)
        if server.composition.sessions.watcher_count() >= 1:
            break
        await asyncio.sleep(0.01)
    await sessions.Signal(spb.SessionsSignalRequest(session_id="other", signal="interrupt"))
    await sessions.Navigate(spb.SessionsNavigateRequest(session_id="w", input=pb.Input(text="bo")))
    async with asyncio.timeout(10):
        await reader
    stream.cancel()
    assert received and all(d.session_id == "w" for d in received)
    last = received[-1]
    assert last.current_node_id == "lookup"
    assert orjson.loads(last.context_json)["shouted"] == "BO"
    assert list(last.history.node_ids) == ["shout", "lookup"]

    code, reason, _ = await failure(_first(sessions.Watch(spb.SessionsWatchRequest(session_id="nobody"))))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")


async def _first(stream) -> object:
    async for item in stream:
        return item
    return None


async def test_sessions_survive_a_restart_with_the_file_store(flow, tmp_path) -> None:
    store = f"file:{tmp_path / 'sessions'}"
    async with running(ServerConfig(flow_dir=str(flow), store=store)) as (_, channel):
        sessions = stub(channel)
        await sessions.Start(spb.SessionsStartRequest(session_id="keep", context_json='{"n": 7}'))
        request = spb.SessionsNavigateRequest(session_id="keep", input=pb.Input(text="zoe"))
        before = (await sessions.Navigate(request)).step
    async with running(ServerConfig(flow_dir=str(flow), store=store)) as (_, channel):
        after = (await stub(channel).Get(spb.SessionsGetRequest(session_id="keep"))).step
    assert after.state == before.state
    assert after.state.current_node_id == "lookup" and orjson.loads(after.state.context_json)["n"] == 7


async def test_a_page_token_the_server_never_issued_is_refused_naming_the_field(served) -> None:
    _, channel = served
    sessions = stub(channel)
    await sessions.Start(spb.SessionsStartRequest(session_id="a"))
    for garbage in ("a", "not-a-token", "dHJlbGxpcw"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sessions.List(spb.SessionsListRequest(page_token=garbage))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        raw = dict(caught.value.trailing_metadata() or ())["grpc-status-details-bin"]
        details = status_pb2.Status.FromString(raw).details
        bad = error_details_pb2.BadRequest()
        assert details[1].Unpack(bad) and bad.field_violations[0].field == "page_token"
