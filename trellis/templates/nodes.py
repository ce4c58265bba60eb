"""The parsed form of a template: a small tree the compiler turns into closures.

Variables are resolved while parsing: each declaration gets its own slot in a flat
per-render array (slot 0 is ``$``), so evaluation never searches scopes by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Where:
    """Where a node came from: ``line:col`` and its source text, for error messages."""

    line_col: str
    text: str


# --- operands (the words of a command) -------------------------------------------------


@dataclass(slots=True)
class FieldNode:
    """``.a.b``: a chain of mapping keys looked up from dot."""

    where: Where
    names: tuple[str, ...]


@dataclass(slots=True)
class VariableNode:
    """``$x.a.b``: a variable (resolved to a slot) followed by a key chain."""

    where: Where
    name: str
    slot: int
    names: tuple[str, ...] = ()


@dataclass(slots=True)
class ChainNode:
    """``(pipeline).a.b``: keys looked up on the result of a parenthesised pipeline."""

    where: Where
    base: PipeNode
    names: tuple[str, ...]


@dataclass(slots=True)
class DotNode:
    where: Where


@dataclass(slots=True)
class LiteralNode:
    """A bool, number, string or character constant (``nil`` has value None)."""

    where: Where
    value: Any


@dataclass(slots=True)
class FunctionNode:
    """An identifier naming a function; as an argument it is called without arguments."""

    where: Where
    name: str


@dataclass(slots=True)
class CommandNode:
    """One stage of a pipeline: a function call or a single value."""

    where: Where
    args: list[Operand]


@dataclass(slots=True)
class PipeNode:
    """``$x := cmd | cmd``; ``decl`` holds the slots of the declared/assigned variables."""

    where: Where
    commands: list[CommandNode]
    decl: list[int] = field(default_factory=list)
    is_assign: bool = False


Operand = FieldNode | VariableNode | ChainNode | DotNode | LiteralNode | FunctionNode | PipeNode


# --- structure ---------------------------------------------------------------------------


@dataclass(slots=True)
class TextNode:
    text: str


@dataclass(slots=True)
class ActionNode:
    """``{{ pipeline }}``: prints the value unless the pipeline declares variables."""

    pipe: PipeNode


@dataclass(slots=True)
class BranchNode:
    """``if`` or ``with`` (``kind``) with an optional else list."""

    kind: str
    pipe: PipeNode
    body: list[Node]
    else_body: list[Node]


@dataclass(slots=True)
class RangeNode:
    pipe: PipeNode  # its decl slots are set per element, not to the whole value
    body: list[Node]
    else_body: list[Node]


@dataclass(slots=True)
class LoopControlNode:
    """``{{ break }}`` or ``{{ continue }}`` inside a range."""

    is_break: bool


Node = TextNode | ActionNode | BranchNode | RangeNode | LoopControlNode
