"""Building the node tree from tokens (Go ``text/template`` grammar, docs/engine.md, "Templates").

Checked here rather than at render time, so a broken template fails when the
graph is loaded: unknown functions (``{{ user_name }}``), wrong argument counts,
undefined variables, arguments given to something that is not a function, and
``define``/``template``/``block`` (not part of the supported subset).
"""

from __future__ import annotations

from collections.abc import Mapping

from trellis.templates.lexer import Kind, TemplateSyntaxError, Token, tokenize
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

Arity = tuple[int, int | None]  # (minimum, maximum or None for variadic)

MAX_NESTING = 100  # if/range/with and parentheses; keeps parsing and rendering far from Python's stack limit
_UNSUPPORTED = frozenset({"define", "template", "block"})
_KEYWORDS = frozenset({"if", "else", "end", "range", "with", "break", "continue"}) | _UNSUPPORTED
_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, '"': 34, "'": 39}


def unquote(text: str, pos: int) -> str:
    """Decode a Go interpreted string or character literal (quotes included)."""
    quote = text[0]
    body = text[1:-1]
    out = bytearray()
    index = 0
    while index < len(body):
        char = body[index]
        if char != "\\":
            out += char.encode()
            index += 1
            continue
        code = body[index + 1] if index + 1 < len(body) else ""
        if code in _ESCAPES and (code != "'" or quote == "'") and (code != '"' or quote == '"'):
            out.append(_ESCAPES[code])
            index += 2
        elif code in "xuU" and code:
            width = {"x": 2, "u": 4, "U": 8}[code]
            digits = body[index + 2 : index + 2 + width]
            if len(digits) != width or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise TemplateSyntaxError(f"invalid escape in {text}", pos)
            value = int(digits, 16)
            if code == "x":
                out.append(value)
            elif value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                raise TemplateSyntaxError(f"invalid escape in {text}", pos)
            else:
                out += chr(value).encode()
            index += 2 + width
        elif code and code in "01234567":
            digits = body[index + 1 : index + 4]
            if len(digits) != 3 or any(d not in "01234567" for d in digits) or int(digits, 8) > 255:
                raise TemplateSyntaxError(f"invalid escape in {text}", pos)
            out.append(int(digits, 8))
            index += 4
        else:
            raise TemplateSyntaxError(f"invalid escape in {text}", pos)
    return out.decode("utf-8", errors="replace")


def parse_number(text: str, pos: int) -> int | float:
    """Go number literals: integers stay ``int``; a '.' or exponent makes a ``float``."""
    clean = text.replace("_", "")
    sign = -1 if clean.startswith("-") else 1
    digits = clean.lstrip("+-")
    try:
        if digits[:2].lower() in ("0x", "0b", "0o"):
            return sign * int(digits, 0)
        if "." in digits or "e" in digits.lower():
            return sign * float(digits)
        if len(digits) > 1 and digits.startswith("0"):
            return sign * int(digits, 8)  # Go: a leading zero means octal
        return sign * int(digits)
    except ValueError:
        raise TemplateSyntaxError(f"bad number syntax: {text!r}", pos) from None


