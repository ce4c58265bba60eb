"""Client side of the system tests: durable steps with a unique token per request, a
ledger of what the clients saw, and the check of a stored counter session against it.

Every request carries a fresh token (the text input), saved by the counter flow at
the position the step was applied (``got_<i>``). So after the run:

* acknowledged  -> the token is stored exactly once, at the position the answer said;
* refused with a clean code (ABORTED: conflict, lock lost, lock timeout) -> not stored;
* failed ambiguously (UNAVAILABLE, DEADLINE_EXCEEDED: the answer may have been lost)
  -> stored at most once;
* anything else stored (a token stored twice, a gap, an unknown token) is a bug.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc  # type: ignore[import-untyped]
import orjson

from tests.support.system_flows import counter_node
from trellis.api import error_table
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import sessions_pb2_grpc
from trellis.api.v1 import types_pb2 as pb
from trellis.clients.step_stream import StepStream

CLEAN_REFUSALS = frozenset({grpc.StatusCode.ABORTED})
AMBIGUOUS = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
RETRYABLE = CLEAN_REFUSALS | AMBIGUOUS


@dataclass(frozen=True)
class Outcome:
    token: str
    code: grpc.StatusCode | None = None  # None: acknowledged
    reason: str = ""
    message: str = ""
    state: pb.State | None = None


def reason_of(exc: grpc.aio.AioRpcError) -> str:
    for key, value in exc.trailing_metadata() or ():
        if key == error_table.STATUS_DETAILS_KEY:
            info = error_table.error_info_from(value)
            return info.reason if info is not None else ""
    return ""


async def navigate(
    stub: sessions_pb2_grpc.SessionsStub, session_id: str, token: str, within: float = 20.0
) -> Outcome:
    request = spb.SessionsNavigateRequest(session_id=session_id, input=pb.Input(text=token))
    try:
        response = await stub.Navigate(request, timeout=within)
    except grpc.aio.AioRpcError as exc:
        return Outcome(token, exc.code(), reason_of(exc), exc.details() or "")
    return Outcome(token, state=response.step.state)


@dataclass
class Ledger:
    """What the clients of one session saw."""

    acked: dict[str, int] = field(default_factory=dict)  # token -> position it was applied at
    ambiguous: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    unexpected: list[Outcome] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)  # token -> what the client was told

    def record(self, outcome: Outcome) -> None:
        code = outcome.code.name if outcome.code is not None else "OK"
        self.answers[outcome.token] = f"{code} {outcome.reason} {outcome.message}".strip()
        if outcome.code is None:
            assert outcome.state is not None
            self.acked[outcome.token] = len(outcome.state.history) - 2
        elif outcome.code in CLEAN_REFUSALS:
            self.refused.add(outcome.token)
        elif outcome.code in AMBIGUOUS:
            self.ambiguous.add(outcome.token)
        else:
            self.unexpected.append(outcome)


def check_counter(state: pb.State, ledger: Ledger) -> int:
    """Check a stored counter session against what its clients saw; returns its count."""
    count = len(state.history) - 1
    assert list(state.history) == [counter_node(i) for i in range(count + 1)], "history has a gap or repeat"
    assert state.current_node_id == counter_node(count)
    context = orjson.loads(state.context_json or "{}")
    stored = [context.get(f"got_{i}") for i in range(count)]
    assert None not in stored, f"a step left no input at position {stored.index(None)}"
    assert not {k for k in context if k.startswith("got_")} - {f"got_{i}" for i in range(count)}
    twice = [token for token, n in Counter(stored).items() if n > 1]
    assert not twice, f"applied twice: {twice}"
    for token, position in ledger.acked.items():
        assert position < count and stored[position] == token, f"acknowledged step {token} lost"
    for token in set(stored) - set(ledger.acked):
        told = ledger.answers.get(token, "never sent")
        assert token in ledger.ambiguous, f"{token} stored although its request got: {told}"
    assert not ledger.unexpected, f"calls failed with a code that is not retryable: {ledger.unexpected[:3]}"
    return count


async def step_until_acked(
    stubs: list[sessions_pb2_grpc.SessionsStub],
    session_id: str,
    name: str,
    ledger: Ledger,
    rng: random.Random,
    *,
    attempts: int = 200,
    within: float = 20.0,
) -> Outcome:
    """One logical step, retried (fresh token per attempt, any replica) on retryable
    codes until acknowledged; bounded by ``attempts``."""
    outcome = Outcome(name)
    for attempt in range(attempts):
        outcome = await navigate(rng.choice(stubs), session_id, f"{name}.{attempt}", within)
        ledger.record(outcome)
        if outcome.code is None or outcome.code not in RETRYABLE:
            return outcome
        await asyncio.sleep(0.02 + rng.random() * 0.05)
    return outcome


@asynccontextmanager
async def step_senders(
    stubs: Sequence[sessions_pb2_grpc.SessionsStub], step_stream: bool
) -> AsyncIterator[list[Any]]:
    """What the clients send their steps through: the stubs themselves (unary calls), or
    one Sessions.Steps stream per stub (the SDK's StepStream: the same Navigate signature,
    the same errors), closed on exit."""
    if not step_stream:
        yield list(stubs)
        return
    streams = [StepStream(stub) for stub in stubs]
    try:
        yield list(streams)
    finally:
        for stream in streams:
            await stream.close()
