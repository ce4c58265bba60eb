"""The Python SDK end to end through a real server: sessions and the stateless engine,
async and blocking, on the saga example and a flow written here."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.servers import EXAMPLES, flow_server
from trellis.clients import Client, SyncClient
from trellis.domain import ActionType, State, StateDiff, Status, StepResult, ToolResult
from trellis.errors import (
    InvalidInput,
    SessionNotFound,
    StateSignatureInvalid,
    ToolResultMismatch,
    Unauthenticated,
    UnexpectedToolResult,
    UnhandledSignal,
)

BOUND = 30.0


def texts(step: StepResult) -> str:
    return "".join(str(a.payload) for a in step.render.actions if a.type is ActionType.RENDER_CONTENT)


async def test_sessions_walk_the_quiz_answering_the_tool_the_server_does_not_serve(
    step_stream: bool, quiz_target: str
) -> None:
    async with Client(quiz_target, step_stream=step_stream) as client:
        step = await client.sessions.start("ada", {"visits": 3})
        assert step.state.current_node_id == "start" and not step.terminal
        assert "Who are you?" in texts(step)
        assert step.render.input_request() is not None
        step = await client.sessions.navigate("ada", "Ada")
        call = step.render.tool_call()
        assert step.state.status is Status.WAITING_FOR_TOOL and call is not None and call.name == "lookup"
        assert call.args == {"who": "Ada"}
        # A wrong call id is refused and changes nothing.
        with pytest.raises(ToolResultMismatch) as wrong:
            await client.sessions.navigate("ada", ToolResult(id="not-" + call.id, result="x"))
        assert "not-" + call.id in str(wrong.value)
        assert (await client.sessions.get("ada")).state.revision == step.state.revision
        step = await client.sessions.navigate("ada", ToolResult(id=call.id, result="a mathematician"))
        assert step.terminal and step.state.status is Status.TERMINATED
        assert "Bye Ada, you are a mathematician." in texts(step)
        context = step.state.context
        assert (context["visits"], context["name"], context["found"]) == (3, "Ada", "a mathematician")
        stored = await client.sessions.get("ada")
        assert stored.state.history == step.state.history and stored.state.revision == step.state.revision
        # Start on an existing session resumes it untouched.
        again = await client.sessions.start("ada", {"visits": 99})
        assert again.state.context["visits"] == 3
        page = await client.sessions.list()
        assert page.session_ids == ["ada"] and page.next_page_token == ""
        await client.sessions.delete("ada")
        await client.sessions.delete("ada")
        with pytest.raises(SessionNotFound) as missing:
            await client.sessions.get("ada")
        assert missing.value.session_id == "ada"


async def test_session_errors_come_back_as_library_exceptions(step_stream: bool, quiz_target: str) -> None:
    async with Client(quiz_target, step_stream=step_stream) as client:
        with pytest.raises(SessionNotFound):
            await client.sessions.navigate("nobody", "hi")
        await client.sessions.start("bob")
        with pytest.raises(UnexpectedToolResult):
            await client.sessions.navigate("bob", ToolResult(id="lookup", result=1))
        with pytest.raises(InvalidInput):
            await client.sessions.navigate("bob", "x" * 100_000)
        step = await client.sessions.signal("bob", "interrupt")
        assert step.terminal and "Stopped." in texts(step)
        with pytest.raises(UnhandledSignal):
            await client.sessions.signal("bob", "nobody-handles-this")
        # An error whose message echoes a long input still arrives as the server's error.
        with pytest.raises(UnhandledSignal):
            await client.sessions.signal("bob", "ü" * 5000)


async def test_sessions_watch_sees_each_saved_step(step_stream: bool, quiz_target: str) -> None:
    async with Client(quiz_target, step_stream=step_stream) as client:
        await client.sessions.start("w")
        diffs: list[StateDiff] = []

        async def follow() -> None:
            async for diff in client.sessions.watch("w"):
                diffs.append(diff)
                if diff.terminated:
                    return

        watcher = asyncio.create_task(follow())
        # The server subscribes asynchronously: a get on the same connection orders us after it.
        await asyncio.sleep(0.2)
        await client.sessions.navigate("w", "Wu")
        call = (await client.sessions.get("w")).render.tool_call()
        assert call is not None
        await client.sessions.navigate("w", ToolResult(id=call.id, result="here"))
        async with asyncio.timeout(BOUND):
            await watcher
        assert diffs[0].context == {"name": "Wu"} or diffs[0].current_node_id == "lookup"
        assert diffs[-1].terminated is True
        assert any(d.context and d.context.get("found") == "here" for d in diffs)


async def test_watching_a_missing_session_raises_session_not_found(quiz_target: str) -> None:
    async with Client(quiz_target) as client:
        with pytest.raises(SessionNotFound):
            async with asyncio.timeout(BOUND):
                async for _diff in client.sessions.watch("ghost"):
                    pass


async def test_the_saga_runs_and_rolls_back_on_the_server(step_stream: bool) -> None:
    async with (
        flow_server(EXAMPLES / "saga") as server,
        Client(f"127.0.0.1:{server.port}", step_stream=step_stream) as client,
    ):
        step = await client.sessions.start("trip")
        # The server ran every tool: two bookings, the failing car rental, two compensations.
        assert step.terminal and step.state.status is Status.TERMINATED
        assert step.state.current_node_id == ""
        shown = texts(step)
        assert "Booking a hotel in Lisbon" in shown and "Renting a car" in shown


async def test_the_engine_walks_the_saga_with_the_client_answering_tools() -> None:
    async with flow_server(EXAMPLES / "saga") as server, Client(f"127.0.0.1:{server.port}") as client:
        names = [n.id for n in await client.engine.inspect()]
        assert names == sorted(names) and {"start", "hotel", "flight", "car", "done"} <= set(names)
        step = await client.engine.start("trip")
        answered: list[str] = []
        for _ in range(20):  # bounded: the flow has five nodes
            if step.terminal:
                break
            call = step.render.tool_call()
            if call is None:
                step = await client.engine.navigate(step.state, "")
                continue
            answered.append(call.name)
            booked = ToolResult(call.id, {"booking": f"{call.name}-1"})
            step = await client.engine.navigate(step.state, booked)
        assert answered == ["book_hotel", "book_flight", "rent_car"]
        assert step.terminal and step.state.current_node_id == "done"
        assert "Hotel book_hotel-1, flight book_flight-1, car rent_car-1." in texts(step)
        # Render never changes the state; it shows the same actions again.
        render = await client.engine.render(step.state)
        assert render.terminal and render.actions == step.render.actions


async def test_the_engine_signs_states_and_refuses_altered_ones(quiz: Path, tmp_path: Path) -> None:
    (tmp_path / "key").write_bytes(b"a signing key for the test")
    async with flow_server(quiz, signing_key_file=str(tmp_path / "key")) as server:
        async with Client(f"127.0.0.1:{server.port}") as client:
            step = await client.engine.start("s", {"role": "user"})
            # The SDK sends the signature back with the state it came with.
            step = await client.engine.navigate(step.state, "Eve")
            assert step.state.current_node_id == "lookup"
            forged = step.state.clone()
            forged.context["role"] = "admin"
            with pytest.raises(StateSignatureInvalid):
                await client.engine.render(forged)
            with pytest.raises(StateSignatureInvalid):
                await client.engine.navigate(State.new("s", "done"), "")
            interrupted = await client.engine.signal((await client.engine.start("t")).state, "interrupt")
            assert interrupted.terminal and interrupted.state.current_node_id == "stopped"


def test_the_blocking_client_walks_a_session(step_stream: bool, quiz: Path) -> None:
    async def serve(ready: asyncio.Future[int], done: asyncio.Event) -> None:
        async with flow_server(quiz) as server:
            ready.set_result(server.port)
            await done.wait()

    # The server runs on its own loop in this thread's place; the client is blocking.
    import threading

    loop = asyncio.new_event_loop()
    ready: asyncio.Future[int] = loop.create_future()
    done = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(ready, done),), daemon=True)
    thread.start()
    try:
        port = asyncio.run_coroutine_threadsafe(asyncio.wait_for(asyncio.shield(ready), BOUND), loop).result()
        with SyncClient(f"grpc://127.0.0.1:{port}", timeout=10.0, step_stream=step_stream) as client:
            client.health()
            step = client.sessions.start("sync")
            step = client.sessions.navigate("sync", "Sid")
            call = step.render.tool_call()
            assert call is not None
            watch = client.sessions.watch("sync")
            step = client.sessions.navigate("sync", ToolResult(call.id, "blocking"))
            assert step.terminal and step.state.context["found"] == "blocking"
            watch.close()
            assert client.sessions.list().session_ids == ["sync"]
            with pytest.raises(SessionNotFound):
                client.sessions.get("nope")
            engine_step = client.engine.start("e")
            assert client.engine.navigate(engine_step.state, "E").state.current_node_id == "lookup"
    finally:
        loop.call_soon_threadsafe(done.set)
        thread.join(BOUND)


async def test_the_engine_rolls_the_saga_back_when_the_client_reports_a_failure() -> None:
    async with flow_server(EXAMPLES / "saga") as server, Client(f"127.0.0.1:{server.port}") as client:
        step = await client.engine.start("trip")
        answered: list[str] = []
        for _ in range(20):  # bounded: five bookings and compensations at most
            if step.terminal:
                break
            call = step.render.tool_call()
            if call is None:
                step = await client.engine.navigate(step.state, "")
                continue
            answered.append(call.name)
            failed = call.name == "rent_car"
            result = ToolResult(
                call.id, None if failed else {"booking": call.name}, is_error=failed, error="no car"
            )
            step = await client.engine.navigate(step.state, result)
        assert answered == ["book_hotel", "book_flight", "rent_car", "cancel_flight", "cancel_hotel"]
        assert step.terminal and step.state.status is Status.TERMINATED and step.state.current_node_id == ""
        assert step.render.actions == ()


async def test_the_step_stream_carries_the_token_and_is_refused_without_it(quiz: Path) -> None:
    async with flow_server(quiz, token="sesame") as server:
        target = f"127.0.0.1:{server.port}"
        async with Client(target, token="sesame", step_stream=True) as client:
            steps = await asyncio.gather(*(client.sessions.start(f"t{n}") for n in range(20)))
            assert all(step.created for step in steps)
        async with Client(target, step_stream=True) as client:
            with pytest.raises(Unauthenticated):
                await client.sessions.start("intruder")
            with pytest.raises(Unauthenticated):  # and again, on a new stream
                await client.sessions.navigate("t0", "Ada")
        async with Client(target, token="sesame") as client:
            assert (await client.sessions.get("t0")).state.current_node_id == "start"
            with pytest.raises(SessionNotFound):
                await client.sessions.get("intruder")
