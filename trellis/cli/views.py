"""How ``trellis run`` talks to its user: a terminal view and a JSON-lines view.

The runner (trellis.cli.runner) decides what happens; a view only shows steps and
turns typed lines into answers, so the two modes cannot drift apart in behaviour.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from trellis.domain import (
    Action,
    ActionType,
    InputRequest,
    JSONValue,
    State,
    Status,
    StepResult,
    ToolCall,
    ToolResult,
)
from trellis.go_values import format_duration

QUIT_WORDS = frozenset({"q", "quit", "exit"})
ESCAPE = "\\"  # a leading backslash sends the rest of the line as typed


@dataclass(frozen=True, slots=True)
class Reply:
    """What a line means: an input, a signal, a tool result, or quitting."""

    input: JSONValue = None
    signal: str = ""
    tool_result: ToolResult | None = None
    quit: bool = False


class View(Protocol):
    auto_approve: bool  # run declared tools without asking
    answers_tools: bool  # the other end answers calls no declared tool serves

    def show_step(self, step: StepResult, *, content: bool) -> None: ...
    def prompt(self, request: InputRequest) -> None: ...
    def parse(self, line: str, request: InputRequest | None) -> Reply: ...
    def answered(self, line: str) -> None: ...
    def ask_tool_approval(self, call: ToolCall) -> None: ...
    def tool_done(self, call: ToolCall, result: ToolResult) -> None: ...
    def notice(self, message: str) -> None: ...
    def retry(self, message: str) -> None: ...
    def finished(self, state: State, how: str) -> None: ...
    def error(self, reason: str, message: str) -> None: ...


def _short(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class TerminalView:
    """A person at a terminal: content as text, numbered options, confirmation prompts."""

    def __init__(self, out: TextIO | None = None, *, auto_approve: bool = False, echo: bool = False) -> None:
        self._out = out or sys.stdout
        self.auto_approve = auto_approve
        self.answers_tools = False
        # Input piped in is not echoed by a terminal: echo it so the transcript reads right.
        self._echo = echo
        self._at_prompt = False

    def _print(self, text: str = "", end: str = "\n") -> None:
        if self._at_prompt:
            text = "\n" + text  # the prompt was left without an answer (Ctrl+C, timeout, end of input)
        self._out.write(text + end)
        self._out.flush()
        self._at_prompt = False

    def _prompt_line(self, text: str) -> None:
        self._print(text, end="")
        self._at_prompt = True

    def answered(self, line: str) -> None:
        if self._echo and self._at_prompt:
            self._out.write(line + "\n")
            self._out.flush()
        self._at_prompt = False

    def show_step(self, step: StepResult, *, content: bool) -> None:
        state = step.state
        if state.status is Status.ROLLING_BACK:
            call = step.render.tool_call()
            what = f" ({call.name})" if call is not None else ""
            self._print(f"↩ compensating {state.current_node_id}{what}")
            return
        if not content:
            return
        for action in step.render.actions:
            if action.type is ActionType.RENDER_CONTENT or action.type is ActionType.SYSTEM_MESSAGE:
                text = str(action.payload).strip("\n")
                if text:
                    self._print(text)
                    self._print()

    def prompt(self, request: InputRequest) -> None:
        hints: list[str] = []
        if request.type == "choice" and request.options:
            for number, option in enumerate(request.options, start=1):
                self._print(f"  {number}) {option}")
        elif request.type == "confirm":
            hints.append("yes/no")
        if request.default:
            hints.append(f"default: {request.default}")
        if request.timeout > 0:
            hints.append(f"within {format_duration(request.timeout)}")
        suffix = f"({', '.join(hints)}) " if hints else ""
        self._prompt_line(f"{suffix}> ")

    def parse(self, line: str, request: InputRequest | None) -> Reply:
        text = line.strip()
        if text.startswith(ESCAPE):
            # "\q" answers a literal "q": the escape is removed, the rest is sent as typed
            # (never a quit word, never an option number).
            return Reply(input=text.removeprefix(ESCAPE))
        if text.lower() in QUIT_WORDS:
            return Reply(quit=True)
        if request is not None and request.options and text:
            # An option's own text wins over its number (menus whose options are "1", "2"...).
            for option in request.options:
                if option.lower() == text.lower():
                    return Reply(input=option)
            if text.isdigit() and 1 <= int(text) <= len(request.options):
                return Reply(input=request.options[int(text) - 1])
        return Reply(input=line)

    def ask_tool_approval(self, call: ToolCall) -> None:
        message = (call.metadata or {}).get("confirm_msg", "")
        if not message:
            message = (
                f"Tool Request: '{call.name}' (ID: {call.id})\nArgs: {_short(call.args)}\nAllow execution?"
            )
        self._print(f"[System] {message}")
        self._prompt_line("(y/N) > ")

    def tool_done(self, call: ToolCall, result: ToolResult) -> None:
        if result.is_denied:
            self._print(f"[tool] {call.name}: denied")
        elif result.is_error:
            self._print(f"[tool] {call.name}: failed: {result.error or _short(result.result)}")
        else:
            self._print(f"[tool] {call.name}: {_short(result.result)}")

    def notice(self, message: str) -> None:
        self._print(f"[trellis] {message}")

    def retry(self, message: str) -> None:
        self._print(f"{message} Please try again.")

    def finished(self, state: State, how: str) -> None:
        if how:
            self._print(f"[trellis] {how}")

    def error(self, reason: str, message: str) -> None:
        pass  # the command line prints "Error: <message>" itself


def action_json(action: Action) -> dict[str, JSONValue]:
    payload = action.payload
    body: JSONValue
    if isinstance(payload, InputRequest):
        body = {
            "type": payload.type,
            "options": list(payload.options),
            "default": payload.default,
            "timeout_seconds": payload.timeout,
        }
    elif isinstance(payload, ToolCall):
        body = tool_call_json(payload)
    else:
        body = payload
    return {"type": action.type.value, "payload": body}


def tool_call_json(call: ToolCall) -> dict[str, JSONValue]:
    return {
        "id": call.id,
        "name": call.name,
        "args": dict(call.args) if call.args is not None else None,
        "metadata": dict(call.metadata) if call.metadata is not None else None,
        "idempotency_key": call.idempotency_key,
    }


def tool_result_json(result: ToolResult) -> dict[str, JSONValue]:
    return {
        "id": result.id,
        "result": result.result,
        "is_error": result.is_error,
        "is_denied": result.is_denied,
        "error": result.error,
    }


def parse_tool_result(value: object) -> ToolResult:
    if not isinstance(value, dict):
        raise ValueError("'tool_result' must be an object {id, result, is_error, is_denied, error}")
    call_id = value.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise ValueError("'tool_result.id' must be a non-empty string")
    flags = {k: value.get(k, False) for k in ("is_error", "is_denied")}
    for key, flag in flags.items():
        if not isinstance(flag, bool):
            raise ValueError(f"'tool_result.{key}' must be a boolean")
    error = value.get("error", "")
    if not isinstance(error, str):
        raise ValueError("'tool_result.error' must be a string")
    return ToolResult(call_id, value.get("result"), flags["is_error"], flags["is_denied"], error)


class JsonLinesView:
    """A program on the other end: one JSON object per line each way.

    Out: ``{"type": "step", ...}`` per action batch, ``{"type": "tool", ...}`` per tool
    run, ``{"type": "notice"|"error", ...}``, and a final ``{"type": "end", ...}``.
    In: a plain line is text input; a JSON object is a command: ``{"input": v}``,
    ``{"signal": name}``, ``{"tool_result": {...}}`` or ``{"quit": true}``.
    Tools declared in tools.yaml run without a confirmation prompt in this mode.
    """

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self.auto_approve = True
        self.answers_tools = True

    def _emit(self, obj: dict[str, JSONValue]) -> None:
        self._out.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
        self._out.flush()

    def show_step(self, step: StepResult, *, content: bool) -> None:
        state = step.state
        if state.status is Status.TERMINATED and not step.render.actions:
            return  # nothing to show: the "end" object follows
        self._emit(
            {
                "type": "step",
                "session_id": state.session_id,
                "node": state.current_node_id,
                "status": state.status.value,
                "terminal": step.render.terminal,
                "actions": [action_json(a) for a in step.render.actions],
                "context": state.context,
            }
        )

    def prompt(self, request: InputRequest) -> None:
        pass  # the step object already carries the REQUEST_INPUT action

    def parse(self, line: str, request: InputRequest | None) -> Reply:
        stripped = line.strip()
        if stripped.startswith("{"):
            try:
                command = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise ValueError(f"invalid JSON command: {exc.msg}") from None
            if not isinstance(command, dict):
                raise ValueError("a JSON command must be an object")
            if command.get("quit") is True:
                return Reply(quit=True)
            if "signal" in command:
                name = command["signal"]
                if not isinstance(name, str) or not name:
                    raise ValueError("'signal' must be a non-empty string")
                return Reply(signal=name)
            if "tool_result" in command:
                return Reply(tool_result=parse_tool_result(command["tool_result"]))
            if "input" in command:
                value = command["input"]
                return Reply(input=value)
            raise ValueError("unknown command: expected one of input, signal, tool_result, quit")
        if stripped.startswith('"'):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError:
                value = None
            if isinstance(value, str):
                return Reply(input=value)
        return Reply(input=line)

    def ask_tool_approval(self, call: ToolCall) -> None:
        pass

    def answered(self, line: str) -> None:
        pass

    def tool_done(self, call: ToolCall, result: ToolResult) -> None:
        self._emit({"type": "tool", "call": tool_call_json(call), "result": tool_result_json(result)})

    def notice(self, message: str) -> None:
        self._emit({"type": "notice", "message": message})

    def retry(self, message: str) -> None:
        self._emit({"type": "error", "retry": True, "message": message})

    def finished(self, state: State, how: str) -> None:
        self._emit(
            {
                "type": "end",
                "session_id": state.session_id,
                "node": state.current_node_id,
                "status": state.status.value,
                "reason": how,
                "context": state.context,
                "history": state.history,
            }
        )

    def error(self, reason: str, message: str) -> None:
        self._emit({"type": "error", "retry": False, "reason": reason, "message": message})
