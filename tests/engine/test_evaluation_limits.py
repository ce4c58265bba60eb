"""Evaluation budgets at the engine (trellis.evaluation_limits): caller data that would
make a condition or a template run long fails the operation with an error naming the
node and the limit, and nothing changes (the engine never mutates its input state)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from trellis.domain import State
from trellis.errors import ConditionOverBudget, TemplateError
from trellis.evaluation_limits import (
    DEFAULT_MAX_CONDITION_COST,
    DEFAULT_MAX_RANGE_ITERATIONS,
    EvaluationLimits,
)

from .helpers import make_engine

# The largest list a degree-2 condition (one filter, or two nested exists) may read
# under the default budget: 316 ** 2 <= 100,000 < 317 ** 2.
FITS = 316
assert FITS**2 <= DEFAULT_MAX_CONDITION_COST < (FITS + 1) ** 2


def branching(condition: str) -> dict[str, Any]:
    return {"id": "start", "transitions": [{"to": "yes", "condition": condition}], "to": "no"}


async def navigated(condition: str, context: dict[str, Any]) -> str:
    engine = make_engine(branching(condition), {"id": "yes"}, {"id": "no"})
    state = await engine.start("s", context)
    return (await engine.navigate(state, "")).current_node_id


# --- conditions -----------------------------------------------------------------------------------


async def test_a_filter_over_a_list_too_large_for_the_budget_fails_the_step() -> None:
    # The condition (30,000 elements ran 66 s); one element over the budget is enough.
    condition = "items.filter(x, x > 5).size() > 0"
    assert await navigated(condition, {"items": list(range(FITS))}) == "yes"
    with pytest.raises(ConditionOverBudget) as caught:
        await navigated(condition, {"items": list(range(FITS + 1))})
    message = caught.value.message
    assert "<memory:start>: transitions[0].condition" in message
    assert f"collection of {FITS + 1} elements" in message
    assert f"limit of {DEFAULT_MAX_CONDITION_COST} (max_condition_cost)" in message


async def test_nested_comprehensions_multiply_and_sequential_ones_do_not() -> None:
    nested = "a.exists(x, a.exists(y, x + y < 0))"
    assert await navigated(nested, {"a": list(range(FITS))}) == "no"
    with pytest.raises(ConditionOverBudget):
        await navigated(nested, {"a": list(range(FITS + 1))})
    # One after the other: degree 1 each, so a list far larger than FITS is fine.
    sequential = "a.exists(x, x < 0) || a.all(x, x > 100000)"
    assert await navigated(sequential, {"a": list(range(20_000))}) == "no"


async def test_a_large_collection_nested_in_the_context_counts_too() -> None:
    condition = "context.orders.exists(o, o.items.exists(i, i == 'x'))"
    small = {"orders": [{"items": ["a"] * 10}] * 10}
    assert await navigated(condition, small) == "no"
    with pytest.raises(ConditionOverBudget):
        await navigated(condition, {"orders": [{"items": ["a"] * (FITS + 1)}]})


async def test_a_condition_without_comprehensions_reads_any_size() -> None:
    assert await navigated("size(items) > 20000", {"items": list(range(20_001))}) == "yes"


async def test_a_format_message_condition_over_budget_fails_the_render() -> None:
    engine = make_engine(
        {
            "id": "start",
            "type": "format",
            "messages": {"en": [{"text": "many", "condition": "a.map(x, x).size() > 1"}]},
        }
    )
    state = State.new("s", "start")
    state.context["a"] = list(range(FITS))
    assert (await engine.render(state)).actions[0].payload == "many"
    state.context["a"] = list(range(FITS + 1))
    with pytest.raises(ConditionOverBudget, match=r"messages\['en'\]\[0\]\.condition"):
        await engine.render(state)


@pytest.mark.in_process_only(reason="gives the engine its own limits")
async def test_the_condition_budget_is_configurable() -> None:
    engine = make_engine(
        branching("items.exists(x, x > 5)"),
        {"id": "yes"},
        {"id": "no"},
        limits=EvaluationLimits(max_condition_cost=10),
    )
    state = await engine.start("s", {"items": list(range(10))})
    assert (await engine.navigate(state, "")).current_node_id == "yes"
    state = await engine.start("s", {"items": list(range(11))})
    with pytest.raises(ConditionOverBudget, match="at most 10 elements fit the limit of 10"):
        await engine.navigate(state, "")


# --- templates ------------------------------------------------------------------------------------


async def test_a_range_over_budget_fails_the_render_naming_the_node_and_limit() -> None:
    engine = make_engine({"id": "start", "content": "{{ range .n }}.{{ end }}"})
    state = State.new("s", "start")
    state.context["n"] = DEFAULT_MAX_RANGE_ITERATIONS
    assert (await engine.render(state)).actions[0].payload == "." * DEFAULT_MAX_RANGE_ITERATIONS
    state.context["n"] = DEFAULT_MAX_RANGE_ITERATIONS + 1
    with pytest.raises(TemplateError) as caught:
        await engine.render(state)
    assert "node 'start'" in caught.value.message
    assert "max_range_iterations" in caught.value.message


async def test_a_printf_width_over_budget_fails_tool_argument_interpolation() -> None:
    engine = make_engine({"id": "start", "do": {"name": "t", "args": {"pad": '{{ printf "%*d" .w 1 }}'}}})
    state = State.new("s", "start")
    state.context["w"] = 300_000_000
    with pytest.raises(TemplateError, match=r"failed to interpolate tool arg 'pad'.*max_printf_width"):
        await engine.render(state)


@pytest.mark.in_process_only(reason="records the thread a content converter runs in")
async def test_only_nodes_whose_templates_loop_render_off_the_event_loop() -> None:
    threads: list[str] = []

    class Recording:
        def convert(self, text: str) -> str:
            threads.append(threading.current_thread().name)
            return text

    engine = make_engine(
        {"id": "start", "content": "{{ range .items }}{{ . }}{{ end }}"},
        {"id": "plain", "content": "Hello {{ .name }}"},
        content_converter=Recording(),
    )
    state = State.new("s", "start")
    state.context.update(items=[1, 2], name="Ada")
    assert (await engine.render(state)).actions[0].payload == "12"
    state.current_node_id = "plain"
    assert (await engine.render(state)).actions[0].payload == "Hello Ada"
    assert threads[0].startswith("trellis-eval")
    assert threads[1] == threading.current_thread().name


@pytest.mark.in_process_only(reason="reads the environment of this process")
def test_limits_come_from_the_environment_when_positive_integers() -> None:
    env = {
        "TRELLIS_MAX_CONDITION_COST": "7",
        "TRELLIS_MAX_RANGE_ITERATIONS": " 8 ",
        "TRELLIS_MAX_TEMPLATE_OUTPUT_BYTES": "-1",
        "TRELLIS_MAX_PRINTF_WIDTH": "wide",
    }
    assert EvaluationLimits.from_env(env) == EvaluationLimits(max_condition_cost=7, max_range_iterations=8)
    assert EvaluationLimits.from_env({}) == EvaluationLimits()
