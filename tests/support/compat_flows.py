"""Finding the Go original's flows and driving them with stand-in tools."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Protocol

from tests.support.requirements import missing
from tests.support.servers import serving
from trellis.adapters.directory_loader import DirectoryLoader, entry_node_id, has_default_error_node
from trellis.adapters.inprocess_dispatcher import InProcessDispatcher
from trellis.adapters.memory_store import MemoryStore
from trellis.clients import Client
from trellis.clients.client import Sessions
from trellis.domain import JSONValue, Status, StepResult, ToolResult
from trellis.engine.engine import Engine
from trellis.server.config import ServerConfig
from trellis.sessions import SessionManager

FLOWS = Path(__file__).resolve().parents[2].parent / "shared" / "compat" / "flows"


def require_flows() -> Path:
    """The flows folder beside the checkout: missing fails under CI, else skips."""
    if not FLOWS.is_dir():
        missing(f"the compatibility flows are not present at {FLOWS}")
    return FLOWS


def flow_names() -> list[str]:
    """Every flow: each example folder, and each fixture folder under _tests/<kind>/."""
    if not FLOWS.is_dir():
        return ["<flows missing>"]
    names = [p.name for p in sorted(FLOWS.iterdir()) if p.is_dir() and p.name != "_tests"]
    for kind in sorted((FLOWS / "_tests").iterdir()):
        if kind.is_dir():
            names += [f"_tests/{kind.name}/{p.name}" for p in sorted(kind.iterdir()) if p.is_dir()]
    return names


# Initial context for flows whose entry node demands some (required_context, context_schema).
CONTEXTS: dict[str, dict[str, JSONValue]] = {
    "fail_fast": {"api_key": "key-1", "user_id": "u-1"},
    "typed-flow": {"api_key": "key-1", "retries": 3, "tags": ["a", "b"]},
    "context-demo": {"user": "Ada"},
    "manual-security": {"api_key": "key-1", "password": "hunter2"},
}


class StandInTools:
    """Test tools with the names the flows call (their scripts are not part of the data)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _record(self, name: str, args: dict[str, Any]) -> None:
        self.calls.append((name, args))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def dispatcher(self) -> InProcessDispatcher:
        def tool(name: str, body: Any) -> Any:
            def call(args: dict[str, Any]) -> Any:
                self._record(name, args)
                return body(args)

            return call

        def fail(message: str) -> Any:
            def raise_(_args: dict[str, Any]) -> Any:
                raise RuntimeError(message)

            return raise_

        def greet(args: dict[str, Any]) -> Any:
            return {"message": f"{args.get('greeting')}, {args.get('name')}!"}

        table: dict[str, Any] = {
            "reserve_hotel": lambda a: {"id": f"H-{a.get('city')}"},
            "book_flight": lambda a: {"id": f"F-{a.get('destination', 'any')}"},
            "book_hotel": lambda a: "hotel-1",
            "cancel_hotel": lambda a: {"cancelled": a.get("id")},
            "cancel_flight": lambda a: {"cancelled": a.get("id")},
            "cancel_car": lambda a: "car cancelled",
            "rent_car": fail("no cars available"),
            "book_car": fail("no cars available"),
            "reject_request": lambda a: "rejected",
            "get_os": lambda a: "linux",
            "greet_py": greet,
            "greet_js": greet,
            "greet_ps": greet,
            "hello_script": lambda a: {"hello": a.get("name")},
            "get_weather": lambda a: {"temp": 22, "condition": "Sunny", "city": a.get("city")},
            "increment": lambda a: int(a.get("count", 0)) + 1,
            "echo": lambda a: "echoed",
            "mock_tool": lambda a: {"success": True, "received": a.get("input")},
        }
        return InProcessDispatcher({name: tool(name, body) for name, body in table.items()})


