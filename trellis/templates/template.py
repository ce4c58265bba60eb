"""A compiled template: parse once, render many times (docs/engine.md, "Templates")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trellis.errors import TemplateError
from trellis.evaluation_limits import DEFAULT_LIMITS, EvaluationLimits
from trellis.step_deadline import current_deadline
from trellis.templates.evaluate import (
    Render,
    RenderBudget,
    Settings,
    compile_list,
    has_range,
    output_limit_message,
    print_html,
    print_text,
    utf8_size_over,
)
from trellis.templates.functions import ARITIES
from trellis.templates.lexer import TemplateSyntaxError
from trellis.templates.parser import parse
from trellis.templates.values import ExecFailure

_QUOTED_SOURCE_LIMIT = 200  # long bodies are cut in error messages; the location still points in


def _location(source: str, offset: int) -> str:
    line = source.count("\n", 0, offset) + 1
    column = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return f"{line}:{column}"


class Template:
    """Go ``text/template`` subset (docs/engine.md, "Templates") evaluated over mappings only.

    ``Template(text)`` compiles immediately and raises :class:`TemplateError`
    (``invalid template '<text>': <line:col>: <problem>``) on a syntax error.
    ``render(data)`` raises ``TemplateError("template execution failed: …")``,
    also when the render goes over one of ``limits`` (trellis.evaluation_limits),
    and TimeoutError when the step it renders for is abandoned mid-way.
    A text without ``{{`` is constant: it is neither parsed nor copied.
    """

    __slots__ = ("_iterates", "_limits", "_render", "_slot_count", "html", "name", "source")

    def __init__(
        self, text: str, *, html: bool = False, name: str = "", limits: EvaluationLimits = DEFAULT_LIMITS
    ) -> None:
        self.source = text
        self.html = html
        self.name = name
        self._limits = limits
        self._render: Render | None = None
        self._slot_count = 1
        self._iterates = False
        if "{{" not in text:
            return
        try:
            nodes, self._slot_count = parse(text, ARITIES)
        except TemplateSyntaxError as exc:
            quoted = text if len(text) <= _QUOTED_SOURCE_LIMIT else text[:_QUOTED_SOURCE_LIMIT] + "…"
            prefix = f"{name}:" if name else ""
            raise TemplateError(
                f"invalid template '{quoted}': {prefix}{_location(text, exc.pos)}: {exc.problem}"
            ) from None
        self._iterates = has_range(nodes)
        # A template with a range keeps its RenderBudget in one slot past its variables.
        settings = Settings(print_html if html else print_text, limits, self._slot_count, self._iterates)
        self._render = compile_list(nodes, settings)

    @property
    def is_constant(self) -> bool:
        return self._render is None

    def render(self, data: Mapping[str, Any]) -> str:
        render = self._render
        if render is None:
            return self.source
        slots: list[Any] = [None] * self._slot_count
        slots[0] = data
        if self._iterates:
            slots.append(RenderBudget(self._limits, current_deadline()))
        try:
            out = render(data, slots)
        except (TemplateError, TimeoutError):
            raise
        except Exception as exc:  # any failure must surface as a TemplateError, never a traceback
            raise TemplateError(self._execution_message(exc)) from None
        limit = self._limits.max_template_output_bytes
        size = utf8_size_over(out, limit)
        if size:
            prefix = f"{self.name}: " if self.name else ""
            problem = output_limit_message("output", size, limit)
            raise TemplateError(f"template execution failed: {prefix}{problem}")
        return out

    def _execution_message(self, exc: Exception) -> str:
        prefix = f"{self.name}:" if self.name else ""
        if isinstance(exc, ExecFailure):
            where = f"{prefix}{exc.where}: " if exc.where else prefix
            return f"template execution failed: {where}{exc.message}"
        if isinstance(exc, RecursionError):
            return f"template execution failed: {prefix}value nested too deeply"
        return f"template execution failed: {prefix}{type(exc).__name__}: {exc}"

    def __repr__(self) -> str:
        return f"Template({self.source!r}, html={self.html}, name={self.name!r})"


def compile_template(
    text: str, *, html: bool = False, name: str = "", limits: EvaluationLimits = DEFAULT_LIMITS
) -> Template:
    """Compile ``text`` once; see :class:`Template`."""
    return Template(text, html=html, name=name, limits=limits)
