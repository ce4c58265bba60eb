"""Observability of the server: one structured log line per step and Prometheus metrics.

Every metric lives in the Observer's own registry (not the process-global one),
so several servers in one process (tests) do not collide; ``--metrics-listen``
serves that registry over HTTP.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram

from trellis.dispatching import DispatchContext
from trellis.domain import LifecycleEvent, State, ToolCall, ToolResult
from trellis.ports.dispatcher import ActionDispatcher
from trellis.ports.locker import LockHandle
from trellis.ports.store import OptimisticStepStore, StepStore

STEP_LOG = logging.getLogger("trellis.server.steps")
HOOK_LOG = logging.getLogger("trellis.server.hooks")

# Step latencies span sub-millisecond engine calls to multi-second tool runs.
_STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(slots=True)
class StepRecord:
    """Filled in by a servicer while a step runs; logged and counted when it ends."""

    service: str
    method: str
    session: str = ""
    node: str = ""
    outcome: str = "ok"
    started: float = 0.0  # time.perf_counter() when the step began


class Observer:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.steps = Counter(
            "trellis_steps", "RPC steps handled, by service, method and outcome (ok or an error reason)",
            ["service", "method", "outcome"], registry=self.registry,
        )
        self.step_seconds = Histogram(
            "trellis_step_duration_seconds", "Time to handle one RPC step",
            ["service", "method"], buckets=_STEP_BUCKETS, registry=self.registry,
        )
        self.lock_wait_seconds = Histogram(
            "trellis_lock_wait_seconds", "Time spent waiting for a session lock",
            buckets=_STEP_BUCKETS, registry=self.registry,
        )
        self.dispatches = Counter(
            "trellis_dispatches", "Tool calls dispatched inside steps, by outcome (ok|error|denied|failed)",
            ["outcome"], registry=self.registry,
        )
        self.reloads = Counter(
            "trellis_loader_reloads", "Graph change events applied (compiled nodes dropped)",
            registry=self.registry,
        )
        # labels() costs a lock and a tuple build per call; a step's children are few and fixed.
        self._step_counters: dict[tuple[str, str, str], Counter] = {}
        self._step_timers: dict[tuple[str, str], Histogram] = {}

    def begin(self, service: str, method: str) -> StepRecord:
        """Start timing one step; pass the record to ``end`` exactly once, however it ends."""
        return StepRecord(service, method, started=time.perf_counter())

    def end(self, record: StepRecord) -> None:
        """Count the step, observe its duration and write its one log line (info level)."""
        elapsed = time.perf_counter() - record.started
        service, method, outcome = record.service, record.method, record.outcome
        key = (service, method, outcome)
        counter = self._step_counters.get(key)
        if counter is None:
            counter = self._step_counters[key] = self.steps.labels(*key)
        counter.inc()
        timer = self._step_timers.get((service, method))
        if timer is None:
            timer = self._step_timers[service, method] = self.step_seconds.labels(service, method)
        timer.observe(elapsed)
        # The line is built only when it can be emitted (isEnabledFor is cached by logging).
        if STEP_LOG.isEnabledFor(logging.INFO):
            STEP_LOG.info(
                "%s",
                orjson.dumps(
                    {
                        "event": "step",
                        "rpc": f"{service}.{method}",
                        "session": record.session,
                        "node": record.node,
                        "outcome": outcome,
                        "duration_ms": round(elapsed * 1000, 3),
                    }
                ).decode(),
            )

    def hook(self, event: LifecycleEvent) -> None:
        """A LifecycleHook that logs engine events at debug level."""
        if HOOK_LOG.isEnabledFor(logging.DEBUG):
            HOOK_LOG.debug(
                "%s",
                orjson.dumps(
                    {"event": event.kind.value, "node": event.node_id, "tool": event.tool_name,
                     "is_error": event.is_error},
                ).decode(),
            )


class MeteredStepStore:
    """A StepStore that records how long each step waited to take its session's lock
    (for a store that locks and loads in one round trip, that round trip)."""

    def __init__(self, inner: StepStore, observer: Observer) -> None:
        self._inner = inner
        self._observer = observer

    async def lock_and_load(self, session_id: str, ttl: float) -> tuple[LockHandle, State | None]:
        started = time.perf_counter()
        try:
            return await self._inner.lock_and_load(session_id, ttl)
        finally:
            self._observer.lock_wait_seconds.observe(time.perf_counter() - started)

    async def save_and_unlock(self, handle: LockHandle, session_id: str, state: State | None) -> int:
        return await self._inner.save_and_unlock(handle, session_id, state)


class MeteredOptimisticStepStore(MeteredStepStore):
    """MeteredStepStore of an OptimisticStepStore: a step without the lock waits for none."""

    def __init__(self, inner: OptimisticStepStore, observer: Observer) -> None:
        super().__init__(inner, observer)
        self._optimistic = inner

    def load_cached(self, session_id: str) -> State | None:
        return self._optimistic.load_cached(session_id)

    async def load_unlocked(self, session_id: str) -> State | None:
        return await self._optimistic.load_unlocked(session_id)

    async def save_if_unlocked(self, session_id: str, state: State) -> int:
        return await self._optimistic.save_if_unlocked(session_id, state)


def metered_step_store(inner: StepStore, observer: Observer) -> MeteredStepStore:
    """``inner`` with its lock waits metered, keeping its optimistic capability if it has one."""
    if isinstance(inner, OptimisticStepStore):
        return MeteredOptimisticStepStore(inner, observer)
    return MeteredStepStore(inner, observer)


class MeteredDispatcher:
    """An ActionDispatcher that counts dispatches by outcome."""

    def __init__(self, inner: ActionDispatcher, observer: Observer) -> None:
        self._inner = inner
        self._observer = observer

    def serves(self, tool_name: str) -> bool:
        return self._inner.serves(tool_name)

    async def dispatch(self, call: ToolCall, context: DispatchContext | None = None) -> ToolResult:
        try:
            result = await self._inner.dispatch(call, context)
        except Exception:
            self._observer.dispatches.labels("failed").inc()
            raise
        outcome = "denied" if result.is_denied else "error" if result.is_error else "ok"
        self._observer.dispatches.labels(outcome).inc()
        return result
