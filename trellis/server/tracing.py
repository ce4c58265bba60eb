"""OpenTelemetry tracing (opt-in: ``tracing: true``, TRELLIS_TRACING, ``--tracing``).

Only imported when tracing is on, so a server without the ``otel`` extra never
loads OpenTelemetry and a server with tracing off pays nothing: no interceptor
and no wrapper is installed then (trellis.server.compose, trellis.server.app).

What is traced (docs/server.md, "Tracing"):

* every RPC: a SERVER span named ``package.Service/Method``, continuing the
  caller's trace when its metadata carries a W3C ``traceparent``;
* every durable step (Sessions Start/Navigate/Signal/Delete): a ``trellis.step``
  span with the session ID and the node IDs it went from and to;
* inside a step: the step store's calls (``trellis.lock_and_load``, with a
  ``trellis.lock`` child when the lock comes from a separate locker,
  ``trellis.save_and_unlock``, ``trellis.unlock``, and ``trellis.load`` /
  ``trellis.save`` on a store's lock-free path) and each tool dispatch
  (``trellis.dispatch``), whose context reaches a sidecar in the call's metadata.

No attribute holds a request's content, a tool's arguments or any metadata value:
tokens and user data stay out of traces.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc  # type: ignore[import-untyped]
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from trellis import __version__
from trellis.dispatching import DispatchContext
from trellis.domain import JSONValue, State, StepResult, ToolCall, ToolResult
from trellis.errors import ConfigError
from trellis.ports.dispatcher import ActionDispatcher
from trellis.ports.locker import DistributedLocker, LockHandle
from trellis.ports.sessions import DiffStream, EventStream, SessionsPort
from trellis.ports.store import OptimisticStepStore, SessionPage, StepStore

INSTRUMENTATION = "trellis"
SESSION_ID = "trellis.session.id"
NODE_FROM = "trellis.node.from"
NODE_TO = "trellis.node.to"

# --- setup from the OTEL_* environment ------------------------------------------------------


class Tracing:
    """A tracer and the provider behind it; ``shutdown`` exports what is still buffered."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer(INSTRUMENTATION, __version__)

    def shutdown(self) -> None:
        self.provider.shutdown()


def _one_line(span: ReadableSpan) -> str:
    # One JSON object per line, so a reader of the console output can split it.
    return str(span.to_json(indent=None)) + "\n"


def _exporters(names: str) -> list[tuple[SpanExporter, bool]]:
    """The exporters OTEL_TRACES_EXPORTER names, each with whether to batch its spans."""
    chosen: list[tuple[SpanExporter, bool]] = []
    for name in (part.strip().lower() for part in names.split(",")):
        if name in ("", "none"):
            continue
        if name == "otlp":
            # Reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _CERTIFICATE, ... itself.
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            chosen.append((OTLPSpanExporter(), True))
        elif name == "console":
            chosen.append((ConsoleSpanExporter(formatter=_one_line), False))
        else:
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (this server knows otlp, console and none)"
            )
    return chosen


def tracing_from_env(default_service: str, environ: Mapping[str, str] | None = None) -> Tracing:
    """A tracer provider configured by the standard variables: OTEL_TRACES_EXPORTER
    (otlp by default, console: one JSON line per span on stdout, none), the OTLP
    exporter's OTEL_EXPORTER_OTLP_* settings, OTEL_SERVICE_NAME (else
    ``default_service``), OTEL_RESOURCE_ATTRIBUTES and OTEL_TRACES_SAMPLER."""
    env = os.environ if environ is None else environ
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: default_service}
    provider = TracerProvider(resource=Resource.create(attributes))
    for exporter, batched in _exporters(env.get("OTEL_TRACES_EXPORTER", "otlp")):
        processor = BatchSpanProcessor(exporter) if batched else SimpleSpanProcessor(exporter)
        provider.add_span_processor(processor)
    return Tracing(provider)


def call_metadata() -> list[tuple[str, str]]:
    """The current trace context as gRPC metadata (``traceparent``, ``tracestate``):
    the hook trellis.adapters.grpc.channel adds to every outgoing call."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())


# --- one span per RPC --------------------------------------------------------------------


def _status_of(context: Any) -> Any:
    """The status code set on the call's context: a method of grpc.aio's, an attribute of
    the HTTP listener's (trellis.server.http.calls); None when not set."""
    code = getattr(context, "code", None)
    if callable(code):
        code = code()
    return code if isinstance(code, grpc.StatusCode) else None


