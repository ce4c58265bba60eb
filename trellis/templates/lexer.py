"""Splitting template text into tokens (Go ``text/template`` lexical rules, docs/engine.md, "Templates").

Outside actions everything is text. An action is ``{{ … }}``; ``{{- `` trims the
whitespace before it and `` -}}`` the whitespace after it (the marker needs the
space, so ``{{-3}}`` is the number -3). ``{{/* … */}}`` is a comment and yields no
token. Problems are reported as :class:`TemplateSyntaxError` with the offset.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

SPACE_CHARS = " \t\r\n"
_TRIM_LEFT = "-"
_RIGHT_TRIM = "-}}"


class Kind(enum.Enum):
    TEXT = "text"
    LEFT_DELIM = "{{"
    RIGHT_DELIM = "}}"
    SPACE = "space"
    FIELD = "field"  # .name
    VARIABLE = "variable"  # $ or $name
    DOT = "."
    IDENT = "identifier"  # function names, keywords, true/false/nil
    STRING = "string"  # "…" with escapes
    RAW_STRING = "raw string"  # `…`
    CHAR = "character constant"  # 'a'
    NUMBER = "number"
    PIPE = "|"
    LEFT_PAREN = "("
    RIGHT_PAREN = ")"
    DECLARE = ":="
    ASSIGN = "="
    COMMA = ","
    EOF = "end of template"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    text: str  # the source text (for TEXT: the text after trimming)
    pos: int  # offset of the token in the template source


class TemplateSyntaxError(Exception):
    """A lexing or parsing problem at ``pos`` (an offset into the source)."""

    def __init__(self, problem: str, pos: int) -> None:
        super().__init__(problem)
        self.problem = problem
        self.pos = pos


# Go's number syntax (decimal, hex, octal, binary, underscores, fractions, exponents).
_NUMBER = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+"
    r"|(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9]+)?)"
)


def _is_word_char(char: str) -> bool:
    return char == "_" or char.isalnum()


class _Lexer:
    def __init__(self, source: str) -> None:
        self.src = source
        self.tokens: list[Token] = []

    def run(self) -> list[Token]:
        src = self.src
        pos = 0
        trim_next_text = False
        while True:
            start = src.find("{{", pos)
            text_end = len(src) if start < 0 else start
            text = src[pos:text_end]
            trim_this = start >= 0 and src.startswith(_TRIM_LEFT, start + 2) and self._space_at(start + 3)
            if trim_next_text:
                text = text.lstrip(SPACE_CHARS)
            if trim_this:
                text = text.rstrip(SPACE_CHARS)
            if text:
                self.tokens.append(Token(Kind.TEXT, text, pos))
            if start < 0:
                break
            inner = start + (4 if trim_this else 2)
            if src.startswith("/*", inner):
                pos, trim_next_text = self._comment(start, inner)
            else:
                self.tokens.append(Token(Kind.LEFT_DELIM, "{{", start))
                pos, trim_next_text = self._action(start, inner)
        self.tokens.append(Token(Kind.EOF, "", len(src)))
        return self.tokens

    def _space_at(self, index: int) -> bool:
        return index < len(self.src) and self.src[index] in SPACE_CHARS

    def _right_delim_at(self, index: int) -> tuple[int, bool] | None:
        """If a closing delimiter starts at ``index``: (offset after it, trim marker present)."""
        if self._space_at(index) and self.src.startswith(_RIGHT_TRIM, index + 1):
            return index + 4, True
        if self.src.startswith("}}", index):
            return index + 2, False
        return None

    def _comment(self, start: int, inner: int) -> tuple[int, bool]:
        end = self.src.find("*/", inner + 2)
        if end < 0:
            raise TemplateSyntaxError("unclosed comment", start)
        closing = self._right_delim_at(end + 2)
        if closing is None:
            raise TemplateSyntaxError("comment ends before closing delimiter", end)
        return closing

    def _action(self, start: int, index: int) -> tuple[int, bool]:
        src = self.src
        length = len(src)
        depth = 0
        emit = self.tokens.append
        while True:
            if index >= length:
                raise TemplateSyntaxError("unclosed action", start)
            closing = self._right_delim_at(index)
            if closing is not None:
                if depth:
                    raise TemplateSyntaxError("unclosed left paren", index)
                emit(Token(Kind.RIGHT_DELIM, src[index : closing[0]], index))
                return closing
            char = src[index]
            if char in SPACE_CHARS:
                end = index
                while end < length and src[end] in SPACE_CHARS:
                    end += 1
                # Leave the last space to a following " -}}" marker.
                if end - 1 > index and src.startswith(_RIGHT_TRIM, end):
                    end -= 1
                emit(Token(Kind.SPACE, src[index:end], index))
                index = end
            elif char == "|":
                emit(Token(Kind.PIPE, char, index))
                index += 1
            elif char == "(":
                depth += 1
                emit(Token(Kind.LEFT_PAREN, char, index))
                index += 1
            elif char == ")":
                depth -= 1
                if depth < 0:
                    raise TemplateSyntaxError("unexpected right paren", index)
                emit(Token(Kind.RIGHT_PAREN, char, index))
                index += 1
            elif char == ":":
                if not src.startswith(":=", index):
                    raise TemplateSyntaxError("expected :=", index)
                emit(Token(Kind.DECLARE, ":=", index))
                index += 2
            elif char == "=":
                emit(Token(Kind.ASSIGN, char, index))
                index += 1
            elif char == ",":
                emit(Token(Kind.COMMA, char, index))
                index += 1
            elif char == '"':
                index = self._quoted(index, '"', Kind.STRING, "unterminated quoted string")
            elif char == "'":
                index = self._quoted(index, "'", Kind.CHAR, "unterminated character constant")
            elif char == "`":
                end = src.find("`", index + 1)
                if end < 0:
                    raise TemplateSyntaxError("unterminated raw quoted string", index)
                emit(Token(Kind.RAW_STRING, src[index : end + 1], index))
                index = end + 1
            elif char == "$":
                index = self._word(index, index + 1, Kind.VARIABLE)
            elif char == "." and index + 1 < length and src[index + 1].isdigit():
                index = self._number(index)
            elif char == ".":
                if index + 1 < length and _is_word_char(src[index + 1]):
                    index = self._word(index, index + 1, Kind.FIELD)
                else:
                    emit(Token(Kind.DOT, char, index))
                    index += 1
            elif char.isdigit() or char in "+-":
                index = self._number(index)
            elif _is_word_char(char):
                index = self._word(index, index, Kind.IDENT)
            else:
                raise TemplateSyntaxError(f"unexpected {char!r} in action", index)

    def _word(self, start: int, index: int, kind: Kind) -> int:
        src = self.src
        while index < len(src) and _is_word_char(src[index]):
            index += 1
        self._expect_terminator(index)
        self.tokens.append(Token(kind, src[start:index], start))
        return index

    def _expect_terminator(self, index: int) -> None:
        """After a word the next character must end it (Go's ``atTerminator``)."""
        if index >= len(self.src):
            return
        char = self.src[index]
        if char in SPACE_CHARS or char in ".,|:)(=" or self.src.startswith("}}", index):
            return
        raise TemplateSyntaxError(f"bad character {char!r}", index)

    def _number(self, index: int) -> int:
        match = _NUMBER.match(self.src, index)
        end = match.end() if match else index
        if match is None or end == index or self.src[end - 1] in "+-" or (
            end < len(self.src) and _is_word_char(self.src[end])
        ):
            stop = end
            while stop < len(self.src) and (_is_word_char(self.src[stop]) or self.src[stop] in "+-."):
                stop += 1
            raise TemplateSyntaxError(f"bad number syntax: {self.src[index:max(stop, index + 1)]!r}", index)
        self.tokens.append(Token(Kind.NUMBER, self.src[index:end], index))
        return end

    def _quoted(self, index: int, quote: str, kind: Kind, problem: str) -> int:
        src = self.src
        pos = index + 1
        while True:
            if pos >= len(src) or src[pos] == "\n":
                raise TemplateSyntaxError(problem, index)
            if src[pos] == "\\":
                pos += 2
                continue
            if src[pos] == quote:
                break
            pos += 1
        self.tokens.append(Token(kind, src[index : pos + 1], index))
        return pos + 1


def tokenize(source: str) -> list[Token]:
    """All tokens of ``source`` ending with an EOF token; raises TemplateSyntaxError."""
    return _Lexer(source).run()
