"""`trellis run --watch`: flow files edited while a prompt waits (docs/cli.md, "`--watch`")."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import Interactive, write_flow


def _edit_until_seen(run: Interactive, file: Path, text: str, expected: str) -> None:
    """Write ``text`` until ``expected`` shows: the file watcher may start a little after
    the first prompt, and an edit made before it watches is never reported."""
    for attempt in range(10):
        file.write_text(text + f"<!-- edit {attempt} -->\n")
        if run.saw(expected, guard=3.0):
            return
    raise AssertionError(f"{expected!r} never appeared:\n{run.output}")


def test_edits_are_picked_up_and_a_broken_file_waits_for_a_fix(tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path / "flow",
        {"start.md": "---\nwait: true\nto: end\n---\nVersion one\n", "end.md": "The end: {{ .sys.ans }}\n"},
    )
    run = Interactive("run", str(flow), "--watch")
    run.expect("Version one")
    run.expect("> ")
    _edit_until_seen(run, flow / "start.md", "---\nwait: true\nto: end\n---\nVersion two\n", "Version two")
    _edit_until_seen(run, flow / "start.md", "---\nwait: maybe\n---\nBroken\n", "waiting for a flow file")
    _edit_until_seen(
        run, flow / "start.md", "---\nwait: true\nto: end\n---\nVersion three\n", "Version three"
    )
    run.expect("> ", count=3)
    run.send("bye")
    run.expect("The end: bye")
    result = run.finish()
    assert result.code == 0, result.err
    assert "[trellis] flow files changed: reloaded" in result.out
    assert "[trellis] error: " in result.out and "wait" in result.out
    # Watch mode keeps the session on disk under a name derived from the flow's path.
    saved = list((flow / ".trellis" / "sessions").glob("watch-*.json"))
    assert len(saved) == 1
    assert json.loads(saved[0].read_text())["status"] == "terminated"
