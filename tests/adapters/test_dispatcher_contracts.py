"""The public ActionDispatcher contract, run against the in-process, process and routed dispatchers."""

from __future__ import annotations

from pathlib import Path

from tests.support.tool_scripts import ECHO, FAIL, write_tools
from trellis.adapters.inprocess_dispatcher import InProcessDispatcher
from trellis.adapters.process_dispatcher import ProcessDispatcher
from trellis.adapters.tool_router import ToolRouter
from trellis.contracts.dispatcher import ActionDispatcherContract
from trellis.domain import JSONValue
from trellis.ports.dispatcher import ActionDispatcher


def echo(args: dict[str, JSONValue]) -> JSONValue:
    return args


async def fail(args: dict[str, JSONValue]) -> JSONValue:
    raise RuntimeError("the tool failed")


class TestInProcessDispatcherContract(ActionDispatcherContract):
    async def make_dispatcher(self, tmp_path: Path) -> ActionDispatcher:
        return InProcessDispatcher({"echo": echo, "fail": fail})


class TestProcessDispatcherContract(ActionDispatcherContract):
    async def make_dispatcher(self, tmp_path: Path) -> ActionDispatcher:
        return ProcessDispatcher.from_file(write_tools(tmp_path, {"echo": ECHO, "fail": FAIL}))


class TestToolRouterContract(ActionDispatcherContract):
    async def make_dispatcher(self, tmp_path: Path) -> ActionDispatcher:
        processes = ProcessDispatcher.from_file(write_tools(tmp_path, {"fail": FAIL}))
        return ToolRouter({"fail": processes}, default=InProcessDispatcher({"echo": echo}))
