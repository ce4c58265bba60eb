"""Broken ActionDispatchers: each is InProcessDispatcher with one mistake."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

from trellis.adapters.inprocess_dispatcher import InProcessDispatcher
from trellis.contracts.dispatcher import ActionDispatcherContract
from trellis.dispatching import DispatchContext
from trellis.domain import JSONValue, ToolCall, ToolResult
from trellis.ports.dispatcher import ActionDispatcher


def echo(args: dict[str, JSONValue]) -> JSONValue:
    return args


def fail(args: dict[str, JSONValue]) -> JSONValue:
    raise RuntimeError("the tool failed")


class RaisesToolErrors(InProcessDispatcher):
    async def dispatch(self, call: ToolCall, context: DispatchContext | None = None) -> ToolResult:
        result = await super().dispatch(call, context)
        if result.is_error:
            raise RuntimeError(result.error)  # the mistake: a failed tool is not an exception
        return result


class SharesOneSlot(InProcessDispatcher):
    async def dispatch(self, call: ToolCall, context: DispatchContext | None = None) -> ToolResult:
        self._current = call  # the mistake: per-call data on the shared dispatcher
        await asyncio.sleep(0)
        return await super().dispatch(self._current, context)


class NumbersAsDoubles(InProcessDispatcher):
    async def dispatch(self, call: ToolCall, context: DispatchContext | None = None) -> ToolResult:
        result = await super().dispatch(call, context)
        # The mistake: numbers travel as doubles (as in a protobuf Struct).
        return dataclasses.replace(result, result=json.loads(json.dumps(result.result), parse_int=float))


class HandsBackTheArguments(InProcessDispatcher):
    async def dispatch(self, call: ToolCall, context: DispatchContext | None = None) -> ToolResult:
        result = await super().dispatch(call, context)
        return dataclasses.replace(result, result=call.args) if not result.is_error else result


class _Contract(ActionDispatcherContract):
    dispatcher_class: type[InProcessDispatcher] = InProcessDispatcher

    async def make_dispatcher(self, tmp_path: Path) -> ActionDispatcher:
        return self.dispatcher_class({"echo": echo, "fail": fail})


class TestBaseline(_Contract):
    pass


class TestRaisesToolErrors(_Contract):
    dispatcher_class = RaisesToolErrors


class TestSharesOneSlot(_Contract):
    dispatcher_class = SharesOneSlot


class TestNumbersAsDoubles(_Contract):
    dispatcher_class = NumbersAsDoubles


class TestHandsBackTheArguments(_Contract):
    dispatcher_class = HandsBackTheArguments


CAUGHT_BY = {
    "TestRaisesToolErrors": [
        "test_a_failing_tool_is_an_error_result_not_an_exception",
        "test_mixed_concurrent_calls_each_get_their_own_outcome",
    ],
    "TestSharesOneSlot": [
        "test_concurrent_calls_each_get_their_own_result",
        "test_mixed_concurrent_calls_each_get_their_own_outcome",
    ],
    "TestNumbersAsDoubles": ["test_numbers_keep_their_exact_type_and_value"],
    "TestHandsBackTheArguments": ["test_the_result_shares_nothing_with_the_call"],
}
