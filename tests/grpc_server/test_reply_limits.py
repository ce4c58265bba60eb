"""A state and its render always fit in a reply: a step whose reply would pass the
message limit is refused (INVALID_ARGUMENT, STATE_TOO_LARGE) before anything is
saved, and the session stays readable.

The flow: ``start`` waits for a tool the client runs (``fetch``) and saves its
result to ``data``; ``show`` prints ``data`` once per item of ``copies``. One
result is held three times in the state (``tool_result``, ``data`` and
``sys.ans``: docs/engine.md, "Tools and sagas"), and the limit counts all of them.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest

from tests.support.grpc_server import failure, internal_channel, running
from trellis.adapters.grpc.channel import RemoteChannel
from trellis.adapters.grpc.store import RemoteStateStore
from trellis.api.v1 import engine_pb2 as epb
from trellis.api.v1 import engine_pb2_grpc, sessions_pb2_grpc, store_pb2_grpc
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import store_pb2 as stpb
from trellis.api.v1 import types_pb2 as pb
from trellis.domain import State
from trellis.errors import ConfigError, StateTooLarge
from trellis.server.app import TrellisServer
from trellis.server.config import REPLY_ENVELOPE_BYTES, ServerConfig, derived_state_limit

C = grpc.StatusCode
SMALL = 256 * 1024
NODES = {
    "start.md": """\
        ---
        do:
          name: fetch
        save_to: data
        to: show
        ---
        """,
    "show.md": """\
        ---
        wait: true
        to: show
        ---
        {{ range .copies }}{{ $.data }}{{ end }}
        """,
}


def write_flow(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in NODES.items():
        (directory / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return directory


@pytest.fixture(params=["memory", "file"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory:" if request.param == "memory" else f"file:{tmp_path / 'sessions'}"


async def serve(tmp_path: Path, store: str, **settings: Any) -> Any:
    # The flow prints what it is given: a render budget far above the message limit
    # leaves the state and reply limits as what refuses a step here.
    settings.setdefault("max_template_output_bytes", 64 * 1024 * 1024)
    config = ServerConfig(
        flow_dir=str(write_flow(tmp_path / "flow")), store=store, internal_listen="127.0.0.1:0", **settings
    )
    return running(config)


class Rig:
    def __init__(self, server: TrellisServer, channel: grpc.aio.Channel) -> None:
        self.sessions = sessions_pb2_grpc.SessionsStub(channel)
        self.engine = engine_pb2_grpc.EngineStub(channel)
        # StateStore is served on the internal listener only.
        self._internal = internal_channel(server)
        self.store = store_pb2_grpc.StateStoreStub(self._internal)

    async def close(self) -> None:
        await self._internal.close()

    async def waiting(self, sid: str, copies: int = 1) -> str:
        """Start ``sid``; it waits for ``fetch``. Returns the pending call's ID."""
        context = orjson.dumps({"copies": list(range(copies))}).decode()
        reply = await self.sessions.Start(spb.SessionsStartRequest(session_id=sid, context_json=context))
        return str(reply.step.state.pending_tool_call)

    def answer(self, sid: str, call_id: str, size: int) -> Any:
        result = pb.ToolResult(id=call_id, result_json=orjson.dumps("x" * size).decode())
        return self.sessions.Navigate(
            spb.SessionsNavigateRequest(session_id=sid, input=pb.Input(tool_result=result))
        )


@pytest.fixture
async def small(tmp_path: Path, store_url: str) -> AsyncIterator[Rig]:
    async with await serve(tmp_path, store_url, max_message_bytes=SMALL) as (server, channel):
        rig = Rig(server, channel)
        yield rig
        await rig.close()


async def test_a_huge_tool_result_is_refused_and_the_session_stays_readable(
    tmp_path: Path, store_url: str
) -> None:
    # The attack: 1.5 MB (under the 4 MiB message limit), held three times in the state.
    async with await serve(tmp_path, store_url) as (server, channel):
        rig = Rig(server, channel)
        call_id = await rig.waiting("big")
        code, reason, message = await failure(rig.answer("big", call_id, 1_500_000))
        assert (code, reason) == (C.INVALID_ARGUMENT, "STATE_TOO_LARGE"), message
        assert "'big'" in message and f"limit is {derived_state_limit(4 * 1024 * 1024)} bytes" in message
        got = await rig.sessions.Get(spb.SessionsGetRequest(session_id="big"))
        assert got.step.state.pending_tool_call == call_id and "data" not in got.step.state.context_json
        loaded = await rig.store.Load(stpb.LoadRequest(session_id="big"))
        assert loaded.state.current_node_id == "start"
        # The session goes on with a result that fits.
        done = await rig.answer("big", call_id, 1000)
        assert done.step.state.current_node_id == "show"


