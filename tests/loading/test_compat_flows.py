"""Every flow written for the Go original loads unchanged (list_nodes + get_node of each node)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.compat_flows import FLOWS, require_flows
from trellis.adapters.directory_loader import DirectoryLoader, entry_node_id
from trellis.domain import Node, Tool, ToolCall, Transition
from trellis.loading import NODE_EXTENSIONS


def _flow_roots() -> list[Path]:
    """Directories holding node files directly, outermost only (sub-graphs belong to their flow)."""
    if not FLOWS.is_dir():
        return []
    roots: list[Path] = []
    for directory, dirnames, filenames in os.walk(FLOWS):
        dirnames.sort()
        here = Path(directory)
        if any(name.endswith(NODE_EXTENSIONS) for name in filenames):
            roots.append(here)
            dirnames.clear()  # nested folders are sub-graphs of this flow
    return roots


@pytest.mark.parametrize(
    "root", _flow_roots() or [None], ids=lambda p: p.relative_to(FLOWS).as_posix() if p else "none"
)
async def test_every_node_of_every_flow_loads(root: Path | None) -> None:
    require_flows()
    assert root is not None
    loader = DirectoryLoader(root)
    ids = await loader.list_nodes()
    assert ids, f"{root} has no nodes"
    for node_id in ids:
        node = await loader.get_node(node_id)
        assert node.id == node_id
    assert entry_node_id(root) in ids


async def load(flow: str) -> dict[str, Node]:
    require_flows()
    loader = DirectoryLoader(FLOWS / flow)
    return {node_id: await loader.get_node(node_id) for node_id in await loader.list_nodes()}


async def test_tour() -> None:
    nodes = await load("tour")
    assert sorted(nodes) == ["choice", "inputs", "start", "success", "try-again"]
    choice = nodes["choice"]
    assert choice.type == "question"
    assert choice.transitions == (
        Transition("success", "input == 'yes'"),
        Transition("try-again", "input == 'no'"),
    )
    assert choice.content.startswith("You have reached a crossroads (defined in JSON).")
    start = nodes["start"]
    assert start.input_type == "choice" and start.input_options == ("Inputs",)
    assert start.transitions == (Transition("inputs", "input == 'Inputs'"), Transition("choice", ""))
    assert start.content.startswith("# Welcome to Trellis Tour\n")
    inputs = nodes["inputs"]
    assert inputs.input_type == "choice"
    assert inputs.input_options == ("Go to End", "Go Loop")
    assert inputs.input_default == "Go to End"
    assert nodes["success"].wait and nodes["success"].transitions == ()
    assert nodes["try-again"].transitions == (Transition("start", ""),)


async def test_confirm_demo() -> None:
    start = (await load("confirm-demo"))["start"]
    assert (start.input_type, start.input_options, start.input_default) == ("confirm", ("yes", "no"), "no")
    assert start.on_denied == "refused"


async def test_signals_demo() -> None:
    nodes = await load("signals-demo")
    timeout_test = nodes["timeout_test"]
    assert timeout_test.on_signal == {"timeout": "timeout_received"}
    assert timeout_test.timeout == "5s"
    assert nodes["interrupt_test"].on_signal == {"interrupt": "signal_received"}


async def test_typed_flow_schema() -> None:
    start = (await load("typed-flow"))["start"]
    assert start.type == "start"
    assert start.context_schema == {"api_key": "string", "retries": "int", "tags": "[string]"}


async def test_inline_tool_metadata_is_flattened() -> None:
    start = (await load("inline-tool-demo"))["start"]
    assert start.do == ToolCall(
        id="get_os", name="get_os", metadata={"x-exec-command": "go", "x-exec-args": "env GOOS"}
    )


async def test_subgraph_ids_and_targets() -> None:
    nodes = await load("subgraph-demo")
    assert sorted(nodes) == ["modules/checkout/start", "start"]
    assert nodes["start"].transitions == (Transition("modules/checkout/start", "input == 'Go to Checkout'"),)
    assert nodes["modules/checkout/start"].transitions == (Transition("start", "input == 'Back to Root'"),)


async def test_mixed_formats_explicit_json_id() -> None:
    nodes = await load("_tests/specs/mixed-formats")
    assert sorted(nodes) == ["choice", "end", "start"]
    assert nodes["choice"].transitions == (Transition("end", ""),)
    assert nodes["start"].transitions == (Transition("choice", ""),)


async def test_saga_flows_have_undo_ids() -> None:
    hotel = (await load("compensation-native"))["01_hotel"]
    assert hotel.undo == ToolCall(id="cancel_hotel", name="cancel_hotel", args={"id": "{{ .hotel.id }}"})
    assert hotel.save_to == "hotel"


async def test_reactivity_demo_defaults_and_tools_library() -> None:
    nodes = await load("reactivity-demo")
    assert nodes["start"].on_signal_default == {"quit": "finish", "interrupt": "catch-interrupt"}
    assert nodes["menu"].input_options == ("1", "2", "3")
    assert [t.name for t in nodes["tools"].tools] == ["get_weather", "increment"]
    assert nodes["tools"].tools[1] == Tool(name="increment", description="Increment a number")


async def test_default_context_keeps_value_types() -> None:
    start = (await load("default-context-demo"))["start"]
    assert start.default_context == {
        "api_url": "http://localhost:8080",
        "user_role": "guest",
        "retries": 3,
        "debug_mode": True,
    }


async def test_format_node_messages() -> None:
    start = (await load("_tests/fixtures/i18n_markdown"))["start"]
    assert start.type == "format"
    assert [item.condition for item in start.messages["en"]] == ["", "input == 'new'", "input != 'new'", ""]
    assert start.messages["pt"][0].text == "# Bem-vindo ao Trellis\n"
    assert start.content == "\n# Fallback Welcome\nWhat is your name?\n"


async def test_extra_separators_stay_in_the_body() -> None:
    start = (await load("observability-introspection"))["start"]
    assert start.transitions == (Transition("step2", ""),)
    assert "id: step2" in start.content
