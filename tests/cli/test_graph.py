"""`trellis graph`: Mermaid output (docs/cli.md, "`trellis graph DIR`") and the push/pull routing."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import run_cli, write_flow

FLOW = {
    "start.md": (
        "---\noptions:\n  - text: Shop\n    to: shop/cart\nto: ask\non_signal:\n  interrupt: bye\n"
        "on_signal_default:\n  timeout: bye\non_denied: bye\n---\nHi\n"
    ),
    "ask.md": (
        "---\ntype: question\ntimeout: 5s\non_timeout: bye\n"
        'transitions:\n  - to: bye\n    condition: input == "x"\n---\nQ\n'
    ),
    "bye.md": "Bye\n",
    "shop/cart.md": "---\ndo:\n  name: pay\ntype: tool\nto: start\non_error: bye\n---\n",
    "tools.yaml": "tools:\n  - name: pay\n    command: 'true'\n",
}

EXPECTED = """graph TD
    ask[/"ask <br/> ⏱️ 5s"/]
    ask -- "input == 'x'" --> bye
    ask -. ⚡ timeout .-> bye
    bye["bye"]
    shop_cart[["shop/cart"]]
    shop_cart -.-> start
    shop_cart -. on_error .-> bye
    start(("start"))
    start -. "input == 'Shop'" .-> shop_cart
    start --> ask
    start -. ⚡ interrupt .-> bye
    start -. "⚡ timeout (default)" .-> bye
    start -. on_denied .-> bye
"""


def test_mermaid_for_a_flow(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", FLOW)
    result = run_cli("graph", str(flow))
    assert result.code == 0, result.err
    # Sorted nodes; the tool registry (tools.yaml) is not a node of the drawing.
    assert result.out == EXPECTED


def test_overlay_of_a_saved_session(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", FLOW)
    sessions = flow / ".trellis" / "sessions"
    sessions.mkdir(parents=True)
    state = {
        "session_id": "s1",
        "current_node_id": "ask",
        "status": "active",
        "context": {},
        "system_context": {},
        "history": ["start", "ask", "start", "ask"],
        "revision": 1,
    }
    (sessions / "s1.json").write_text(json.dumps(state))
    result = run_cli("graph", str(flow), "--session", "s1")
    assert result.code == 0, result.err
    assert result.out.startswith(EXPECTED)
    assert result.out[len(EXPECTED) :] == (
        "\n    %% Overlay Styles\n"
        "    classDef visited fill:#e1f5fe,stroke:#01579b,stroke-width:2px,color:#000;\n"
        "    classDef current fill:#ffeb3b,stroke:#fbc02d,stroke-width:4px,color:#000;\n"
        "    class start visited;\n"
        "    class ask visited;\n"
        "    class ask current;\n"
    )


def test_overlay_of_a_missing_session_is_an_error(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", FLOW)
    result = run_cli("graph", str(flow), "--session", "nope")
    assert result.code == 1
    assert "session 'nope' not found" in result.err


def test_broken_node_is_reported_not_drawn(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", {"start.md": "---\nwait: maybe\n---\n"})
    result = run_cli("graph", str(flow))
    assert result.code == 1
    assert result.err.startswith("Error: ")
    assert "start.md" in result.err and "wait" in result.err
    assert "Traceback" not in result.err


def test_push_and_pull_go_to_the_etcd_publisher() -> None:
    result = run_cli("graph", "push", "--help")
    # Either the etcd publisher answers, or a clear message says it is not installed.
    if result.code == 0:
        assert "etcd" in result.out.lower()
    else:
        assert result.err.startswith("Error: 'trellis graph push' needs the etcd support")


def test_every_node_of_the_tour_is_connected() -> None:
    """The tour's nodes reached only through a default signal handler, ``on_error`` or
    ``on_denied`` (interrupted, declined, tool_denied, tool_failed) have an edge in."""
    result = run_cli("graph", "examples/tour")
    assert result.code == 0, result.err
    edges = [line.split() for line in result.out.splitlines() if ".->" in line or "-->" in line]
    targets = {words[-1] for words in edges}
    assert {"interrupted", "declined", "tool_denied", "tool_failed"} <= targets
    assert '    start -. "⚡ interrupt (default)" .-> interrupted' in result.out.splitlines()
    assert "    word_stats -. on_denied .-> tool_denied" in result.out.splitlines()
    assert "    broken_tool -. on_error .-> tool_failed" in result.out.splitlines()
