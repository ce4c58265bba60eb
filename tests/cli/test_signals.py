"""Ctrl+C and input deadlines while `trellis run` waits (docs/engine.md, "Signals and timeouts")."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import EXAMPLES, Interactive, write_flow


def test_ctrl_c_goes_to_the_entry_nodes_interrupt_handler() -> None:
    run = Interactive("run", str(EXAMPLES / "tour"))
    run.expect("(default: traveller) > ")
    run.send("Ada")
    run.expect("(default: finish) > ")
    run.interrupt()
    run.expect("Leave the tour?")
    run.send("no")  # back to the menu
    run.expect("(default: finish) > ", count=2)
    run.send("q")
    result = run.finish()
    assert result.code == 0, result.err
    assert "You pressed Ctrl+C. The entry node's `on_signal_default` brought you here." in result.out


def test_ctrl_c_on_a_node_with_its_own_handler() -> None:
    run = Interactive("run", str(EXAMPLES / "tour"))
    run.expect("(default: traveller) > ")
    run.send("Ada")
    run.expect("(default: finish) > ")
    run.send("timeout")
    run.expect("(within 20s) > ")
    run.interrupt()
    run.expect("handled by its own `on_interrupt`")
    run.send("q")
    result = run.finish()
    assert result.code == 0, result.err


def test_unhandled_ctrl_c_exits_130(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", {"start.md": "---\nwait: true\n---\nWaiting.\n"})
    run = Interactive("run", str(flow))
    run.expect("> ")
    run.interrupt()
    result = run.finish()
    assert result.code == 130
    assert "[trellis] interrupted" in result.out
    assert "Traceback" not in result.err


def test_ctrl_c_at_a_tool_confirmation_denies_the_call() -> None:
    run = Interactive("run", str(EXAMPLES / "tour"))
    run.expect("(default: traveller) > ")
    run.send("Ada")
    run.expect("(default: finish) > ")
    run.send("tool")
    run.expect("(y/N) > ")
    run.interrupt()
    run.expect("You denied the tool call")
    run.send("q")
    result = run.finish()
    assert result.code == 0, result.err


TIMED = {
    "start.md": "---\ntype: question\ntimeout: 300ms\non_timeout: late\nto: early\n---\nQuick!\n",
    "late.md": "Too late.\n",
    "early.md": "In time.\n",
}


def test_deadline_sends_the_timeout_signal(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", TIMED)
    run = Interactive("run", str(flow))
    run.expect("Too late.")  # nothing is typed: the deadline passes
    result = run.finish()
    assert result.code == 0, result.err
    assert "(within 300ms) > " in result.out
    assert "In time." not in result.out


def test_unhandled_deadline_is_an_error(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", {"start.md": "---\ntype: question\ntimeout: 200ms\n---\nQuick!\n"})
    run = Interactive("run", str(flow))
    result = run.finish()
    assert result.code == 1
    assert result.err.strip() == "Error: timeout exceeded and no 'on_signal.timeout' handler defined"
