"""The loop behind ``trellis run`` (docs/cli.md), with signals and timeouts
(docs/engine.md, "Signals and timeouts") and reload (docs/cli.md, "``--watch``").

Every step goes through the SessionManager, so a ``--session`` run is durable step
by step, and pass-through nodes are advanced by the manager itself (their text
arrives in the step's actions). Tools are run here rather than by the manager so
that a node's text is shown before its tool is confirmed and run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from trellis.adapters.process_dispatcher import ProcessDispatcher
from trellis.cli.common import CliError
from trellis.cli.inputs import EventKind, InputSource
from trellis.cli.views import QUIT_WORDS, View
from trellis.domain import (
    InputRequest,
    JSONValue,
    State,
    Status,
    StepResult,
    ToolCall,
    ToolResult,
)
from trellis.errors import InvalidConfirmation, InvalidInput, SessionNotFound, TrellisError, UnhandledSignal
from trellis.ports.sessions import SessionsPort
from trellis.ports.store import StateStore

EXIT_OK = 0
EXIT_INTERRUPTED = 130
TIMEOUT_UNHANDLED = "timeout exceeded and no 'on_signal.timeout' handler defined"
DENIED_BY_USER = "User denied execution by policy"
ANY_TEXT = InputRequest()

# Errors caused by the answer itself: say so and ask again.
_RETRYABLE = (InvalidConfirmation, InvalidInput)


@dataclass(slots=True)
class RunOptions:
    session_id: str
    persistent: bool
    fresh: bool = False
    context: Mapping[str, JSONValue] | None = None
    watch: bool = False
    locale: str = ""


@dataclass(frozen=True, slots=True)
class Reloaded:
    """The flow changed while a prompt waited: the session as it now renders."""

    step: StepResult


class Runner:
    def __init__(
        self,
        manager: SessionsPort,
        store: StateStore,
        view: View,
        inputs: InputSource,
        dispatcher: ProcessDispatcher | None,
        options: RunOptions,
        repair: Callable[[State], Awaitable[State]] | None = None,
    ) -> None:
        """``manager``: a local SessionManager, or a server's Sessions client (``trellis run
        --server``). ``repair``: the resume guardrail (SessionManager.repair_after_reload);
        None when a server follows its flow's changes and repairs its sessions itself."""
        self._manager = manager
        self._repair = repair
        self._store = store
        self._view = view
        self._inputs = inputs
        self._dispatcher = dispatcher
        self._options = options
        # The call the user (or the tool) last refused, to say why a session ended there.
        self._denied: tuple[str, ToolCall] | None = None

    # --- session -------------------------------------------------------------------

    async def _open(self) -> tuple[StepResult, bool]:
        """The session's first step, and whether it was resumed rather than started."""
        options = self._options
        sid = options.session_id
        if options.fresh:
            await self._manager.delete(sid)
        if options.persistent:
            try:
                step = await self._resume(sid)
            except SessionNotFound:
                pass
            else:
                if options.context:
                    self._view.notice(f"--context is ignored: session '{sid}' already exists")
                self._view.notice(f"resuming session '{sid}' at node '{step.state.current_node_id}'")
                return step, True
        step = await self._manager.start(sid, options.context or {})
        if options.locale and step.state.locale != options.locale:
            # The engine's Start knows no locale; set it on the new session before the
            # first answer (pass-through text of the very first step is already rendered).
            state = step.state.clone()
            state.locale = options.locale
            await self._store.save(sid, state, expected_revision=step.state.revision)
            return StepResult(state=(await self._manager.get(sid)).state, render=step.render), False
        return step, False

    async def _resume(self, sid: str) -> StepResult:
        """The stored session, after the resume guardrail (docs/engine-differences.md, fix #4): a session
        waiting for a tool whose node is gone or no longer has ``do`` becomes active."""
        state = await self._store.load(sid)
        repaired = await self._repair(state) if self._repair is not None else state
        if repaired is not state:
            self._view.notice(
                f"node '{state.current_node_id}' no longer calls a tool: dropped pending call "
                f"'{state.pending_tool_call}'"
            )
            await self._store.save(sid, repaired, expected_revision=state.revision)
        return await self._manager.get(sid)

    # --- loop ----------------------------------------------------------------------

    async def run(self) -> int:
        opened, resumed = await self._open()
        if resumed and opened.state.status is Status.TERMINATED:
            self._view.finished(opened.state, "this session has already ended (use --fresh to start over)")
            return EXIT_OK
        step: StepResult | None = opened
        while True:
            if step is not None:
                try:
                    return await self._walk(step)
                except (TrellisError, CliError) as exc:
                    if not self._options.watch:
                        raise
                    self._view.notice(f"error: {exc.message}")
            # Watch mode: a broken flow is reported, then we wait for the next change.
            self._view.notice("waiting for a flow file to change (q to quit)")
            if await self._wait_for_change():
                return EXIT_OK
            try:
                step = await self._reload(self._options.session_id)
            except TrellisError as exc:
                self._view.notice(f"error: {exc.message}")
                step = None

    async def _wait_for_change(self) -> bool:
        """Wait for a file change (False) or for the user to quit (True)."""
        while True:
            event = await self._inputs.next()
            if event.kind is EventKind.RELOAD:
                return False
            if event.kind is EventKind.EOF:
                return True
            if event.kind is EventKind.LINE and event.text.strip().lower() in QUIT_WORDS:
                return True

    async def _walk(self, step: StepResult) -> int:
        show_content = True
        while True:
            state = step.state
            self._view.show_step(step, content=show_content)
            show_content = True
            if state.status is Status.TERMINATED:
                self._view.finished(state, self._how_it_ended(state))
                return EXIT_OK
            if state.status in (Status.WAITING_FOR_TOOL, Status.ROLLING_BACK):
                call = step.render.tool_call()
                if call is None or call.id != state.pending_tool_call:
                    raise CliError(
                        f"state is waiting for tool {state.pending_tool_call} "
                        "but no corresponding action produced"
                    )
                outcome = await self._run_tool(call)
                if outcome is None:
                    self._view.finished(state, "quit")
                    return EXIT_OK
                self._denied = (state.current_node_id, call) if outcome.is_denied else None
                step = await self._manager.navigate(state.session_id, outcome)
                continue
            request = step.render.input_request()
            if request is None:
                # Steps pass through nodes without input, but a freshly loaded or repaired
                # session may sit on one: move on. A node that stays put has no transition
                # for an empty answer: let the user type one (or send a signal).
                moved = await self._manager.navigate(state.session_id, "")
                if moved.state.status is Status.TERMINATED or not _stayed(state, moved.state):
                    step = moved  # its actions start after this node: nothing is shown twice
                    continue
                self._view.notice(f"node '{state.current_node_id}' has no transition without input")
                request = ANY_TEXT
            answered = await self._answer(step, request)
            if isinstance(answered, int):
                return answered
            if isinstance(answered, Reloaded):
                step = answered.step  # shown in full: the text may have changed
                continue
            if answered is None:
                show_content = False  # the same prompt again, without repeating the text
                continue
            if answered.state.status is Status.ACTIVE and _stayed(state, answered.state):
                self._view.notice("no transition matched that answer")
                show_content = False
            step = answered

    def _how_it_ended(self, state: State) -> str:
        """The last line of a run whose session terminated: rolled back, denied, or done."""
        if not state.current_node_id:
            return "session ended: the flow was rolled back"
        if self._denied is not None and self._denied[0] == state.current_node_id:
            return (
                f"session ended: tool '{self._denied[1].name}' was denied at node "
                f"'{state.current_node_id}' (it has no on_denied)"
            )
        return f"session ended at node '{state.current_node_id}'"

    async def _answer(self, step: StepResult, request: InputRequest) -> StepResult | Reloaded | int | None:
        """Wait for the user: a new step, an exit code, or None to ask again."""
        sid = step.state.session_id
        self._view.prompt(request)
        event = await self._inputs.next(request.timeout)
        if event.kind is EventKind.EOF:
            self._view.finished(step.state, "end of input")
            return EXIT_OK
        if event.kind is EventKind.INTERRUPT:
            return await self._signal(sid, "interrupt")
        if event.kind is EventKind.TIMEOUT:
            return await self._signal(sid, "timeout")
        if event.kind is EventKind.RELOAD:
            return Reloaded(await self._reload(sid))
        self._view.answered(event.text)
        try:
            reply = self._view.parse(event.text, request)
        except ValueError as exc:
            self._view.retry(str(exc))
            return None
        if reply.quit:
            self._view.finished(step.state, "quit")
            return EXIT_OK
        if reply.signal:
            return await self._signal(sid, reply.signal)
        if reply.tool_result is not None:
            self._view.retry("no tool call is pending")
            return None
        try:
            # The manager sanitises text input (docs/engine.md, "Input"); a rejection asks again.
            return await self._manager.navigate(sid, reply.input)
        except _RETRYABLE as exc:
            self._view.retry(exc.message)
            return None

    async def _signal(self, sid: str, name: str) -> StepResult | int | None:
        try:
            return await self._manager.signal(sid, name)
        except UnhandledSignal as exc:
            if name == "interrupt":
                self._view.notice("interrupted")
                return EXIT_INTERRUPTED
            if name == "timeout":
                raise CliError(TIMEOUT_UNHANDLED) from None
            self._view.retry(exc.message)  # a signal sent by the program: its mistake, not fatal
            return None

    async def _reload(self, sid: str) -> StepResult:
        self._inputs.drop_reloads()
        self._view.notice("flow files changed: reloaded")
        return await self._resume(sid)

    # --- tools ---------------------------------------------------------------------

    async def _run_tool(self, call: ToolCall) -> ToolResult | None:
        """Confirm (unless approved in advance) and run a call; None when the user quits."""
        dispatcher = self._dispatcher
        if dispatcher is None or not dispatcher.serves(call.name):
            if self._view.answers_tools:
                return await self._external_result(call)
            result = ToolResult(
                call.id,
                is_error=True,
                error=f"tool '{call.name}' is not declared in tools.yaml "
                "(and inline execution is not enabled)",
            )
            self._view.tool_done(call, result)
            return result
        if not self._view.auto_approve:
            approved = await self._approve(call)
            if approved is None:
                return None
            if not approved:
                denied = ToolResult(call.id, is_denied=True, error=DENIED_BY_USER)
                self._view.tool_done(call, denied)
                return denied
        result = await dispatcher.dispatch(call)
        self._view.tool_done(call, result)
        return result

    async def _approve(self, call: ToolCall) -> bool | None:
        """y/yes allows; anything else (Ctrl+C included) denies; q or end of input quits."""
        self._view.ask_tool_approval(call)
        event = await self._inputs.next()
        if event.kind is EventKind.EOF:
            return None
        if event.kind is not EventKind.LINE:
            return False
        self._view.answered(event.text)
        answer = event.text.strip().lower()
        if answer in QUIT_WORDS:
            return None
        return answer in ("y", "yes")

    async def _external_result(self, call: ToolCall) -> ToolResult | None:
        """JSON mode, no declared tool: the program on the other end answers the call."""
        while True:
            event = await self._inputs.next()
            if event.kind is EventKind.EOF:
                return None
            if event.kind is not EventKind.LINE:
                continue
            try:
                reply = self._view.parse(event.text, None)
            except ValueError as exc:
                self._view.retry(str(exc))
                continue
            if reply.quit:
                return None
            if reply.tool_result is None:
                self._view.retry(f'expected {{"tool_result": {{"id": "{call.id}", ...}}}}')
                continue
            return reply.tool_result


def _stayed(before: State, after: State) -> bool:
    return before.current_node_id == after.current_node_id and len(before.history) == len(after.history)
