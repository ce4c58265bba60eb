"""Turning the node tree into nested closures, once per template.

Every node becomes a small function ``render(dot, slots) -> str`` (values:
``get(dot, slots) -> value``), so rendering walks no tree and parses nothing.
``slots`` is the per-render variable array (slot 0 is ``$``). ``break`` and
``continue`` travel as exceptions carrying the output already produced in the
current iteration; only lists that can contain them pay for the bookkeeping.

Work that caller data can make large is budgeted (trellis.evaluation_limits):
range iterations per render and the text functions return in all (counted in a
``RenderBudget`` kept in the last slot of templates that have a range), the text
a range accumulates and any one function returns, and printf widths.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from trellis.evaluation_limits import EvaluationLimits
from trellis.step_deadline import StepDeadline
from trellis.templates.escape import html_escape
from trellis.templates.functions import FUNCTIONS, limited_printf
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
_ITERATIONS = "(max_range_iterations)"
# How often (in range iterations) a render looks at the step's deadline.
_DEADLINE_CHECK_MASK = 1023


@dataclass(frozen=True, slots=True)
class Settings:
    """What compiling one template needs besides its nodes."""

    printer: Callable[[Any], str]
    limits: EvaluationLimits
    budget_slot: int  # the slot holding the RenderBudget
    budgeted: bool  # the template has a range, so renders carry a RenderBudget


class RenderBudget:
    """What one render of a template with a range has left: range iterations and text
    that functions may return (all calls together: a range multiplies their work), and
    the step it renders for."""

    __slots__ = ("deadline", "iterations_left", "text_left")

    def __init__(self, limits: EvaluationLimits, deadline: StepDeadline | None) -> None:
        self.iterations_left = limits.max_range_iterations
        self.text_left = limits.max_template_output_bytes
        self.deadline = deadline


def utf8_size_over(text: str, limit: int) -> int:
    """The UTF-8 size of ``text`` when it is over ``limit`` bytes, else 0 (cheap when short)."""
    length = len(text)
    if length * 4 <= limit:
        return 0
    size = length if length > limit else len(text.encode("utf-8", "surrogatepass"))
    return size if size > limit else 0


def output_limit_message(what: str, size: int, limit: int) -> str:
    return f"{what} of {size} bytes exceeds the limit of {limit} bytes (max_template_output_bytes)"


class LoopSignal(Exception):
    """``{{break}}``/``{{continue}}`` on its way to the enclosing range."""

    def __init__(self, is_break: bool) -> None:
        super().__init__("break" if is_break else "continue")
        self.is_break = is_break
        self.partial = ""


def print_text(value: Any) -> str:
    """Action output for text templates: a top-level nil is ``<no value>`` (docs/engine.md, "Templates")."""
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


def compile_operand(node: Operand, ctx: Settings) -> Getter:
    if isinstance(node, FieldNode):
        return _chain(None, node.names, node.where)
    if isinstance(node, VariableNode):
        slot = node.slot

        def get_variable(dot: Any, slots: list[Any]) -> Any:
            return slots[slot]

        return _chain(get_variable, node.names, node.where) if node.names else get_variable
    if isinstance(node, ChainNode):
        return _chain(compile_pipe(node.base, ctx), node.names, node.where)
    if isinstance(node, DotNode):
        return _get_dot
    if isinstance(node, LiteralNode):
        return _constant(node.value)
    if isinstance(node, FunctionNode):
        call = _compile_call(node.name, [], node.where, ctx)
        return lambda dot, slots: call(dot, slots, _NOTHING)
    return compile_pipe(node, ctx)


def _compile_call(name: str, getters: list[Getter], where: Where, ctx: Settings) -> Stage:
    """A function call; a piped value (if any) is appended as the last argument. A text
    result over the output limit is an error (it bounds what ``$x = printf "%s%s" $x $x``
    in a range can build)."""
    line_col, text = where.line_col, where.text
    if name in ("and", "or"):
        return _short_circuit(name == "and", getters)
    limits = ctx.limits
    function = limited_printf(limits.max_printf_width) if name == "printf" else FUNCTIONS[name][0]
    max_output = limits.max_template_output_bytes
    budget_slot = ctx.budget_slot if ctx.budgeted else None

    def call(dot: Any, slots: list[Any], piped: Any) -> Any:
        args = [get(dot, slots) for get in getters]
        if piped is not _NOTHING:
            args.append(piped)
        try:
            result = function(*args)
            if result.__class__ is str:
                size = utf8_size_over(result, max_output)
                if size:
                    raise ExecFailure(output_limit_message("result", size, max_output))
                if budget_slot is not None:
                    budget: RenderBudget = slots[budget_slot]
                    budget.text_left -= len(result)
                    if budget.text_left < 0:
                        raise ExecFailure(
                            f"template functions returned more than {max_output} bytes in one "
                            "render (max_template_output_bytes)"
                        )
            return result
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


def _compile_command(command: CommandNode, ctx: Settings) -> Stage:
    head = command.args[0]
    if isinstance(head, FunctionNode):
        return _compile_call(
            head.name, [compile_operand(arg, ctx) for arg in command.args[1:]], command.where, ctx
        )
    # The parser guarantees a non-function command has no arguments and no piped value.
    get = compile_operand(head, ctx)
    return lambda dot, slots, piped: get(dot, slots)


def compile_pipe(pipe: PipeNode, ctx: Settings, with_decl: bool = True) -> Getter:
    first_command = pipe.commands[0]
    head = first_command.args[0]
    first: Getter
    if isinstance(head, FunctionNode):
        stage = _compile_command(first_command, ctx)

        def first(dot: Any, slots: list[Any]) -> Any:
            return stage(dot, slots, _NOTHING)

    else:
        first = compile_operand(head, ctx)
    stages = [_compile_command(command, ctx) for command in pipe.commands[1:]]
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


def has_range(nodes: list[Node]) -> bool:
    """Does the template iterate (so that rendering it needs a RenderBudget)?"""
    for node in nodes:
        if isinstance(node, RangeNode):
            return True
        if isinstance(node, BranchNode) and has_range(node.body + node.else_body):
            return True
    return False


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


def compile_list(nodes: list[Node], ctx: Settings) -> Render:
    items: list[str | Render] = []
    for node in nodes:
        item = _compile_node(node, ctx)
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


def _compile_node(node: Node, ctx: Settings) -> str | Render:
    if isinstance(node, TextNode):
        return node.text
    if isinstance(node, ActionNode):
        return _compile_action(node, ctx)
    if isinstance(node, BranchNode):
        return _compile_branch(node, ctx)
    if isinstance(node, RangeNode):
        return _compile_range(node, ctx)
    signal_is_break = node.is_break

    def render_loop_control(dot: Any, slots: list[Any]) -> str:
        raise LoopSignal(signal_is_break)

    return render_loop_control


def _compile_action(node: ActionNode, ctx: Settings) -> Render:
    printer = ctx.printer
    get = compile_pipe(node.pipe, ctx)
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


def _compile_branch(node: BranchNode, ctx: Settings) -> Render:
    get = compile_pipe(node.pipe, ctx)
    body = compile_list(node.body, ctx)
    else_body = compile_list(node.else_body, ctx)
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


def _compile_range(node: RangeNode, ctx: Settings) -> Render:
    get = compile_pipe(node.pipe, ctx, with_decl=False)
    body = compile_list(node.body, ctx)
    else_body = compile_list(node.else_body, ctx)
    decl = node.pipe.decl
    key_slot = decl[0] if len(decl) == 2 else None
    value_slot = decl[-1] if decl else None
    where = node.pipe.where
    budget_slot = ctx.budget_slot
    max_iterations = ctx.limits.max_range_iterations
    max_output = ctx.limits.max_template_output_bytes

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
        size = 0  # characters so far: never more than bytes, so over in characters is over
        budget: RenderBudget = slots[budget_slot]
        ran = False
        for key, element in pairs:
            ran = True
            left = budget.iterations_left = budget.iterations_left - 1
            if left < 0:
                raise fail(f"range: more than {max_iterations} iterations in one render {_ITERATIONS}")
            if not left & _DEADLINE_CHECK_MASK and budget.deadline is not None and budget.deadline.passed():
                raise TimeoutError("the step was abandoned (its caller's deadline passed) while rendering")
            if key_slot is not None:
                slots[key_slot] = key
            if value_slot is not None:
                slots[value_slot] = element
            try:
                piece = body(element, slots)
            except LoopSignal as signal:
                piece = signal.partial
                if signal.is_break:
                    out.append(piece)
                    break
            out.append(piece)
            size += len(piece)
            if size > max_output:
                raise fail(output_limit_message("range output", size, max_output))
        if not ran:
            return else_body(dot, slots)
        return "".join(out)

    return render_range
