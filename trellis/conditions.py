"""Transition and format-item conditions (docs/engine.md, "Conditions"; docs/engine-differences.md, fix #6).

Two forms are understood:

* **The original's form** ``<words> input == '<literal>'`` (or ``"<literal>"``), which is
  what the file loader generates for ``options`` entries. It keeps the meaning the
  original gave it: the input is printed the Go ``%v`` way (trellis.go_values) and trimmed, the
  literal is trimmed of surrounding quote characters, and the two are compared
  case-insensitively; plain words left of ``input ==`` are ignored. It is recognised
  syntactically and evaluated natively (no CEL), so option menus stay fast.
* **Everything else is CEL** (https://cel.dev). In scope: ``input`` (the effective
  input), ``context`` (the context map), ``sys`` (the system context) and, as a
  shorthand, every top-level context key that is a valid identifier other than
  ``input``, ``context`` and ``sys`` (``age > 18`` reads ``context.age``).

Differences from the original's string-splitting evaluator, on purpose (docs/engine-differences.md, fix #6):

* ``!=``, ``&&``, ``||``, context access, ``input=='x'`` without the space, and values
  containing ``==`` now mean what they say instead of always being false.
* Escaped quotes in a literal (``input == 'don\\'t'``, generated from an option text
  with an apostrophe) are unescaped, so such options can match.
* Text left of ``input ==`` is ignored when it is plain words, or when the whole
  expression is not valid CEL (``Pick: input == 'x'``); otherwise it is CEL, so
  ``a && input == 'x'`` is a conjunction, not ``input == 'x'``.
* An expression that is not valid CEL raises ConditionError when the node is
  compiled, naming where it is, instead of silently evaluating to false.

At run time an evaluation error (e.g. a missing key) or a non-boolean result counts
as false (docs/engine.md, "Conditions"). Work is budgeted (trellis.condition_cost): a condition with
comprehensions whose estimated cost on the data at hand is over
``max_condition_cost`` is not run; it raises ConditionOverBudget, which fails the
step like any other engine error (it does not count as false: a step must not
take another branch because its data was large).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import cel

from trellis.condition_cost import comprehension_degree, first_collection_over, largest_allowed
from trellis.errors import ConditionError, ConditionOverBudget
from trellis.evaluation_limits import DEFAULT_LIMITS, EvaluationLimits
from trellis.go_values import go_str

# Left part: plain words only (no operators, parentheses or quotes), as in
# "foo input == 'x'". The literal is one quoted string with backslash escapes.
_LEGACY_FORM = re.compile(
    r"""^(?P<left>[^=&|!()<>?:'"\[\]{}+\-*/%,]*?)input ==\s*"""
    r"""(?P<lit>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")\s*$""",
    re.DOTALL,
)
# Any left part without "==": the original's form in general. Used only for text
# that is not valid CEL (e.g. "Pick: input == 'x'"), which keeps its old meaning.
_LOOSE_LEGACY_FORM = re.compile(
    r"""^(?P<left>(?:(?!==).)*?)input ==\s*(?P<lit>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")\s*$""",
    re.DOTALL,
)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_FIXED_NAMES = frozenset({"input", "context", "sys"})


class Condition:
    """A compiled condition. ``evaluate`` raises only ConditionOverBudget."""

    __slots__ = ("source",)

    def __init__(self, source: str) -> None:
        self.source = source

    def evaluate(
        self, input: Any, context: Mapping[str, Any], system_context: Mapping[str, Any]
    ) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r})"


class InputEqualsCondition(Condition):
    """The original's ``input == 'literal'``: trimmed, case-insensitive, Go-printed input."""

    __slots__ = ("_expected",)

    def __init__(self, source: str, expected: str) -> None:
        super().__init__(source)
        self._expected = expected

    @property
    def expected(self) -> str:
        return self._expected

    def evaluate(self, input: Any, context: Mapping[str, Any], system_context: Mapping[str, Any]) -> bool:
        actual = (input if type(input) is str else go_str(input)).strip()
        return actual == self._expected or _equal_fold(actual, self._expected)


def _equal_fold(a: str, b: str) -> bool:
    """Go's strings.EqualFold, approximately: equal under simple case folding, which maps one
    character to one character (``σ``, ``ς`` and ``Σ`` are equal; ``ß`` is not ``SS``)."""
    if len(a) != len(b):
        return False
    if a.isascii() and b.isascii():
        return a.lower() == b.lower()
    # Character by character: a whole-string upper() would let "ß" match "SS" (full folding).
    return all(x == y or x.lower() == y.lower() or x.upper() == y.upper() for x, y in zip(a, b, strict=True))


class CelCondition(Condition):
    """A CEL expression; only the variables it references are handed to CEL."""

    __slots__ = (
        "_context_names",
        "_degree",
        "_limit",
        "_max_items",
        "_program",
        "_wants_context",
        "_wants_input",
        "_wants_sys",
        "_where",
    )

    def __init__(
        self,
        source: str,
        program: Any,
        variables: list[str],
        *,
        where: str = "",
        limits: EvaluationLimits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(source)
        self._program = program
        self._wants_input = "input" in variables
        self._wants_context = "context" in variables
        self._wants_sys = "sys" in variables
        self._context_names = tuple(v for v in variables if v not in _FIXED_NAMES)
        self._where = where
        self._limit = limits.max_condition_cost
        self._degree = comprehension_degree(source)
        self._max_items = largest_allowed(self._limit, self._degree) if self._degree else 0

    def _check_budget(self, scope: Mapping[str, Any]) -> None:
        size = first_collection_over(scope.values(), self._max_items)
        if size:
            where = f"{self._where}: " if self._where else ""
            raise ConditionOverBudget(
                f"{where}condition {self.source!r} is over its evaluation budget: it would iterate "
                f"over a collection of {size} elements with comprehensions of degree {self._degree} "
                f"(filter and map count 2, nested ones add up); at most {self._max_items} elements "
                f"fit the limit of {self._limit} (max_condition_cost)"
            )

    def evaluate(self, input: Any, context: Mapping[str, Any], system_context: Mapping[str, Any]) -> bool:
        scope: dict[str, Any] = {}
        if self._wants_input:
            scope["input"] = input
        if self._wants_context:
            scope["context"] = context
        if self._wants_sys:
            scope["sys"] = system_context
        for name in self._context_names:
            # Names bound by macros (x in list.exists(x, ...)) are reported as
            # variables too; they are simply absent from the context.
            if name in context:
                scope[name] = context[name]
        if self._degree:
            self._check_budget(scope)
        try:
            result = self._program.execute(scope)
        except Exception:
            return False
        return result is True


def _legacy_literal(quoted: str) -> str:
    inner = _ESCAPE.sub(r"\1", quoted[1:-1])
    # The original trimmed every leading/trailing quote character of the right side.
    return inner.strip("'\"")


def compile_condition(expr: str, *, where: str, limits: EvaluationLimits = DEFAULT_LIMITS) -> Condition:
    """Compile ``expr``; ``where`` (file/node and transition index) names it in errors."""
    match = _LEGACY_FORM.match(expr)
    if match is not None:
        return InputEqualsCondition(expr, _legacy_literal(match.group("lit")))
    try:
        program = cel.compile(expr)
        variables = list(program.variables())
    except Exception as exc:  # cel raises ValueError with the parser's report
        loose = _LOOSE_LEGACY_FORM.match(expr)
        if loose is not None:
            return InputEqualsCondition(expr, _legacy_literal(loose.group("lit")))
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConditionError(f"{where}: invalid condition {expr!r}: {first_line}") from exc
    return CelCondition(expr, program, variables, where=where, limits=limits)
