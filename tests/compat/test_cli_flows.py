"""The original's flows through the real command line (JSON-lines mode)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import run_cli
from tests.support.compat_flows import FLOWS, require_flows

pytestmark = pytest.mark.in_process_only(reason="runs the command line, which opens the flow itself")


@pytest.fixture(scope="module", autouse=True)
def flows() -> Path:
    return require_flows()


def test_original_tour_through_the_cli_in_json_mode() -> None:
    lines = ["", "no", "", "Inputs", "", ""]  # choice, try-again, start, inputs, success, end
    result = run_cli("run", str(FLOWS / "tour"), "--json", stdin="\n".join(lines) + "\n")
    assert result.code == 0, result.err
    objects = result.json_lines()
    steps = [o for o in objects if o["type"] == "step"]
    assert [s["node"] for s in steps] == ["start", "choice", "try-again", "start", "inputs", "success"]
    assert steps[4]["actions"][-1]["payload"]["default"] == "Go to End"
    assert objects[-1]["type"] == "end"
    assert objects[-1]["history"] == ["start", "choice", "try-again", "start", "inputs", "success"]
    # Nothing was written into the shared flows (no --session: memory only).
    assert not (FLOWS / "tour" / ".trellis").exists()


def test_original_flows_validate_through_the_cli() -> None:
    good = run_cli("validate", str(FLOWS / "reactivity-demo"))
    assert good.code == 0, good.out
    assert good.out.strip() == "Flow is valid: 8 nodes, entry 'start'."
    broken = run_cli("validate", str(FLOWS / "observability-introspection"))
    assert broken.code == 1
    assert (
        "error: observability-introspection/start.md: transitions[0].to: target node 'step2' does not exist"
        in broken.out
    )


def test_original_signals_demo_graph() -> None:
    result = run_cli("graph", str(FLOWS / "signals-demo"))
    assert result.code == 0, result.err
    assert '    timeout_test[/"timeout_test <br/> ⏱️ 5s"/]' in result.out
    assert "    timeout_test -. ⚡ timeout .-> timeout_received" in result.out
    assert "    start -- \"input == 'Test Timeout'\" --> timeout_test" in result.out