async def test_the_largest_result_that_fits_comes_back_within_the_message_limit(small: Rig) -> None:
    """Bisect the tool result size at the state limit: the largest accepted step's reply
    (and its Get) fit the message limit; one byte more is refused and changes nothing."""
    sid = "probe"
    call_id = await small.waiting(sid)
    fits, refused = 0, SMALL
    accepted: Any = None
    n = 0
    while refused - fits > 1:
        size = (fits + refused) // 2
        try:
            reply = await small.answer(sid, call_id, size)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == C.INVALID_ARGUMENT, exc.details()
            assert f"state of session '{sid}'" in (exc.details() or "")
            refused = size
            continue
        fits, accepted = size, reply
        n += 1
        sid = f"probe-{n}"
        call_id = await small.waiting(sid)
    assert accepted is not None
    limit = derived_state_limit(SMALL)
    # Three copies of the result, all counted: the largest result is about a third of the limit.
    assert limit // 3 - 1024 < fits < limit // 3
    assert accepted.ByteSize() <= SMALL
    got = await small.sessions.Get(spb.SessionsGetRequest(session_id=accepted.step.state.session_id))
    assert got.ByteSize() <= SMALL and got.step.actions[0].render_content.strip() == "x" * fits
    # One byte more: refused, and the waiting session is untouched.
    code, reason, _ = await failure(small.answer(sid, call_id, fits + 1))
    assert (code, reason) == (C.INVALID_ARGUMENT, "STATE_TOO_LARGE")
    assert (await small.sessions.Get(spb.SessionsGetRequest(session_id=sid))).step.state.current_node_id == (
        "start"
    )


async def test_a_render_that_would_not_fit_is_refused_before_saving(small: Rig) -> None:
    # The state holds the result three times; the render shows it eight times.
    call_id = await small.waiting("loud", copies=8)
    size = derived_state_limit(SMALL) // 6
    code, reason, message = await failure(small.answer("loud", call_id, size))
    assert (code, reason) == (C.INVALID_ARGUMENT, "STATE_TOO_LARGE")
    assert "actions shown for session 'loud'" in message
    got = await small.sessions.Get(spb.SessionsGetRequest(session_id="loud"))
    assert got.step.state.current_node_id == "start"


async def test_the_stateless_engine_refuses_a_state_it_could_not_send(small: Rig) -> None:
    start = (await small.engine.Start(epb.EngineStartRequest(session_id="e"))).step.state
    result = pb.ToolResult(id=start.pending_tool_call, result_json=orjson.dumps("x" * (SMALL // 2)).decode())
    request = epb.EngineNavigateRequest(state=start, input=pb.Input(tool_result=result))
    code, reason, message = await failure(small.engine.Navigate(request))
    assert (code, reason) == (C.INVALID_ARGUMENT, "STATE_TOO_LARGE"), message


async def test_the_store_service_refuses_a_state_over_the_limit_and_the_remote_store_relays_it(
    tmp_path: Path, store_url: str
) -> None:
    async with await serve(tmp_path, store_url, max_message_bytes=SMALL) as (server, _channel):
        state = State.new("s", "start")
        state.context["big"] = "x" * derived_state_limit(SMALL)
        async with RemoteChannel(f"127.0.0.1:{server.internal_port}") as remote:
            store = RemoteStateStore(remote, owns_channel=False)
            with pytest.raises(StateTooLarge, match="limit is"):
                await store.save("s", state)
            state.context["big"] = "x" * 1000
            assert await store.save("s", state) == 1


def test_the_state_limit_derives_from_the_message_limit() -> None:
    assert ServerConfig().effective_max_state_bytes() == (4 * 1024 * 1024 - REPLY_ENVELOPE_BYTES) // 2
    assert ServerConfig(max_message_bytes=SMALL).effective_max_state_bytes() == derived_state_limit(SMALL)
    assert ServerConfig(max_message_bytes=SMALL, max_state_bytes=1000).effective_max_state_bytes() == 1000
    with pytest.raises(ConfigError, match="max_state_bytes"):
        ServerConfig(max_message_bytes=SMALL, max_state_bytes=SMALL).effective_max_state_bytes()
