"""What compiling a node reports and where: template names in errors, and the
warning for a timeout only a hand-built Node can carry (files are checked earlier)."""

from __future__ import annotations

import logging

import pytest

from trellis.adapters.memory_loader import MemoryLoader
from trellis.domain import Node
from trellis.engine import Engine
from trellis.engine.compiled import CompiledNode
from trellis.errors import TemplateError

from .helpers import make_engine


async def test_a_broken_tool_argument_template_is_named_by_its_file() -> None:
    broken = {"id": "start", "do": {"name": "t", "args": {"a": "{{ .x "}}, "to": "end"}
    engine = make_engine(broken, {"id": "end"})
    with pytest.raises(TemplateError, match=r"<memory:start>:do\.args\.a:1:1: unclosed action"):
        # Over gRPC the start already renders; in process the render does.
        await engine.render(await engine.start("s", None))


@pytest.mark.in_process_only(reason="hands the engine a logger")
def test_an_invalid_timeout_is_ignored_with_a_warning_on_the_engines_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = Node(id="x", wait=True, timeout="soon")
    with caplog.at_level(logging.WARNING):
        compiled = CompiledNode(node, logger=logging.getLogger("mine"))
        CompiledNode(node)
    assert compiled.timeout == 0.0  # no timeout
    warnings = [(r.name, r.getMessage()) for r in caplog.records]
    assert warnings == [
        ("mine", "node x: invalid timeout 'soon' ignored"),
        ("trellis.engine", "node x: invalid timeout 'soon' ignored"),
    ]


@pytest.mark.in_process_only(reason="hands the engine a logger")
async def test_the_engine_logs_on_the_logger_it_was_given(caplog: pytest.LogCaptureFixture) -> None:
    loader = MemoryLoader([Node(id="start", wait=True, timeout="soon")])
    engine = Engine(loader, logger=logging.getLogger("mine"))
    with caplog.at_level(logging.WARNING):
        await engine.start("s", None)
    warnings = [(r.name, r.getMessage()) for r in caplog.records]
    assert ("mine", "node start: invalid timeout 'soon' ignored") in warnings


@pytest.mark.in_process_only(reason="hands the engine a logger")
async def test_on_signal_default_outside_the_entry_node_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nodes = [
        Node(id="start", wait=True, on_signal_default={"interrupt": "other"}),
        Node(id="other", wait=True, on_signal_default={"interrupt": "start"}),
    ]
    engine = Engine(MemoryLoader(nodes), logger=logging.getLogger("mine"))
    with caplog.at_level(logging.WARNING):
        await engine.compiled("start")
        await engine.compiled("other")
    warnings = [(r.name, r.getMessage()) for r in caplog.records]
    assert warnings == [
        ("mine", "node other defines on_signal_default, which is only honoured on the entry node start")
    ]
