"""Budgets on the work of evaluating conditions and templates over caller data.

A caller controls the data a step evaluates (the context it starts a session
with, its answers, tool results), so the size of that data must not decide how
long a step holds the server. Each budget is checked while (or before) the work
is done, and a step over budget fails with a TemplateError or ConditionError
naming where and which limit, like any other evaluation error:

* ``max_condition_cost``: a CEL condition with comprehensions (``all``,
  ``exists``, ``exists_one``, ``filter``, ``map``) is refused before it runs when
  ``n ** degree`` exceeds it, ``n`` being the largest list or map it reads and
  ``degree`` the comprehensions nested in each other, ``filter`` and ``map``
  counting 2 (the CEL library copies their result on every element, so they are
  quadratic).
* ``max_range_iterations``: the ``{{range}}`` iterations of one render, all
  ranges together.
* ``max_template_output_bytes``: what one render outputs, and each text a template
  function (``printf``, ``print``, ``toJson``, ...) returns; in a template with a
  range, also what its functions return in all.
* ``max_printf_width``: the width and precision of a ``printf`` verb.

The server reads them from its configuration (same names); anything else builds
an engine with ``EvaluationLimits.from_env()``: ``TRELLIS_`` + the name in upper
case, when a positive integer.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_MAX_CONDITION_COST = 100_000
DEFAULT_MAX_RANGE_ITERATIONS = 10_000
DEFAULT_MAX_TEMPLATE_OUTPUT_BYTES = 1024 * 1024
DEFAULT_MAX_PRINTF_WIDTH = 1000


@dataclass(frozen=True, slots=True)
class EvaluationLimits:
    max_condition_cost: int = DEFAULT_MAX_CONDITION_COST
    max_range_iterations: int = DEFAULT_MAX_RANGE_ITERATIONS
    max_template_output_bytes: int = DEFAULT_MAX_TEMPLATE_OUTPUT_BYTES
    max_printf_width: int = DEFAULT_MAX_PRINTF_WIDTH

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EvaluationLimits:
        """TRELLIS_MAX_CONDITION_COST etc. where set to a positive integer, else the defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for field in dataclasses.fields(cls):
            raw = env.get("TRELLIS_" + field.name.upper(), "").strip()
            try:
                value = int(raw)
            except ValueError:
                continue
            if value > 0:
                values[field.name] = value
        return cls(**values)


DEFAULT_LIMITS = EvaluationLimits()