class _RpcSpan:
    """Starts the SERVER span of one call and ends it with the call's gRPC status."""

    def __init__(self, tracer: Tracer, method: str, metadata: Sequence[Any]) -> None:
        name = method.lstrip("/")
        service, _, rpc = name.partition("/")
        carrier = {str(key): value for key, value in metadata if isinstance(value, str)}
        self.span = tracer.start_span(
            name,
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc},
        )

    def end(self, context: Any, failure: BaseException | None) -> None:
        # An aborted call has its code on the context; any other failure is UNKNOWN to the
        # caller, or CANCELLED when the call was cancelled.
        code = _status_of(context)
        if failure is not None and code in (None, grpc.StatusCode.OK):
            cancelled = not isinstance(failure, Exception)
            code = grpc.StatusCode.CANCELLED if cancelled else grpc.StatusCode.UNKNOWN
        code = code or grpc.StatusCode.OK
        self.span.set_attribute("rpc.grpc.status_code", int(code.value[0]))
        if code is not grpc.StatusCode.OK:
            self.span.set_status(Status(StatusCode.ERROR, code.name))
        self.span.end()


class TracingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """One span per unary and server-streaming call (the services have no other kinds),
    the current span while the servicer runs."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or handler.request_streaming:
            return handler
        tracer, method = self._tracer, details.method
        metadata = tuple(details.invocation_metadata or ())
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.response_streaming:
            stream = handler.unary_stream
            if not inspect.isasyncgenfunction(stream):
                return handler

            async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                rpc = _RpcSpan(tracer, method, metadata)
                token = otel_context.attach(trace.set_span_in_context(rpc.span))
                failure: BaseException | None = None
                try:
                    async for item in stream(request, context):
                        yield item
                except BaseException as exc:
                    failure = exc
                    raise
                finally:
                    otel_context.detach(token)
                    rpc.end(context, failure)

            return grpc.unary_stream_rpc_method_handler(unary_stream, **kwargs)
        unary = handler.unary_unary
        if not inspect.iscoroutinefunction(unary):
            return handler

        async def unary_unary(request: Any, context: Any) -> Any:
            rpc = _RpcSpan(tracer, method, metadata)
            token = otel_context.attach(trace.set_span_in_context(rpc.span))
            try:
                reply = await unary(request, context)
            except BaseException as exc:
                otel_context.detach(token)
                rpc.end(context, exc)
                raise
            otel_context.detach(token)
            rpc.end(context, None)
            return reply

        return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)


# --- durable steps and what they do --------------------------------------------------------


def _failed(span: Span, exc: BaseException) -> None:
    # The error's class only: a message may echo what the caller sent.
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def _note_loaded(state: State | None) -> None:
    """The node a step starts from, on the step's span (the current one when a store call ends)."""
    if state is not None:
        trace.get_current_span().set_attribute(NODE_FROM, state.current_node_id)


