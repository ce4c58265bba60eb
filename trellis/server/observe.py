"""Observability of the server: one structured log line per step and Prometheus metrics.

Every metric lives in the Observer's own registry (not the process-global one),
so several servers in one process (tests) do not collide; ``--metrics-listen``
serves that registry over HTTP.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram

from trellis.domain import LifecycleEvent, ToolCall, ToolResult
from trellis.ports.dispatcher import ActionDispatcher
from trellis.ports.locker import DistributedLocker, LockHandle

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

    @asynccontextmanager
    async def step(self, service: str, method: str) -> AsyncIterator[StepRecord]:
        record = StepRecord(service, method)
        started = time.perf_counter()
        try:
            yield record
        finally:
            elapsed = time.perf_counter() - started
            self.steps.labels(service, method, record.outcome).inc()
            self.step_seconds.labels(service, method).observe(elapsed)
            STEP_LOG.info(
                "%s",
                orjson.dumps(
                    {
                        "event": "step",
                        "rpc": f"{service}.{method}",
                        "session": record.session,
                        "node": record.node,
                        "outcome": record.outcome,
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


class MeteredLocker:
    """A DistributedLocker that records how long each acquire waited."""

    def __init__(self, inner: DistributedLocker, observer: Observer) -> None:
        self._inner = inner
        self._observer = observer

    async def acquire(self, key: str, ttl: float) -> LockHandle:
        started = time.perf_counter()
        try:
            return await self._inner.acquire(key, ttl)
        finally:
            self._observer.lock_wait_seconds.observe(time.perf_counter() - started)


class MeteredDispatcher:
    """An ActionDispatcher that counts dispatches by outcome."""

    def __init__(self, inner: ActionDispatcher, observer: Observer) -> None:
        self._inner = inner
        self._observer = observer

    def serves(self, tool_name: str) -> bool:
        return self._inner.serves(tool_name)

    async def dispatch(self, call: ToolCall) -> ToolResult:
        try:
            result = await self._inner.dispatch(call)
        except Exception:
            self._observer.dispatches.labels("failed").inc()
            raise
        outcome = "denied" if result.is_denied else "error" if result.is_error else "ok"
        self._observer.dispatches.labels(outcome).inc()
        return result
