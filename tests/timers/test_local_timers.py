"""Durable timers in one process (trellis.timers over MemoryTimerQueue): a session
waiting at a node with a ``timeout:`` gets the ``timeout`` signal from the server
exactly once; an answer first cancels it; a timer that outlives a restart of a server
on the file store fires after it (rebuilt from the stored sessions).

"Exactly once" is visible in the history: every ``timeout`` signal goes to ``late``
(the node's ``on_timeout``, and the entry node's default for every other node), so a
timeout applied twice would put ``late`` in a session's history twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.waiting import eventually
from trellis.adapters.memory_loader import MemoryLoader
from trellis.adapters.memory_store import MemoryStore
from trellis.domain import StepResult
from trellis.engine import Engine
from trellis.errors import ConfigError
from trellis.server.app import TrellisServer
from trellis.server.config import ServerConfig
from trellis.sessions import SessionManager
from trellis.timers import MemoryTimerQueue, Timer, TimerService

FLOW_FILES = {
    "ask.md": "---\nwait: true\ntimeout: {timeout}\non_timeout: late\nsave_to: answer\nto: thanks\n"
    "on_signal_default:\n  timeout: late\n---\nAnswer in time\n",
    "late.md": "---\nwait: true\nsave_to: after\nto: thanks\n---\nToo late\n",
    "thanks.md": "---\nwait: true\nsave_to: more\nto: thanks\n---\nThanks\n",
}


def _write_flow(directory: Path, timeout: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in FLOW_FILES.items():
        (directory / name).write_text(text.replace("{timeout}", timeout), encoding="utf-8")
    return directory


@asynccontextmanager
async def _server(flow: Path, store: str) -> AsyncIterator[TrellisServer]:
    config = ServerConfig(flow_dir=str(flow), listen="127.0.0.1:0", store=store, entry_node="ask")
    server = TrellisServer(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=1.0)


def _parts(server: TrellisServer) -> tuple[SessionManager, MemoryTimerQueue]:
    composition = server.composition
    assert composition is not None and composition.timers is not None
    sessions, queue = composition.sessions, composition.timers.queue
    assert isinstance(sessions, SessionManager) and isinstance(queue, MemoryTimerQueue)
    return sessions, queue


async def _histories(sessions: SessionManager, ids: list[str]) -> dict[str, list[str]]:
    return {sid: (await sessions.get(sid)).state.history for sid in ids}


async def _all_late(sessions: SessionManager, ids: list[str]) -> bool:
    return all("late" in history for history in (await _histories(sessions, ids)).values())


@pytest.mark.parametrize("store_kind", ["memory", "file"])
async def test_a_waiting_session_times_out_once_and_an_answered_one_never(
    store_kind: str, tmp_path: Path
) -> None:
    store = "memory:" if store_kind == "memory" else f"file:{tmp_path / 'sessions'}"
    async with _server(_write_flow(tmp_path / "flow", "1s"), store) as server:
        sessions, queue = _parts(server)
        waiting = [f"w{i}" for i in range(20)]
        answered = [f"a{i}" for i in range(5)]
        for sid in waiting + answered:
            await sessions.start(sid)
        in_time = []
        for sid in answered:
            if (await sessions.navigate(sid, "here")).state.history == ["ask", "thanks"]:
                in_time.append(sid)
        await eventually(lambda: _all_late(sessions, waiting), "every waiting session timed out")
        await eventually(lambda: queue.pending() == 0, "every timer handled (fired or moot)")
        histories = await _histories(sessions, waiting + in_time)
        assert all(histories[sid] == ["ask", "late"] for sid in waiting), histories
        assert in_time, "no answer arrived within 1 s (the machine is far too slow)"
        assert all(histories[sid] == ["ask", "thanks"] for sid in in_time), histories


async def test_timers_waiting_in_a_file_store_fire_after_a_restart(tmp_path: Path) -> None:
    flow = _write_flow(tmp_path / "flow", "2s")
    store = f"file:{tmp_path / 'sessions'}"
    ids = [f"s{i}" for i in range(10)]
    async with _server(flow, store) as server:
        sessions, _ = _parts(server)
        for sid in ids:
            await sessions.start(sid)
    # The first server's timers are gone with it; the second finds the sessions waiting.
    async with _server(flow, store) as server:
        sessions, queue = _parts(server)
        await eventually(lambda: _all_late(sessions, ids), "the sessions timed out after the restart")
        await eventually(lambda: queue.pending() == 0, "every timer handled")
        assert await _histories(sessions, ids) == {sid: ["ask", "late"] for sid in ids}


async def test_timers_can_be_turned_off(tmp_path: Path) -> None:
    config = ServerConfig(
        flow_dir=str(_write_flow(tmp_path / "flow", "1s")),
        listen="127.0.0.1:0",
        entry_node="ask",
        timers=False,
    )
    server = TrellisServer(config)
    await server.start()
    try:
        assert server.composition is not None and server.composition.timers is None
    finally:
        await server.stop(grace=1.0)


async def test_a_poll_interval_that_is_not_positive_is_a_config_error(tmp_path: Path) -> None:
    config = ServerConfig(
        flow_dir=str(_write_flow(tmp_path / "flow", "1s")), listen="127.0.0.1:0", timer_poll_interval=0.0
    )
    with pytest.raises(ConfigError, match="timer_poll_interval"):
        await TrellisServer(config).start()


# --- the service over a session manager: chains, moot fires, unhandled timeouts -----------

CHAIN: list[dict[str, Any]] = [
    # A reminder loop: each timeout moves on to a node that has a timeout of its own.
    {"id": "ask", "wait": True, "timeout": "100ms", "on_timeout": "remind1", "to": "done"},
    {"id": "remind1", "wait": True, "timeout": "100ms", "on_timeout": "remind2", "to": "done"},
    {"id": "remind2", "wait": True, "to": "done"},
    {"id": "done", "content": "done"},
]
NO_HANDLER: list[dict[str, Any]] = [{"id": "ask", "wait": True, "timeout": "100ms", "to": "done"}, *CHAIN[3:]]


@asynccontextmanager
async def _service(flow: list[dict[str, Any]]) -> AsyncIterator[tuple[SessionManager, list[Any]]]:
    sessions = SessionManager(Engine(MemoryLoader(flow), entry_node="ask"), MemoryStore())
    fired: list[tuple[Timer, StepResult | None]] = []
    service = TimerService(
        sessions, MemoryTimerQueue(), poll_interval=0.05, on_fired=lambda t, r, _at: fired.append((t, r))
    )
    task = asyncio.create_task(service.run())
    try:
        yield sessions, fired
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_step_a_timer_takes_arms_the_next_timer() -> None:
    async with _service(CHAIN) as (sessions, fired):
        await sessions.start("s")
        await eventually(lambda: len(fired) == 2, "two timeouts in a row")
        assert (await sessions.get("s")).state.history == ["ask", "remind1", "remind2"]
        assert [timer.node_id for timer, _ in fired] == ["ask", "remind1"]


async def test_a_timer_for_a_revision_the_session_left_is_a_no_op() -> None:
    async with _service(CHAIN) as (sessions, _):
        started = await sessions.start("s")
        await sessions.navigate("s", "answer")
        assert await sessions.fire_signal("s", "timeout", started.state.revision) is None
        assert (await sessions.get("s")).state.history == ["ask", "done"]


async def test_an_unhandled_timeout_is_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trellis.timers")
    async with _service(NO_HANDLER) as (sessions, fired):
        await sessions.start("s")
        await eventually(lambda: len(fired) == 1, "the timer was handled")
        assert fired[0][1] is None
        assert (await sessions.get("s")).state.history == ["ask"]
        assert "signal 'timeout' is not handled" in caplog.text