class TracedSessions:
    """A SessionsPort whose durable steps are ``trellis.step`` spans."""

    def __init__(self, inner: SessionsPort, tracer: Tracer) -> None:
        self._inner = inner
        self._tracer = tracer

    async def _step(self, kind: str, session_id: str, run: Callable[[], Awaitable[StepResult]]) -> StepResult:
        with self._tracer.start_as_current_span(
            "trellis.step",
            attributes={SESSION_ID: session_id, "trellis.step.kind": kind},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result = await run()
            except BaseException as exc:
                _failed(span, exc)
                raise
            span.set_attribute(NODE_TO, result.state.current_node_id)
            span.set_attribute("trellis.session.revision", result.state.revision)
            return result

    async def start(
        self, session_id: str, context: Mapping[str, JSONValue] | None = None, *, request_id: str = ""
    ) -> StepResult:
        return await self._step(
            "start", session_id, lambda: self._inner.start(session_id, context, request_id=request_id)
        )

    async def navigate(
        self,
        session_id: str,
        input: JSONValue | ToolResult,
        *,
        request_id: str = "",
        expected_revision: int | None = None,
    ) -> StepResult:
        return await self._step(
            "navigate",
            session_id,
            lambda: self._inner.navigate(
                session_id, input, request_id=request_id, expected_revision=expected_revision
            ),
        )

    async def signal(
        self, session_id: str, name: str, *, request_id: str = "", expected_revision: int | None = None
    ) -> StepResult:
        return await self._step(
            "signal",
            session_id,
            lambda: self._inner.signal(
                session_id, name, request_id=request_id, expected_revision=expected_revision
            ),
        )

    async def delete(self, session_id: str) -> None:
        with self._tracer.start_as_current_span(
            "trellis.step", attributes={SESSION_ID: session_id, "trellis.step.kind": "delete"}
        ):
            await self._inner.delete(session_id)

    async def get(self, session_id: str) -> StepResult:
        return await self._inner.get(session_id)

    async def list(self, page_size: int = 0, page_token: str = "") -> SessionPage:
        return await self._inner.list(page_size=page_size, page_token=page_token)

    def watch(self, session_id: str, *, start_revision: int = 0) -> DiffStream:
        return self._inner.watch(session_id, start_revision=start_revision)

    def watch_events(self, session_id: str, *, start_revision: int = 0) -> EventStream:
        return self._inner.watch_events(session_id, start_revision=start_revision)


class TracedStepStore:
    """A StepStore whose calls are child spans of the step."""

    def __init__(self, inner: StepStore, tracer: Tracer) -> None:
        self._inner = inner
        self._tracer = tracer

    async def lock_and_load(self, session_id: str, ttl: float) -> tuple[LockHandle, State | None]:
        with self._tracer.start_as_current_span("trellis.lock_and_load"):
            handle, state = await self._inner.lock_and_load(session_id, ttl)
        _note_loaded(state)
        return handle, state

    async def save_and_unlock(self, handle: LockHandle, session_id: str, state: State | None) -> int:
        name = "trellis.unlock" if state is None else "trellis.save_and_unlock"
        with self._tracer.start_as_current_span(name):
            return await self._inner.save_and_unlock(handle, session_id, state)


class TracedOptimisticStepStore(TracedStepStore):
    """TracedStepStore of an OptimisticStepStore, keeping its lock-free path."""

    def __init__(self, inner: OptimisticStepStore, tracer: Tracer) -> None:
        super().__init__(inner, tracer)
        self._optimistic = inner

    def load_cached(self, session_id: str) -> State | None:
        state = self._optimistic.load_cached(session_id)
        _note_loaded(state)
        return state

    async def load_unlocked(self, session_id: str) -> State | None:
        with self._tracer.start_as_current_span("trellis.load"):
            state = await self._optimistic.load_unlocked(session_id)
        _note_loaded(state)
        return state

    async def save_if_unlocked(self, session_id: str, state: State) -> int:
        with self._tracer.start_as_current_span("trellis.save"):
            return await self._optimistic.save_if_unlocked(session_id, state)


def traced_step_store(inner: StepStore, tracer: Tracer) -> TracedStepStore:
    """``inner`` traced, keeping its optimistic capability if it has one."""
    if isinstance(inner, OptimisticStepStore):
        return TracedOptimisticStepStore(inner, tracer)
    return TracedStepStore(inner, tracer)


class TracedLocker:
    """A DistributedLocker whose waits are ``trellis.lock`` spans: inside a step store made
    of a store and a separate locker, the lock's share of ``trellis.lock_and_load``."""

    def __init__(self, inner: DistributedLocker, tracer: Tracer) -> None:
        self._inner = inner
        self._tracer = tracer

    async def acquire(self, key: str, ttl: float) -> LockHandle:
        with self._tracer.start_as_current_span("trellis.lock"):
            return await self._inner.acquire(key, ttl)


class TracedDispatcher:
    """An ActionDispatcher whose dispatches are ``trellis.dispatch`` CLIENT spans; a
    remote dispatcher's call carries this span as its parent (call_metadata)."""

    def __init__(self, inner: ActionDispatcher, tracer: Tracer) -> None:
        self._inner = inner
        self._tracer = tracer

    def serves(self, tool_name: str) -> bool:
        return self._inner.serves(tool_name)

    async def dispatch(self, call: ToolCall, context: DispatchContext | None = None) -> ToolResult:
        attributes: dict[str, str] = {"trellis.tool.name": call.name, "trellis.tool.call_id": call.id}
        if context is not None and context.session_id:
            attributes[SESSION_ID] = context.session_id
        with self._tracer.start_as_current_span(
            "trellis.dispatch",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result = await self._inner.dispatch(call, context)
            except BaseException as exc:
                _failed(span, exc)
                raise
            outcome = "denied" if result.is_denied else "error" if result.is_error else "ok"
            span.set_attribute("trellis.tool.outcome", outcome)
            if outcome != "ok":
                span.set_status(Status(StatusCode.ERROR, outcome))
            return result