class Parser:
    def __init__(self, source: str, functions: Mapping[str, Arity]) -> None:
        self.source = source
        self.functions = functions
        self.tokens = tokenize(source)
        self.index = 0
        self.scope: list[tuple[str, int]] = [("$", 0)]
        self.slot_count = 1
        self.range_depth = 0
        self.depth = 0

    # --- token helpers ---------------------------------------------------------------

    def where(self, start: int, end: int | None = None) -> Where:
        line = self.source.count("\n", 0, start) + 1
        col = start - (self.source.rfind("\n", 0, start) + 1) + 1
        text = self.source[start:end] if end is not None else ""
        return Where(f"{line}:{col}", text.strip())

    def peek(self) -> Token:
        return self.tokens[self.index]

    def next(self) -> Token:
        token = self.tokens[self.index]
        if token.kind is not Kind.EOF:
            self.index += 1
        return token

    def peek_non_space(self) -> Token:
        while self.tokens[self.index].kind is Kind.SPACE:
            self.index += 1
        return self.tokens[self.index]

    def next_non_space(self) -> Token:
        self.peek_non_space()
        return self.next()

    def fail(self, problem: str, token: Token) -> TemplateSyntaxError:
        return TemplateSyntaxError(problem, token.pos)

    def describe(self, token: Token) -> str:
        if token.kind is Kind.EOF:
            return "end of template"
        if token.kind is Kind.RIGHT_DELIM:
            return "}}"
        if token.kind is Kind.SPACE:
            return "space"
        if token.kind.value == token.text:
            return repr(token.text)
        return f"{token.kind.value} {token.text!r}"

    # --- structure ---------------------------------------------------------------------

    def parse(self) -> list[Node]:
        nodes, stop, token = self.item_list()
        if stop is not None:
            raise self.fail(f"unexpected {{{{{stop}}}}}", token)
        return nodes

    def item_list(self) -> tuple[list[Node], str | None, Token]:
        """Nodes up to ``{{end}}``/``{{else}}`` (returned as the stop word) or EOF (None)."""
        nodes: list[Node] = []
        while True:
            token = self.next()
            if token.kind is Kind.EOF:
                return nodes, None, token
            if token.kind is Kind.TEXT:
                nodes.append(TextNode(token.text))
                continue
            # token is a left delimiter
            word = self.peek_non_space()
            if word.kind is Kind.IDENT and word.text in _KEYWORDS:
                self.next()
                if word.text in ("end", "else"):
                    if word.text == "end":
                        self.expect_close(word.text)
                    return nodes, word.text, word
                nodes.append(self.control(word))
            else:
                nodes.append(ActionNode(self.pipeline("command", Kind.RIGHT_DELIM, token.pos)))

    def expect_close(self, context: str) -> Token:
        token = self.next_non_space()
        if token.kind is not Kind.RIGHT_DELIM:
            raise self.fail(f"unexpected {self.describe(token)} in {context}", token)
        return token

    def control(self, word: Token) -> Node:
        if word.text in _UNSUPPORTED:
            supported = "only the subset in docs/engine.md, Templates, is"
            raise self.fail(f"{{{{{word.text}}}}} is not supported ({supported})", word)
        if word.text in ("break", "continue"):
            if not self.range_depth:
                raise self.fail(f"{{{{{word.text}}}}} outside {{{{range}}}}", word)
            self.expect_close(word.text)
            return LoopControlNode(is_break=word.text == "break")
        return self.branch(word.text, word)

    def enter(self, token: Token) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.fail(f"nested deeper than {MAX_NESTING} levels", token)

    def branch(self, kind: str, word: Token) -> Node:
        self.enter(word)
        mark = len(self.scope)
        pipe = self.pipeline(kind, Kind.RIGHT_DELIM, word.pos)
        if kind == "range":
            self.range_depth += 1
        body, stop, stop_token = self.scoped_list()
        if kind == "range":
            self.range_depth -= 1
        else_body: list[Node] = []
        if stop is None:
            raise self.fail(f"unexpected end of template: {{{{{kind}}}}} has no {{{{end}}}}", word)
        if stop == "else":
            follow = self.peek_non_space()
            if kind in ("if", "with") and follow.kind is Kind.IDENT and follow.text == kind:
                # {{else if X}} is {{else}}{{if X}}…{{end}}{{end}} with the outer end implied.
                self.next()
                else_body = [self.branch(kind, follow)]
            else:
                self.expect_close("else")
                else_body, stop, stop_token = self.scoped_list()
                if stop != "end":
                    found = "end of template" if stop is None else f"{{{{{stop}}}}}"
                    raise self.fail(f"expected {{{{end}}}} for {{{{{kind}}}}}; found {found}", stop_token)
        del self.scope[mark:]
        self.depth -= 1
        if kind == "range":
            return RangeNode(pipe, body, else_body)
        return BranchNode(kind, pipe, body, else_body)

    def scoped_list(self) -> tuple[list[Node], str | None, Token]:
        """A body whose own declarations end with it."""
        mark = len(self.scope)
        result = self.item_list()
        del self.scope[mark:]
        return result

    # --- pipelines ---------------------------------------------------------------------

    def declare(self, name: str) -> int:
        slot = self.slot_count
        self.slot_count += 1
        self.scope.append((name, slot))
        return slot

    def lookup(self, token: Token) -> int:
        for name, slot in reversed(self.scope):
            if name == token.text:
                return slot
        raise self.fail(f'undefined variable "{token.text}"', token)

    def pipeline(self, context: str, end: Kind, start: int) -> PipeNode:
        declared: list[Token] = []
        is_assign = False
        first = self.peek_non_space()
        if first.kind is Kind.VARIABLE:
            saved = self.index
            self.next()
            after = self.peek_non_space()
            if after.kind in (Kind.DECLARE, Kind.ASSIGN):
                self.next()
                declared = [first]
                is_assign = after.kind is Kind.ASSIGN
            elif after.kind is Kind.COMMA:
                if context != "range":
                    raise self.fail(f"too many declarations in {context}", after)
                self.next()
                second = self.next_non_space()
                operator = self.next_non_space()
                if second.kind is not Kind.VARIABLE or operator.kind not in (Kind.DECLARE, Kind.ASSIGN):
                    raise self.fail("range can only initialize variables", second)
                declared = [first, second]
                is_assign = operator.kind is Kind.ASSIGN
            else:
                self.index = saved
        commands: list[CommandNode] = []
        while True:
            token = self.peek_non_space()
            if token.kind is end:
                self.next()
                break
            if token.kind in (Kind.RIGHT_DELIM, Kind.RIGHT_PAREN, Kind.EOF):
                raise self.fail(f"unexpected {self.describe(token)} in {context}", token)
            if commands and token.kind is not Kind.PIPE:
                raise self.fail(f"unexpected {self.describe(token)} in {context}", token)
            if token.kind is Kind.PIPE:
                if not commands:
                    raise self.fail(f"missing value before | in {context}", token)
                self.next()
                if self.peek_non_space().kind in (end, Kind.EOF):
                    raise self.fail(f"missing command after | in {context}", token)
            commands.append(self.command(stage=len(commands)))
        if not commands:
            raise self.fail(f"missing value for {context}", self.tokens[self.index - 1])
        # Declare after the commands so ``$x := $x`` refers to the outer $x.
        if is_assign:
            decl = [self.lookup(token) for token in declared]
        else:
            decl = [self.declare(token.text) for token in declared]
        last = self.tokens[self.index - 1]
        end_offset = last.pos if last.kind is Kind.RIGHT_DELIM else last.pos + len(last.text)
        return PipeNode(self.where(start, end_offset), commands, decl, is_assign)

    def command(self, stage: int) -> CommandNode:
        start = self.peek_non_space()
        args: list[Operand] = []
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is None:
                break
            args.append(operand)
            following = self.peek()
            if following.kind is Kind.SPACE:
                continue
            if following.kind in (Kind.RIGHT_DELIM, Kind.RIGHT_PAREN, Kind.PIPE):
                break
            raise self.fail(f"unexpected {self.describe(following)} in operand", following)
        if not args:
            raise self.fail(f"unexpected {self.describe(self.peek())} in command", self.peek())
        end_pos = self.peek().pos
        command = CommandNode(self.where(start.pos, end_pos), args)
        self.check_command(command, stage, start)
        return command

    def check_command(self, command: CommandNode, stage: int, token: Token) -> None:
        for arg in command.args[1:]:
            if isinstance(arg, FunctionNode):  # an identifier argument is a call without arguments
                self.check_arity(arg.name, 0, token)
        head = command.args[0]
        given = len(command.args) - 1 + (1 if stage else 0)
        if isinstance(head, FunctionNode):
            self.check_arity(head.name, given, token)
            return
        if isinstance(head, LiteralNode) and head.value is None:
            raise self.fail("nil is not a command", token)
        if given:
            raise self.fail(f"can't give argument to non-function {head.where.text}", token)

    def check_arity(self, name: str, given: int, token: Token) -> None:
        low, high = self.functions[name]
        if given < low or (high is not None and given > high):
            want = f"{low}" if high == low else f"at least {low}" if high is None else f"{low} to {high}"
            raise self.fail(f"wrong number of args for {name}: want {want} got {given}", token)

    def operand(self) -> Operand | None:
        token = self.peek()
        node = self.term()
        if node is None or self.peek().kind is not Kind.FIELD:
            return node
        names: list[str] = []
        while self.peek().kind is Kind.FIELD:
            names.append(self.next().text[1:])
        where = self.where(token.pos, self.peek().pos)
        if isinstance(node, FieldNode):
            return FieldNode(where, node.names + tuple(names))
        if isinstance(node, VariableNode):
            return VariableNode(where, node.name, node.slot, node.names + tuple(names))
        if isinstance(node, PipeNode):
            return ChainNode(where, node, tuple(names))
        raise self.fail(f"unexpected . after term {node.where.text!r}", token)

    def term(self) -> Operand | None:
        token = self.peek()
        kind = token.kind
        if kind in (Kind.RIGHT_DELIM, Kind.RIGHT_PAREN, Kind.PIPE, Kind.EOF):
            return None
        self.next()
        where = self.where(token.pos, token.pos + len(token.text))
        if kind is Kind.FIELD:
            return FieldNode(where, (token.text[1:],))
        if kind is Kind.DOT:
            return DotNode(where)
        if kind is Kind.VARIABLE:
            return VariableNode(where, token.text, self.lookup(token))
        if kind is Kind.NUMBER:
            return LiteralNode(where, parse_number(token.text, token.pos))
        if kind is Kind.STRING:
            return LiteralNode(where, unquote(token.text, token.pos))
        if kind is Kind.RAW_STRING:
            return LiteralNode(where, token.text[1:-1])
        if kind is Kind.CHAR:
            value = unquote(token.text, token.pos)
            if len(value) != 1:
                raise self.fail(f"malformed character constant {token.text}", token)
            return LiteralNode(where, ord(value))
        if kind is Kind.LEFT_PAREN:
            self.enter(token)
            pipe = self.pipeline("parenthesized pipeline", Kind.RIGHT_PAREN, token.pos)
            self.depth -= 1
            return pipe
        if kind is Kind.IDENT:
            if token.text in ("true", "false"):
                return LiteralNode(where, token.text == "true")
            if token.text == "nil":
                return LiteralNode(where, None)
            if token.text in _KEYWORDS:
                raise self.fail(f"unexpected keyword {token.text!r} in operand", token)
            if token.text not in self.functions:
                raise self.fail(f'function "{token.text}" not defined', token)
            return FunctionNode(where, token.text)
        raise self.fail(f"unexpected {self.describe(token)} in operand", token)


def parse(source: str, functions: Mapping[str, Arity]) -> tuple[list[Node], int]:
    """The node tree of ``source`` and the number of variable slots it needs."""
    parser = Parser(source, functions)
    return parser.parse(), parser.slot_count
