"""Saved sessions: `run --session` (resume, --fresh, --store-dir) and `session ls|show|rm`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import copy_example, run_cli


def test_a_session_is_saved_in_the_flow_directory_and_resumed(tmp_path: Path) -> None:
    tour = copy_example("tour", tmp_path)
    first = run_cli("run", str(tour), "--session", "me", stdin="Ada\nq\n")
    assert first.code == 0, first.err
    saved = tour / ".trellis" / "sessions" / "me.json"
    assert json.loads(saved.read_text())["current_node_id"] == "menu"

    second = run_cli("run", str(tour), "--session", "me", "-c", "visits=9", stdin="drinks\ntea\nq\n")
    assert second.code == 0, second.err
    assert "[trellis] --context is ignored: session 'me' already exists" in second.out
    assert "[trellis] resuming session 'me' at node 'menu'" in second.out
    assert "What is your name?" not in second.out
    assert "Tea it is: a calm choice." in second.out
    state = json.loads(saved.read_text())
    assert state["context"]["name"] == "Ada"
    assert state["context"]["drink"] == "tea"
    assert state["context"]["visits"] == 0


def test_fresh_starts_over(tmp_path: Path) -> None:
    tour = copy_example("tour", tmp_path)
    assert run_cli("run", str(tour), "-s", "me", stdin="Ada\nq\n").code == 0
    again = run_cli("run", str(tour), "-s", "me", "--fresh", "-c", "guide=Grace", stdin="q\n")
    assert again.code == 0, again.err
    assert "resuming" not in again.out
    assert "I am Grace, your guide." in again.out
    state = json.loads((tour / ".trellis" / "sessions" / "me.json").read_text())
    assert state["current_node_id"] == "ask_name"
    assert "name" not in state["context"]


def test_ended_session_says_so(tmp_path: Path) -> None:
    tour = copy_example("tour", tmp_path)
    assert run_cli("run", str(tour), "-s", "done", stdin="Ada\nfinish\n\n").code == 0
    again = run_cli("run", str(tour), "-s", "done")
    assert again.code == 0
    assert "this session has already ended (use --fresh to start over)" in again.out


def test_store_dir_is_shared_by_run_and_session_commands(tmp_path: Path) -> None:
    tour = copy_example("tour", tmp_path)
    store = tmp_path / "elsewhere"
    assert run_cli("run", str(tour), "-s", "a", "--store-dir", str(store), stdin="Ada\nq\n").code == 0
    assert (store / "a.json").is_file()
    assert not (tour / ".trellis").exists()
    listing = run_cli("session", "ls", "--dir", str(tour), "--store-dir", str(store), "--json")
    assert json.loads(listing.out) == [{"id": "a", "node": "menu", "status": "active"}]


def test_session_ls_show_rm(tmp_path: Path) -> None:
    tour = copy_example("tour", tmp_path)
    empty = run_cli("session", "ls", "--dir", str(tour))
    assert empty.code == 0
    assert empty.out.strip() == "No active sessions found."
    assert run_cli("run", str(tour), "-s", "alpha", stdin="Ada\nq\n").code == 0
    assert run_cli("run", str(tour), "-s", "beta", stdin="q\n").code == 0

    listing = run_cli("session", "ls", "--dir", str(tour))
    assert listing.code == 0
    rows = [line.split() for line in listing.out.splitlines()]
    assert rows == [["alpha", "active", "menu"], ["beta", "active", "ask_name"]]

    shown = run_cli("session", "show", "alpha", "--dir", str(tour))
    assert shown.code == 0
    state = json.loads(shown.out)
    assert state["session_id"] == "alpha"
    assert state["history"] == ["start", "ask_name", "menu"]
    assert state["revision"] >= 1

    removed = run_cli("session", "rm", "alpha", "ghost", "--dir", str(tour))
    assert removed.code == 1
    assert "Removed session 'alpha'" in removed.out
    assert "Error: session 'ghost' not found" in removed.err
    assert json.loads(run_cli("session", "ls", "--dir", str(tour), "--json").out) == [
        {"id": "beta", "node": "ask_name", "status": "active"}
    ]


def test_show_of_a_missing_or_unsafe_session_is_a_clean_error(tmp_path: Path) -> None:
    missing = run_cli("session", "show", "nope", "--dir", str(tmp_path))
    assert missing.code == 1
    assert missing.err.strip() == "Error: session 'nope' not found"
    unsafe = run_cli("session", "show", "../../etc/passwd", "--dir", str(tmp_path))
    assert unsafe.code == 1
    assert unsafe.err.startswith("Error: ")
    assert "Traceback" not in unsafe.err


def test_resume_drops_a_pending_call_whose_node_no_longer_calls_a_tool(tmp_path: Path) -> None:
    tour = copy_example("tour", tmp_path)
    # Quit at the tool's confirmation prompt: the session waits for word_stats.
    assert run_cli("run", str(tour), "-s", "t", stdin="Ada\ntool\nq\n").code == 0
    state = json.loads((tour / ".trellis" / "sessions" / "t.json").read_text())
    assert state["status"] == "waiting_for_tool"
    # The node is edited: no more `do`. The runner must not wait for the old call.
    (tour / "word_stats.md").write_text("---\nto: menu\n---\nNo tool any more.\n")
    resumed = run_cli("run", str(tour), "-s", "t", stdin="q\n")
    assert resumed.code == 0, resumed.err
    assert (
        "[trellis] node 'word_stats' no longer calls a tool: dropped pending call 'word_stats'" in resumed.out
    )
    assert "No tool any more." in resumed.out
    assert json.loads((tour / ".trellis" / "sessions" / "t.json").read_text())["current_node_id"] == "menu"


def test_resume_keeps_a_pending_call_whose_node_still_has_do(tmp_path: Path) -> None:
    tour = copy_example("tour", tmp_path)
    assert run_cli("run", str(tour), "-s", "t", stdin="Ada\ntool\nq\n").code == 0
    resumed = run_cli("run", str(tour), "-s", "t", stdin="y\nq\n")
    assert resumed.code == 0, resumed.err
    assert "dropped pending call" not in resumed.out
    assert 'The tool `word_stats` says "Ada" has 3 letter(s).' in resumed.out
