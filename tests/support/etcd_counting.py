"""Counting the calls a client sends to etcd, and a small state to store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc  # type: ignore[import-untyped]

from trellis.domain import State


def state_with(session_id: str, **context: Any) -> State:
    state = State.new(session_id, "start")
    state.context.update(context)
    return state


class CountingInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        self.methods: list[str] = []

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Awaitable[Any]], call_details: Any, request: Any
    ) -> Any:
        method = call_details.method
        self.methods.append(method.decode() if isinstance(method, bytes) else method)
        return await continuation(call_details, request)
