"""Turning the node tree into nested closures, once per template.

Every node becomes a small function ``render(dot, slots) -> str`` (values:
``get(dot, slots) -> value``), so rendering walks no tree and parses nothing.
``slots`` is the per-render variable array (slot 0 is ``$``). ``break`` and
``continue`` travel as exceptions carrying the output already produced in the
current iteration; only lists that can contain them pay for the bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from trellis.templates.escape import html_escape
from trellis.templates.functions import FUNCTIONS
from trellis.templates.nodes import (
    ActionNode,
    BranchNode,
    ChainNode,
    CommandNode,
    DotNode,
    FieldNode,
    FunctionNode,
    LiteralNode,
    LoopControlNode,
    Node,
    Operand,
    PipeNode,
    RangeNode,
    TextNode,
    VariableNode,
    Where,
)
from trellis.templates.values import ExecFailure, data_str, go_type_name, lookup_key, sorted_keys, truth

Getter = Callable[[Any, list[Any]], Any]
Stage = Callable[[Any, list[Any], Any], Any]
Render = Callable[[Any, list[Any]], str]

_NOTHING: Any = object()  # "no piped value": the first command of a pipeline


class LoopSignal(Exception):
    """``{{break}}``/``{{continue}}`` on its way to the enclosing range."""

    def __init__(self, is_break: bool) -> None:
        super().__init__("break" if is_break else "continue")
        self.is_break = is_break
        self.partial = ""


def print_text(value: Any) -> str:
    """Action output for text templates: a top-level nil is ``<no value>`` (§5.3, §5.5)."""
    if value is None:
        return "<no value>"
    return data_str(value)


def print_html(value: Any) -> str:
    """Action output for HTML templates: escaped; nil prints nothing, as in Go html/template."""
    if value is None:
        return ""
    return html_escape(value if value.__class__ is str else data_str(value))


# --- values -------------------------------------------------------------------------------


def _chain(base: Getter | None, names: tuple[str, ...], where: Where) -> Getter:
    """Look ``names`` up one after the other, starting from ``base`` (or dot)."""
    line_col, text = where.line_col, where.text
    if base is None and len(names) == 1:
        (name,) = names

        def get_field(dot: Any, slots: list[Any]) -> Any:
            if dot.__class__ is dict:
                return dot.get(name)
            try:
                return lookup_key(dot, name)
            except ExecFailure as failure:
                failure.locate(line_col, text)
                raise

        return get_field

    def get_chain(dot: Any, slots: list[Any]) -> Any:
        value = dot if base is None else base(dot, slots)
        try:
            for name in names:
                value = value.get(name) if value.__class__ is dict else lookup_key(value, name)
        except ExecFailure as failure:
            failure.locate(line_col, text)
            raise
        return value

    return get_chain


def _constant(value: Any) -> Getter:
    def get_constant(dot: Any, slots: list[Any]) -> Any:
        return value

    return get_constant


def _get_dot(dot: Any, slots: list[Any]) -> Any:
    return dot


def compile_operand(node: Operand) -> Getter:
    if isinstance(node, FieldNode):
        return _chain(None, node.names, node.where)
    if isinstance(node, VariableNode):
        slot = node.slot

        def get_variable(dot: Any, slots: list[Any]) -> Any:
            return slots[slot]

        return _chain(get_variable, node.names, node.where) if node.names else get_variable
    if isinstance(node, ChainNode):
        return _chain(compile_pipe(node.base), node.names, node.where)
    if isinstance(node, DotNode):
        return _get_dot
    if isinstance(node, LiteralNode):
        return _constant(node.value)
    if isinstance(node, FunctionNode):
        call = _compile_call(node.name, [], node.where)
        return lambda dot, slots: call(dot, slots, _NOTHING)
    return compile_pipe(node)


def _compile_call(name: str, getters: list[Getter], where: Where) -> Stage:
    """A function call; a piped value (if any) is appended as the last argument."""
    line_col, text = where.line_col, where.text
    if name in ("and", "or"):
        return _short_circuit(name == "and", getters)
    function = FUNCTIONS[name][0]

    def call(dot: Any, slots: list[Any], piped: Any) -> Any:
        args = [get(dot, slots) for get in getters]
        if piped is not _NOTHING:
            args.append(piped)
        try:
            return function(*args)
        except ExecFailure as failure:
            failure.message = f"error calling {name}: {failure.message}"
            failure.locate(line_col, text)
            raise

    return call


def _short_circuit(is_and: bool, getters: list[Getter]) -> Stage:
    """``and``/``or`` evaluate arguments only until the result is known (Go ≥ 1.18).

    Same results as ``functions.and_``/``or_``: the deciding argument, else the last
    one (which is the piped value when there is one).
    """

    def call(dot: Any, slots: list[Any], piped: Any) -> Any:
        value: Any = None
        for get in getters:
            value = get(dot, slots)
            if truth(value) is not is_and:
                return value
        return value if piped is _NOTHING else piped

    return call


def _compile_command(command: CommandNode) -> Stage:
    head = command.args[0]
    if isinstance(head, FunctionNode):
        return _compile_call(head.name, [compile_operand(arg) for arg in command.args[1:]], command.where)
    # The parser guarantees a non-function command has no arguments and no piped value.
    get = compile_operand(head)
    return lambda dot, slots, piped: get(dot, slots)


def compile_pipe(pipe: PipeNode, with_decl: bool = True) -> Getter:
    first_command = pipe.commands[0]
    head = first_command.args[0]
    first: Getter
    if isinstance(head, FunctionNode):
        stage = _compile_command(first_command)

        def first(dot: Any, slots: list[Any]) -> Any:
            return stage(dot, slots, _NOTHING)

    else:
        first = compile_operand(head)
    stages = [_compile_command(command) for command in pipe.commands[1:]]
    decl = pipe.decl if with_decl else []
    if not stages and not decl:
        return first

    def run(dot: Any, slots: list[Any]) -> Any:
        value = first(dot, slots)
        for stage in stages:
            value = stage(dot, slots, value)
        for slot in decl:
            slots[slot] = value
        return value

    return run


# --- structure ------------------------------------------------------------------------------


def _has_loop_control(nodes: list[Node]) -> bool:
    """Can a break/continue escape from rendering ``nodes`` (not caught by an inner range)?"""
    for node in nodes:
        if isinstance(node, LoopControlNode):
            return True
        if isinstance(node, BranchNode) and _has_loop_control(node.body + node.else_body):
            return True
        if isinstance(node, RangeNode) and _has_loop_control(node.else_body):
            return True
    return False


def compile_list(nodes: list[Node], printer: Callable[[Any], str]) -> Render:
    items: list[str | Render] = []
    for node in nodes:
        item = _compile_node(node, printer)
        if isinstance(item, str) and items and isinstance(items[-1], str):
            items[-1] = items[-1] + item  # merge neighbouring text
        else:
            items.append(item)
    renders = [(position, item) for position, item in enumerate(items) if not isinstance(item, str)]
    base = [item if isinstance(item, str) else "" for item in items]
    constant = "".join(base)
    if not renders:
        return lambda dot, slots: constant
    if len(items) == 1 and not _has_loop_control(nodes):
        return renders[0][1]
    if _has_loop_control(nodes):

        def render_with_signals(dot: Any, slots: list[Any]) -> str:
            parts = base.copy()
            for position, render in renders:
                try:
                    parts[position] = render(dot, slots)
                except LoopSignal as signal:
                    signal.partial = "".join(parts[:position]) + signal.partial
                    raise
            return "".join(parts)

        return render_with_signals

    def render_list(dot: Any, slots: list[Any]) -> str:
        parts = base.copy()
        for position, render in renders:
            parts[position] = render(dot, slots)
        return "".join(parts)

    return render_list


def _compile_node(node: Node, printer: Callable[[Any], str]) -> str | Render:
    if isinstance(node, TextNode):
        return node.text
    if isinstance(node, ActionNode):
        return _compile_action(node, printer)
    if isinstance(node, BranchNode):
        return _compile_branch(node, printer)
    if isinstance(node, RangeNode):
        return _compile_range(node, printer)
    signal_is_break = node.is_break

    def render_loop_control(dot: Any, slots: list[Any]) -> str:
        raise LoopSignal(signal_is_break)

    return render_loop_control


def _compile_action(node: ActionNode, printer: Callable[[Any], str]) -> Render:
    get = compile_pipe(node.pipe)
    if node.pipe.decl:

        def render_declaration(dot: Any, slots: list[Any]) -> str:
            get(dot, slots)
            return ""  # an action that declares or assigns prints nothing

        return render_declaration
    if printer is print_text:

        def render_value(dot: Any, slots: list[Any]) -> str:
            value = get(dot, slots)
            return value if value.__class__ is str else print_text(value)

        return render_value
    return lambda dot, slots: printer(get(dot, slots))


def _compile_branch(node: BranchNode, printer: Callable[[Any], str]) -> Render:
    get = compile_pipe(node.pipe)
    body = compile_list(node.body, printer)
    else_body = compile_list(node.else_body, printer)
    if node.kind == "with":

        def render_with(dot: Any, slots: list[Any]) -> str:
            value = get(dot, slots)
            if truth(value):
                return body(value, slots)
            return else_body(dot, slots)

        return render_with

    def render_if(dot: Any, slots: list[Any]) -> str:
        if truth(get(dot, slots)):
            return body(dot, slots)
        return else_body(dot, slots)

    return render_if


def _compile_range(node: RangeNode, printer: Callable[[Any], str]) -> Render:
    get = compile_pipe(node.pipe, with_decl=False)
    body = compile_list(node.body, printer)
    else_body = compile_list(node.else_body, printer)
    decl = node.pipe.decl
    key_slot = decl[0] if len(decl) == 2 else None
    value_slot = decl[-1] if decl else None
    where = node.pipe.where

    def fail(message: str) -> ExecFailure:
        failure = ExecFailure(message)
        failure.locate(where.line_col, where.text)
        return failure

    def render_range(dot: Any, slots: list[Any]) -> str:
        value = get(dot, slots)
        pairs: Any
        if isinstance(value, list | tuple):
            pairs = enumerate(value)
        elif isinstance(value, Mapping):
            pairs = ((key, value[key]) for key in sorted_keys(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            if key_slot is not None:
                raise fail("can't use int to iterate over more than one variable")
            pairs = ((number, number) for number in range(value))
        elif value is None:
            pairs = ()
        else:
            shown = data_str(value) if value.__class__ in (str, float, bool) else go_type_name(value)
            raise fail(f"range can't iterate over {shown}")
        out: list[str] = []
        ran = False
        for key, element in pairs:
            ran = True
            if key_slot is not None:
                slots[key_slot] = key
            if value_slot is not None:
                slots[value_slot] = element
            try:
                out.append(body(element, slots))
            except LoopSignal as signal:
                out.append(signal.partial)
                if signal.is_break:
                    break
        if not ran:
            return else_body(dot, slots)
        return "".join(out)

    return render_range
