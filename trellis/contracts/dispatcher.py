"""The ActionDispatcher contract: every dispatcher (in-process, process, gRPC client) passes it.

The dispatcher under test must serve two tools:

* ``ECHO_TOOL`` (``"echo"``): succeeds with its arguments as the result (a JSON object);
* ``FAILING_TOOL`` (``"fail"``): fails every time;

and must not serve ``"no-such-tool"``. Run it in a few lines::

    from trellis.contracts.dispatcher import ActionDispatcherContract

    class TestMyDispatcher(ActionDispatcherContract):
        async def make_dispatcher(self, tmp_path):
            return MyDispatcher({"echo": ..., "fail": ...})
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from trellis.dispatching import DispatchContext
from trellis.domain import ToolCall
from trellis.ports.dispatcher import ActionDispatcher

_BOUND = 30.0


class ActionDispatcherContract:
    """Subclass with a ``Test`` name and implement ``make_dispatcher``."""

    # Marked explicitly so the suite also runs under pytest-asyncio's strict mode.
    pytestmark = pytest.mark.asyncio

    ECHO_TOOL = "echo"
    FAILING_TOOL = "fail"
    UNKNOWN_TOOL = "no-such-tool"

    async def make_dispatcher(self, tmp_path: Path) -> ActionDispatcher:
        raise NotImplementedError("override make_dispatcher to return the dispatcher under test")

    async def close_dispatcher(self, dispatcher: ActionDispatcher) -> None:
        """Release what make_dispatcher opened (default: nothing)."""

    @pytest_asyncio.fixture
    async def dispatcher(self, tmp_path: Path) -> AsyncIterator[ActionDispatcher]:
        made = await self.make_dispatcher(tmp_path)
        try:
            yield made
        finally:
            await self.close_dispatcher(made)

    async def test_serves_its_tools_and_nothing_else(self, dispatcher: ActionDispatcher) -> None:
        assert dispatcher.serves(self.ECHO_TOOL)
        assert dispatcher.serves(self.FAILING_TOOL)
        assert not dispatcher.serves(self.UNKNOWN_TOOL)

    async def test_a_successful_call_returns_its_result_under_the_call_id(
        self, dispatcher: ActionDispatcher
    ) -> None:
        args = {"text": "olá 世界 🙂", "count": 3, "ratio": 0.5, "flag": True, "nested": {"list": [1, None]}}
        call = ToolCall(id="call-echo", name=self.ECHO_TOOL, args=args, idempotency_key="k-1")
        async with asyncio.timeout(_BOUND):
            result = await dispatcher.dispatch(call)
        assert result.id == "call-echo"
        assert not result.is_error and not result.is_denied, result.error
        assert result.result == args
        assert isinstance(result.result["count"], int) and isinstance(result.result["ratio"], float)

    async def test_a_call_with_a_dispatch_context_is_run_like_one_without(
        self, dispatcher: ActionDispatcher
    ) -> None:
        context = DispatchContext(
            session_id="session-1",
            node_id="node-1",
            attempt=1,
            deadline=time.time() + _BOUND,
            idempotency_key="k-context",
            fencing_token=7,
        )
        call = ToolCall(id="call-context", name=self.ECHO_TOOL, args={"a": 1}, idempotency_key="k-context")
        async with asyncio.timeout(_BOUND):
            result = await dispatcher.dispatch(call, context)
        assert (result.id, result.result, result.is_error) == ("call-context", {"a": 1}, False), result.error

    async def test_a_failing_tool_is_an_error_result_not_an_exception(
        self, dispatcher: ActionDispatcher
    ) -> None:
        call = ToolCall(id="call-fail", name=self.FAILING_TOOL, args={"x": 1})
        async with asyncio.timeout(_BOUND):
            result = await dispatcher.dispatch(call)
        assert result.id == "call-fail"
        assert result.is_error
        assert result.error != ""

    async def test_an_unknown_tool_is_an_error_result_naming_it(self, dispatcher: ActionDispatcher) -> None:
        call = ToolCall(id="call-unknown", name=self.UNKNOWN_TOOL, args={})
        async with asyncio.timeout(_BOUND):
            result = await dispatcher.dispatch(call)
        assert result.id == "call-unknown"
        assert result.is_error
        assert self.UNKNOWN_TOOL in result.error

    async def test_concurrent_calls_each_get_their_own_result(self, dispatcher: ActionDispatcher) -> None:
        calls = [ToolCall(id=f"call-{n}", name=self.ECHO_TOOL, args={"n": n}) for n in range(8)]
        async with asyncio.timeout(_BOUND):
            results = await asyncio.gather(*(dispatcher.dispatch(call) for call in calls))
        assert [(r.id, r.result) for r in results] == [(f"call-{n}", {"n": n}) for n in range(8)]
        assert not any(r.is_error for r in results)

    async def test_mixed_concurrent_calls_each_get_their_own_outcome(
        self, dispatcher: ActionDispatcher
    ) -> None:
        calls = [
            ToolCall(id=f"mixed-{n}", name=self.ECHO_TOOL if n % 2 else self.FAILING_TOOL, args={"n": n})
            for n in range(10)
        ]
        async with asyncio.timeout(_BOUND):
            results = await asyncio.gather(*(dispatcher.dispatch(call) for call in calls))
        assert [r.id for r in results] == [c.id for c in calls]
        for n, result in enumerate(results):
            if n % 2:
                assert not result.is_error and result.result == {"n": n}, (n, result)
            else:
                assert result.is_error, (n, result)

    async def test_numbers_keep_their_exact_type_and_value(self, dispatcher: ActionDispatcher) -> None:
        args = {"big": 2**63 - 1, "small": -(2**63), "odd": 2**53 + 1, "integral_float": 1e16, "zero": -0.0}
        call = ToolCall(id="call-numbers", name=self.ECHO_TOOL, args=args)
        async with asyncio.timeout(_BOUND):
            result = await dispatcher.dispatch(call)
        assert not result.is_error, result.error
        assert isinstance(result.result, dict)
        assert {k: (type(v), repr(v)) for k, v in result.result.items()} == {
            k: (type(v), repr(v)) for k, v in args.items()
        }

    async def test_the_result_shares_nothing_with_the_call(self, dispatcher: ActionDispatcher) -> None:
        """The engine keeps both: changing one must not change the other."""
        call = ToolCall(id="call-copy", name=self.ECHO_TOOL, args={"nested": {"list": [1, 2]}})
        async with asyncio.timeout(_BOUND):
            result = await dispatcher.dispatch(call)
        assert isinstance(result.result, dict) and result.result == {"nested": {"list": [1, 2]}}
        result.result["nested"]["list"].append(3)
        assert call.args == {"nested": {"list": [1, 2]}}