def engine_options(name: str) -> dict[str, str]:
    """The flow's entry and default error node, chosen as the CLI chooses them
    (docs/engine.md, "Graphs and node IDs");
    the keys are both Engine options and server settings."""
    root = FLOWS / name
    return {
        "entry_node": entry_node_id(root),
        "default_error_node": "error" if has_default_error_node(root) else "",
    }


def open_engine(name: str) -> Engine:
    """An engine over the flow's directory (options from ``engine_options``)."""
    return Engine(DirectoryLoader(FLOWS / name), **engine_options(name))


def open_manager(name: str, tools: StandInTools | None = None) -> SessionManager:
    """A SessionManager over the flow, a MemoryStore and (optionally) the stand-in tools;
    in the sessions transport (conftest.py), the same answered by a server's Sessions service."""
    if served_flows is not None:
        return served_flows.sessions(name, tools)  # type: ignore[return-value]
    return SessionManager(open_engine(name), MemoryStore(), dispatcher=tools.dispatcher() if tools else None)


class ServedFlows:
    """Servers of flows, each over the flow's directory with the CLI's entry and error node
    and the stand-in tools as its dispatcher (run inside its durable steps); all stopped
    by ``aclose``."""

    def __init__(self) -> None:
        self._stack = AsyncExitStack()
        self.started = 0

    async def client(self, name: str, tools: StandInTools | None) -> Client:
        served = await self._stack.enter_async_context(
            serving(
                loader=DirectoryLoader(FLOWS / name),
                dispatcher=tools.dispatcher() if tools else None,
                config=ServerConfig(**engine_options(name)),
            )
        )
        self.started += 1
        return await self._stack.enter_async_context(Client(served.target))

    def sessions(self, name: str, tools: StandInTools | None) -> ServedSessions:
        return ServedSessions(self, name, tools)

    async def aclose(self) -> None:
        await self._stack.aclose()


class ServedSessions:
    """The SessionManager methods the compat tests use, answered by the Sessions service of
    a server started on first use (inside the test's event loop)."""

    def __init__(self, flows: ServedFlows, name: str, tools: StandInTools | None) -> None:
        self._flows = flows
        self._name = name
        self._tools = tools
        self._client: Client | None = None

    async def _sessions(self) -> Sessions:
        if self._client is None:
            self._client = await self._flows.client(self._name, self._tools)
        return self._client.sessions

    async def start(self, session_id: str, context: Mapping[str, JSONValue] | None = None) -> StepResult:
        return await (await self._sessions()).start(session_id, context)

    async def navigate(self, session_id: str, input: JSONValue | ToolResult = "") -> StepResult:
        return await (await self._sessions()).navigate(session_id, input)

    async def signal(self, session_id: str, name: str) -> StepResult:
        return await (await self._sessions()).signal(session_id, name)

    async def get(self, session_id: str) -> StepResult:
        return await (await self._sessions()).get(session_id)


# Set by the ``transport`` fixture (conftest.py) while a test runs through the Sessions service.
served_flows: ServedFlows | None = None


class SessionsLike(Protocol):
    """What a walk needs of sessions: a SessionManager, or the SDK's Client.sessions."""

    async def start(self, session_id: str, context: Mapping[str, JSONValue] | None = None) -> StepResult: ...

    async def navigate(self, session_id: str, input: JSONValue | ToolResult = "") -> StepResult: ...


async def walk(sessions: SessionsLike, context: Mapping[str, JSONValue], limit: int = 30) -> StepResult:
    """Start session "walk" and answer every prompt the obvious way (first option, yes,
    some text) until the end."""
    step = await sessions.start("walk", context)
    for _ in range(limit):
        if step.state.status is Status.TERMINATED:
            break
        request = step.render.input_request()
        if request is None:
            break
        if request.options:
            answer = request.options[0]
        elif request.type == "confirm":
            answer = "yes"
        else:
            answer = "hello"
        step = await sessions.navigate("walk", answer)
    return step
