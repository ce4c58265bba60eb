"""The engine (docs/engine.md): Start, Render, Navigate, Signal, Inspect.

Pure with respect to its inputs: given the same state, input and tool results it
returns equal states; it never mutates a state it was given (each result is a
fresh State with its own top-level containers) and on error nothing changes and
no lifecycle hook fires (events are collected during an operation and delivered
only when it succeeds; the one exception is the ``tool_return`` of an unhandled
tool error, delivered before raising: docs/engine.md, "Lifecycle events").

Nodes are compiled once (trellis.engine.compiled) and cached by node ID until
``invalidate`` drops them, typically driven by a loader's watch stream through
``trellis.engine.follow.follow_graph``.

Differences from the original, on purpose, also listed in
docs/engine-differences.md:

* #5  format nodes evaluate message conditions with ``input`` = None and the
      context in scope; an empty-bodied format node still renders its messages.
* #7  a denial (or tool error, or default error node) leading to ``rollback``
      starts a rollback; ``rollback`` is recognised in any letter case everywhere
      except signal targets, which stay ordinary node IDs as in the original.
* #8  whenever the status becomes ``terminated`` the ``terminated`` flag is set
      (rollback completion, unhandled denial) and a pending call is cleared; a
      signal that revives a terminated state clears the flag; navigating a
      terminated state raises SessionTerminated.
* #9  ``node_leave`` fires on on_error / denial transitions (and on an unhandled
      denial that terminates); ``tool_return`` carries the tool *name*;
      ``tool_call`` fires once, when a call becomes pending (Start, a transition,
      a rollback step), not on every Render. Its args are the interpolated args
      for the state at that moment (raw args if interpolation fails, since a hook
      must not change the outcome).
* #10 the undo of a node whose do succeeded and that then went to ``rollback``
      runs; a do/undo without ID is emitted and awaited under its name.
* #22 history is always copied.
* A tool result sent while no call is pending raises UnexpectedToolResult
  (the original treated it as ordinary input).
* ``UnhandledToolError.tool_name`` is the call's name (the original used the
  result ID, which equals the name in file-loaded flows).
* Start swallows only node load/parse errors of the entry node (as the original
  did); a backend that cannot be reached is reported.
* Hook exceptions are logged and never change the operation's result.

Evaluation is budgeted (``limits``, trellis.evaluation_limits). Rendering a node
whose templates loop over data (``{{range}}``) runs in an evaluation thread so
that the event loop keeps serving other calls meanwhile; every other render and
all conditions run inline (a thread hop costs more than a typical render, and
the CEL library holds the GIL, so a thread would not free the loop for it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

from trellis.domain import (
    HookKind,
    JSONValue,
    LifecycleEvent,
    Node,
    RenderResult,
    State,
    Status,
    ToolResult,
)
from trellis.engine.compiled import CompiledNode, fresh, is_rollback
from trellis.engine.navigation import effective_input, next_node_id, tool_result_map
from trellis.engine.render import check_node, interpolate_args, render_node, template_data
from trellis.engine.rollback import unwind
from trellis.errors import (
    ConditionError,
    ExpectedToolResult,
    InvalidInput,
    NodeLoadError,
    ReservedNamespace,
    SessionTerminated,
    TemplateError,
    ToolResultMismatch,
    TrellisError,
    UnexpectedToolResult,
    UnhandledSignal,
    UnhandledToolError,
)
from trellis.evaluation_limits import EvaluationLimits
from trellis.go_values import go_str
from trellis.ports.content import ContentConverter
from trellis.ports.engine import LifecycleHook, deliver
from trellis.ports.loader import GraphLoader
from trellis.step_deadline import run_off_loop

_ACTIVE = Status.ACTIVE
_WAITING = Status.WAITING_FOR_TOOL
_ROLLING_BACK = Status.ROLLING_BACK
_TERMINATED = Status.TERMINATED

Events = list[LifecycleEvent] | None


def _prefixed(exc: TrellisError, prefix: str) -> TrellisError:
    """The same kind of error (same class, same attributes) with ``prefix: `` in front
    of its message, so callers can still tell NodeNotFound from a parse error."""
    cls = type(exc)
    clone = cls.__new__(cls)
    clone.__dict__.update(exc.__dict__)
    message = f"{prefix}: {exc.message}"
    clone.args = (message,)
    clone.message = message
    return clone


class Engine:
    """The stateless engine; implements trellis.ports.EnginePort."""

    def __init__(
        self,
        loader: GraphLoader,
        *,
        entry_node: str = "start",
        default_error_node: str = "",
        hooks: Iterable[LifecycleHook] = (),
        content_converter: ContentConverter | None = None,
        html: bool = False,
        logger: logging.Logger | None = None,
        limits: EvaluationLimits | None = None,
    ) -> None:
        """``limits``: evaluation budgets (default: EvaluationLimits.from_env())."""
        self.loader = loader
        self.entry_node = entry_node or "start"
        self.default_error_node = default_error_node
        self.html = html
        self.limits = limits if limits is not None else EvaluationLimits.from_env()
        self._hooks = tuple(hooks)
        self._converter = content_converter
        self._log = logger or logging.getLogger("trellis.engine")
        self._cache: dict[str, CompiledNode] = {}
        # node ID -> (the compiled node, the compiled entry node, the signals it accepts)
        self._signals_of: dict[str, tuple[CompiledNode, CompiledNode | None, tuple[str, ...]]] = {}
        self._generation = 0

    # --- compiled-node cache ------------------------------------------------------

    async def compiled(self, node_id: str) -> CompiledNode:
        """The compiled node for ``node_id`` (loaded and compiled on first use)."""
        node = self._cache.get(node_id)
        if node is None:
            node = await self._compile(node_id)
        return node

    async def _compile(self, node_id: str) -> CompiledNode:
        generation = self._generation
        node = await self.loader.get_node(node_id)
        compiled = CompiledNode(node, html=self.html, logger=self._log, limits=self.limits)
        if node.on_signal_default and node.id != self.entry_node:
            self._log.warning(
                "node %s defines on_signal_default, which is only honoured on the entry node %s",
                node.id,
                self.entry_node,
            )
        # A graph change while we were loading may have made this node stale.
        if generation == self._generation:
            self._cache[node_id] = compiled
        return compiled

    async def _load(self, node_id: str, prefix: str, suffix: str = "") -> CompiledNode:
        node = self._cache.get(node_id)
        if node is not None:
            return node
        try:
            return await self._compile(node_id)
        except TrellisError as exc:
            raise _prefixed(exc, f"{prefix} {node_id}{suffix}") from exc

    async def _load_for_rollback(self, node_id: str) -> CompiledNode:
        return await self._load(node_id, "rollback failed: could not load node")

    def invalidate(self, node_ids: Iterable[str] | None = None) -> None:
        """Forget compiled nodes: the given IDs (matched against the ID a node was
        requested by and its canonical ID), or all of them when ``node_ids`` is None.
        (A GraphChange with no IDs means "anything changed"; ``follow_graph`` maps it to None.)"""
        self._generation += 1
        self._signals_of.clear()  # cheap to rebuild; entries hold compiled nodes alive
        if node_ids is None:
            self._cache.clear()
            return
        wanted = set(node_ids)
        for key, compiled in list(self._cache.items()):
            if key in wanted or compiled.id in wanted:
                del self._cache[key]

    # --- hooks ----------------------------------------------------------------------

    def _emit(self, events: list[LifecycleEvent]) -> None:
        deliver(self._hooks, events, self._log)

    @staticmethod
    def _event(
        events: list[LifecycleEvent],
        kind: HookKind,
        node: CompiledNode,
        node_id: str,
        tool_name: str = "",
        data: Any = None,
        is_error: bool = False,
    ) -> None:
        events.append(LifecycleEvent(kind, node_id, node.type, tool_name, data, is_error, time.time()))

    async def _tool_call_event(self, events: list[LifecycleEvent], node: CompiledNode, state: State) -> None:
        call = node.undo if state.status is _ROLLING_BACK else node.do
        if call is None:
            return
        try:
            if call.iterates:
                args = await run_off_loop(interpolate_args, call, template_data(state), node.id)
            else:
                args = interpolate_args(call, template_data(state), node.id)
        except TemplateError:
            args = dict(call.args) if call.args is not None else None
        self._event(events, HookKind.TOOL_CALL, node, state.current_node_id, call.name, args)

    # --- operations -----------------------------------------------------------------

    async def start(self, session_id: str, context: Mapping[str, JSONValue] | None = None) -> State:
        """(docs/engine.md, "Transitions".) A broken entry node does not fail Start; Render will report it."""
        entry = self.entry_node
        state = State.new(session_id, entry)
        try:
            node: CompiledNode | None = await self.compiled(entry)
        except (NodeLoadError, ConditionError):
            node = None
        if node is not None:
            for key, value, container in node.default_context:
                state.context[key] = fresh(value) if container else value
        if context:
            state.context.update(context)
        if node is None:
            return state
        if node.do is not None:
            state.status = _WAITING
            state.pending_tool_call = node.do.id
        if self._hooks:
            events: list[LifecycleEvent] = []
            self._event(events, HookKind.NODE_ENTER, node, entry)
            await self._tool_call_event(events, node, state)
            self._emit(events)
        return state

    async def render(self, state: State) -> RenderResult:
        """(docs/engine.md, "Rendering".) Never changes ``state``. A session whose rollback
        fully unwound (terminated with no current node, docs/engine.md, "Tools and sagas") has no node to
        render: it shows nothing, terminally."""
        if state is None:
            raise InvalidInput("render needs a state", field="state")
        node_id = state.current_node_id
        if not node_id and state.status is _TERMINATED:
            return _UNWOUND
        node = self._cache.get(node_id)
        if node is None:
            node = await self._load(node_id, "failed to load node")
        signals = await self._signals(node)
        if node.iterates:
            return await run_off_loop(render_node, node, state, self._converter, signals)
        return render_node(node, state, self._converter, signals)

    async def _signals(self, node: CompiledNode) -> tuple[str, ...]:
        """The signals ``node`` accepts (docs/engine.md, "Signals and timeouts"): its own
        ``on_signal`` and the entry node's ``on_signal_default``, sorted. Remembered per
        node until it or the entry node is compiled again (every render asks)."""
        entry = self._cache.get(self.entry_node)
        known = self._signals_of.get(node.id)
        if known is not None and known[0] is node and known[1] is entry:
            return known[2]
        if entry is None:
            try:
                entry = await self._compile(self.entry_node)
            except TrellisError:
                entry = None  # a broken entry node fails Signal itself, not every render
        names = set(node.on_signal)
        if entry is not None:
            names.update(entry.on_signal_default)
        signals = tuple(sorted(names))
        self._signals_of[node.id] = (node, entry, signals)
        return signals

    async def navigate(self, state: State, input: JSONValue | ToolResult) -> State:
        """(docs/engine.md, "Input".) Returns a new state; ``state`` is never changed; on error nothing
        happens."""
        if state is None:
            raise InvalidInput("navigate needs a state", field="state")
        status = state.status
        events: Events = [] if self._hooks else None
        if status is _WAITING or status is _ROLLING_BACK:
            if not isinstance(input, ToolResult):
                raise ExpectedToolResult(state.current_node_id, state.pending_tool_call)
            if input.id != state.pending_tool_call:
                raise ToolResultMismatch(input.id, state.pending_tool_call)
            if status is _ROLLING_BACK:
                # Any matching undo result, failed or not, completes that step
                # (docs/engine.md, "Tools and sagas").
                new = await self._unwind(state.clone(), True, events)
            else:
                node = await self._load(state.current_node_id, "failed to load node")
                new = await self._tool_result(state, node, input, events)
        elif status is _TERMINATED:
            raise SessionTerminated(
                f"session '{state.session_id}' has terminated (node '{state.current_node_id}'); "
                "start a new session, or send a signal to resume it",
                session_id=state.session_id,
                node_id=state.current_node_id,
            )
        else:
            if isinstance(input, ToolResult):
                raise UnexpectedToolResult(
                    f"tool result '{input.id}' received but no tool call is pending "
                    f"(node '{state.current_node_id}', status {status.value})",
                    node_id=state.current_node_id,
                    got=input.id,
                )
            node_id = state.current_node_id
            current = self._cache.get(node_id)
            if current is None:
                current = await self._load(node_id, "failed to load node")
            # Checks run against the state before this input (docs/engine.md, "Rendering").
            check_node(current, state)
            new = await self._after_input(state.clone(), current, input, events, False)
        if events:
            self._emit(events)
        return new

    async def _after_input(
        self, state: State, node: CompiledNode, raw: Any, events: Events, tool_ran: bool
    ) -> State:
        """The answer on ``state``, which the caller owns (a fresh clone): docs/engine.md, "Input",
        then "Transitions"."""
        value = effective_input(node, raw)
        state.system_context["ans"] = value
        save_to = node.save_to
        if save_to:
            if node.save_to_reserved:
                raise ReservedNamespace(node.id)
            state.context[save_to] = value
        target = next_node_id(node, value, state.context, state.system_context)
        if target:
            if events is not None:
                self._event(events, HookKind.NODE_LEAVE, node, node.id)
            if is_rollback(target):
                # After a successful do, this node's own undo must run too
                # (docs/engine-differences.md, fix #10).
                return await self._unwind(state, not tool_ran, events)
            await self._transition_to(state, target, events)
            return state
        if not node.has_transitions:
            state.status = _TERMINATED
            state.terminated = True
            if events is not None:
                self._event(events, HookKind.NODE_LEAVE, node, node.id)
        return state

    async def _transition_to(self, state: State, target: str, events: Events) -> None:
        """Entering ``target`` on ``state`` (owned by the caller): docs/engine.md, "Transitions"."""
        state.current_node_id = target
        state.history.append(target)
        state.status = _ACTIVE
        node = self._cache.get(target)
        if node is None:
            node = await self._load(target, "failed to load next node")
        defaults = node.default_context
        if defaults:
            context = state.context
            for key, value, container in defaults:
                if key not in context:
                    context[key] = fresh(value) if container else value
        if node.do is not None:
            state.status = _WAITING
            state.pending_tool_call = node.do.id
        if events is not None:
            self._event(events, HookKind.NODE_ENTER, node, target)
            if node.do is not None:
                await self._tool_call_event(events, node, state)

    async def _unwind(self, state: State, pop: bool, events: Events) -> State:
        state, pending = await unwind(state, pop=pop, load=self._load_for_rollback)
        if pending is not None and events is not None:
            await self._tool_call_event(events, pending, state)
        return state

    async def _tool_result(
        self, state: State, node: CompiledNode, result: ToolResult, events: Events
    ) -> State:
        """(docs/engine.md, "Tools and sagas") for the result of the current node's pending call."""
        tool_name = node.do.name if node.do is not None else result.id
        if result.is_denied:
            new = state.clone()
            new.pending_tool_call = ""
            target = node.on_denied or node.on_error or self.default_error_node
            if events is not None:
                self._event(events, HookKind.NODE_LEAVE, node, node.id)
            if not target:
                new.status = _TERMINATED
                new.terminated = True
                return new
            if is_rollback(target):
                return await self._unwind(new, True, events)
            new.status = _ACTIVE
            await self._transition_to(new, target, events)
            return new

        if result.is_error:
            if events is not None:
                self._event(events, HookKind.TOOL_RETURN, node, node.id, tool_name, result, True)
            target = node.on_error or self.default_error_node
            if not target:
                if events:
                    self._emit(events)
                cause = result.error or go_str(result.result)
                raise UnhandledToolError(node.id, tool_name, cause)
            new = state.clone()
            new.pending_tool_call = ""
            if events is not None:
                self._event(events, HookKind.NODE_LEAVE, node, node.id)
            if is_rollback(target):
                return await self._unwind(new, True, events)
            new.status = _ACTIVE
            await self._transition_to(new, target, events)
            return new

        if events is not None:
            self._event(events, HookKind.TOOL_RETURN, node, node.id, tool_name, result, False)
        new = state.clone()
        new.status = _ACTIVE
        new.pending_tool_call = ""
        new.context["tool_result"] = tool_result_map(result.id, result.result)
        check_node(node, new)
        return await self._after_input(new, node, result.result, events, True)

    async def signal(self, state: State, name: str) -> State:
        """(docs/engine.md, "Signals and timeouts".) Works in any status; abandons a pending call; revives a
        terminated state."""
        if state is None:
            raise InvalidInput("signal needs a state", field="state")
        node = await self._load(state.current_node_id, "failed to load node", " during signal handling")
        target = node.on_signal.get(name)
        if not target:
            entry = await self._load(self.entry_node, "failed to load node")
            target = entry.on_signal_default.get(name)
        if not target:
            raise UnhandledSignal(name, node.id)
        events: Events = [] if self._hooks else None
        if events is not None:
            self._event(events, HookKind.NODE_LEAVE, node, node.id)
        new = state.clone()
        new.status = _ACTIVE
        new.pending_tool_call = ""
        new.terminated = False
        await self._transition_to(new, target, events)
        if events:
            self._emit(events)
        return new

    async def inspect(self) -> list[Node]:
        """docs/api.md, "Engine" (Inspect): every node, loaded and compiled (any failure fails the call)."""
        ids = await self.loader.list_nodes()
        nodes: list[Node] = []
        for node_id in ids:
            compiled = await self._load(node_id, "failed to load node")
            nodes.append(compiled.node)
        return nodes


_UNWOUND: Final = RenderResult(actions=(), terminal=True)
