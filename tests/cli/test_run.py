"""`trellis run`: scripted terminal sessions and the JSON-lines mode."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import EXAMPLES, run_cli, write_flow

TOUR = str(EXAMPLES / "tour")


def _in_order(text: str, *parts: str) -> None:
    position = 0
    for part in parts:
        found = text.find(part, position)
        assert found >= 0, f"{part!r} not found after position {position} in:\n{text}"
        position = found + len(part)


def test_tour_walked_through_every_section_in_the_terminal() -> None:
    script = [
        "Ada",  # name
        "1",  # menu by number: drinks
        "milk",  # not an option: no transition matches, asked again
        "coffee",  # hot_drink, back to the menu
        "confirm",
        "maybe",  # not a yes/no answer: asked again
        "n",  # a refusal follows on_denied
        "tool",
        "y",  # allow the tool
        "tool",
        "no",  # deny it: on_denied
        "broken tool",
        "yes",  # the tool fails: on_error
        "shop",
        "pay",
        "greeting",
        "timeout",
        "quick answer",
        "finish",
        "",
    ]
    result = run_cli("run", TOUR, stdin="\n".join(script) + "\n")
    assert result.code == 0, result.err
    _in_order(
        result.out,
        "# Welcome to the trellis tour",
        "What is your name?",
        "(default: traveller) > Ada",
        "  1) drinks",
        "  8) finish",
        "What would you like to drink, Ada?",
        "[trellis] no transition matched that answer",
        "Coffee: bold.",
        "Do you like the tour so far?",
        "invalid confirmation input: 'maybe' (expected y/n/yes/no) Please try again.",
        'Sorry to hear that: your "no" took the `on_denied` edge.',
        "[System] The tour wants to run word_stats on your name. Allow it? [y/N]",
        '[tool] word_stats: {"letters": 3, "vowels": ["A", "a"], "word": "Ada"}',
        'The tool `word_stats` says "Ada" has 3 letter(s).',
        "Vowels: A a.",
        "Nickname: none given.",
        "[tool] word_stats: denied",
        "You denied the tool call",
        "[System] Tool Request: 'word_stats' (ID: word_stats)",
        'Args: {"word": ""}',
        "[tool] word_stats: failed: execution failed: exit status 2. Stderr: word_stats: the word is empty",
        "The tool failed and `on_error` brought you here",
        "## The shop (inside `shop/`)",
        "Receipt printed by node `shop/receipt`.",
        "Hello, Ada! You had coffee earlier. This text was assembled from the `en` messages.",
        "Quick! Type anything within 20 seconds",
        "(within 20s) > quick answer",
        "# Goodbye, Ada",
        "Drink: coffee. Liked the tour: no.",
    )
    assert "Traceback" not in result.err


def test_quit_word_ends_the_run() -> None:
    result = run_cli("run", TOUR, stdin="Ada\nq\n")
    assert result.code == 0
    assert result.out.rstrip().endswith("[trellis] quit")
    assert "What would you like" not in result.out


def test_a_backslash_answers_a_quit_word_as_text(tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path / "flow",
        {
            "start.md": "---\ntype: question\nsave_to: letter\nto: done\n---\nPick a letter\n",
            "done.md": "You typed {{ .letter }}.\n",
        },
    )
    result = run_cli("run", str(flow), stdin="\\q\n")
    assert result.code == 0, result.err
    assert "You typed q." in result.out
    assert "[trellis] quit" not in result.out
    assert result.out.rstrip().endswith("[trellis] session ended at node 'done'")
    # Without the backslash, q still quits.
    quit_run = run_cli("run", str(flow), stdin="q\n")
    assert quit_run.out.rstrip().endswith("[trellis] quit")
    assert "You typed" not in quit_run.out


def test_end_of_input_ends_the_run_cleanly() -> None:
    result = run_cli("run", TOUR, stdin="Ada\n")
    assert result.code == 0
    assert "[trellis] end of input" in result.out


def test_context_seeds_a_new_session() -> None:
    result = run_cli("run", TOUR, "-c", "visits=2", "--context", "guide=Grace", stdin="q\n")
    assert result.code == 0, result.err
    assert "I am Grace, your guide." in result.out
    assert "Welcome back: you have been here 2 time(s)." in result.out


def test_context_of_the_wrong_type_is_a_clean_error_naming_file_and_field() -> None:
    result = run_cli("run", TOUR, "-c", "visits=many", stdin="Ada\ndrinks\n")
    assert result.code == 1
    assert result.err.startswith("Error: ")
    # The entry's template compares visits with a number: it names its file, field and place.
    assert "tour/start.md:content:5:7" in result.err
    assert "incompatible types for comparison" in result.err
    assert "Traceback" not in result.err


def test_context_schema_is_checked_before_a_node_renders() -> None:
    result = run_cli("run", TOUR, "-c", "visits=1.5", stdin="Ada\ndrinks\n")
    assert result.code == 1
    assert "Node 'drink' has invalid context types" in result.err
    assert "visits" in result.err


def test_locale_picks_the_messages_of_format_nodes() -> None:
    result = run_cli("run", TOUR, "--locale", "pt", stdin="Ada\ngreeting\nq\n")
    assert result.code == 0, result.err
    assert "Olá, Ada! Este texto veio das mensagens `pt`." in result.out


def test_control_characters_are_removed_and_oversized_input_is_refused() -> None:
    result = run_cli(
        "run", TOUR, stdin="A\x1bd\x07a\n" + "x" * 50 + "\nq\n", env={"TRELLIS_MAX_INPUT_SIZE": "20"}
    )
    assert result.code == 0, result.err
    assert "Ada, pick a part of the tour" in result.out
    assert "input exceeds maximum allowed size: size=50 limit=20 Please try again." in result.out


def test_json_mode_walks_the_tour() -> None:
    lines = [
        "Ada",
        '{"input": "drinks"}',
        '"tea"',
        '{"signal": "interrupt"}',  # handled by the entry node's on_signal_default
        "no",  # stay in the tour
        "tool",  # tools run without confirmation in this mode
        "finish",
        "",
    ]
    result = run_cli("run", TOUR, "--json", stdin="\n".join(lines) + "\n")
    assert result.code == 0, result.err
    objects = result.json_lines()
    steps = [o for o in objects if o["type"] == "step"]
    assert [s["node"] for s in steps] == [
        "ask_name",
        "menu",
        "drink",
        "menu",
        "interrupted",
        "menu",
        "word_stats",
        "menu",
        "finish",
    ]
    first = steps[0]["actions"]
    assert first[0]["type"] == "RENDER_CONTENT"
    assert first[0]["payload"].startswith("# Welcome to the trellis tour")
    assert first[-1] == {
        "type": "REQUEST_INPUT",
        "payload": {"type": "text", "options": [], "default": "traveller", "timeout_seconds": 0.0},
    }
    assert steps[6]["status"] == "waiting_for_tool"
    assert steps[6]["actions"][-1]["payload"]["args"] == {"word": "Ada"}
    tools = [o for o in objects if o["type"] == "tool"]
    assert len(tools) == 1
    assert tools[0]["result"]["result"] == {"word": "Ada", "letters": 3, "vowels": ["A", "a"]}
    end = objects[-1]
    assert end["type"] == "end"
    assert end["status"] == "terminated"
    assert end["context"]["drink"] == "tea"
    assert end["context"]["stats"]["letters"] == 3
    assert end["history"][:4] == ["start", "ask_name", "menu", "drink"]


def test_json_mode_reports_bad_commands_and_asks_again() -> None:
    lines = ['{"bogus": 1}', '{"input": ', '{"signal": "nobody_listens"}', "Ada", '{"quit": true}']
    result = run_cli("run", TOUR, "--json", stdin="\n".join(lines) + "\n")
    assert result.code == 0, result.err
    errors = [o for o in result.json_lines() if o["type"] == "error"]
    assert [e["retry"] for e in errors] == [True, True, True]
    assert "unknown command" in errors[0]["message"]
    assert errors[2]["message"] == (
        "signal 'nobody_listens' is not handled by node 'ask_name' or the entry node"
    )
    assert result.json_lines()[-1]["reason"] == "quit"


UNDECLARED_TOOL_FLOW = {
    "start.md": (
        "---\ndo:\n  name: ask_human\n  args:\n    q: hi\nsave_to: answer\non_error: failed\nto: done\n---\n"
    ),
    "done.md": "Answer: {{ .answer }}\n",
    "failed.md": "The tool failed.\n",
}


def test_json_mode_lets_the_program_answer_undeclared_tools(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", UNDECLARED_TOOL_FLOW)
    result = run_cli(
        "run", str(flow), "--json", stdin='not a result\n{"tool_result": {"id": "ask_human", "result": 42}}\n'
    )
    assert result.code == 0, result.err
    objects = result.json_lines()
    assert objects[0]["actions"][-1]["type"] == "CALL_TOOL"
    assert objects[1]["type"] == "error" and objects[1]["retry"] is True
    assert objects[2]["actions"] == [{"type": "RENDER_CONTENT", "payload": "Answer: 42\n"}]
    assert objects[-1]["type"] == "end"


def test_terminal_mode_fails_undeclared_tools_into_on_error(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", UNDECLARED_TOOL_FLOW)
    result = run_cli("run", str(flow))
    assert result.code == 0, result.err
    assert "[tool] ask_human: failed: tool 'ask_human' is not declared in tools.yaml" in result.out
    assert "The tool failed." in result.out


def test_unhandled_tool_error_is_a_clean_error(tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path / "flow",
        {
            "start.md": "---\ndo:\n  name: fails\n---\n",
            "tools.yaml": "tools:\n  - name: fails\n    command: 'false'\n",
        },
    )
    result = run_cli("run", str(flow), "--yes")
    assert result.code == 1
    assert result.err.startswith("Error: tool 'fails' failed in node 'start': execution failed")
    assert "Traceback" not in result.err
    as_json = run_cli("run", str(flow), "--json")
    assert as_json.code == 1
    assert as_json.json_lines()[-1]["reason"] == "UNHANDLED_TOOL_ERROR"


def test_inline_tools_need_unsafe_inline(tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path / "flow",
        {
            "start.md": (
                "---\ndo:\n  name: say\n  metadata:\n    x-exec:\n      command: echo\n"
                "      args: [inline, works]\non_error: refused\nto: done\n---\n"
            ),
            "done.md": "Said: {{ .sys.ans }}\n",
            "refused.md": "Inline execution refused.\n",
        },
    )
    refused = run_cli("run", str(flow), "--yes")
    assert refused.code == 0, refused.err
    assert "Inline execution refused." in refused.out
    allowed = run_cli("run", str(flow), "--yes", "--unsafe-inline")
    assert allowed.code == 0, allowed.err
    assert "Said: inline works" in allowed.out


def test_node_without_input_or_matching_transition_asks_for_text(tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path / "flow",
        {
            "start.md": "---\ntransitions:\n  - to: end\n    condition: input == 'go'\n---\nType go.\n",
            "end.md": "Gone.\n",
        },
    )
    result = run_cli("run", str(flow), stdin="stay\ngo\n")
    assert result.code == 0, result.err
    _in_order(
        result.out,
        "Type go.",
        "[trellis] node 'start' has no transition without input",
        "> stay",
        "[trellis] no transition matched that answer",
        "> go",
        "Gone.",
    )


def test_original_tour_in_a_read_only_place_runs_without_saving(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", {"start.md": "---\nwait: true\n---\nHi {{ .who }}\n"})
    flow.chmod(0o555)
    try:
        result = run_cli("run", str(flow), "-c", "who=you", stdin="\n")
    finally:
        flow.chmod(0o755)
    assert result.code == 0, result.err
    assert "Hi you" in result.out
    assert not (flow / ".trellis").exists()


TOOL_FLOW = {
    "start.md": "---\ndo:\n  name: hello\nsave_to: said\nto: done\n---\n",
    "done.md": "Said {{ .said }}\n",
}


def test_tools_json_is_the_registry_when_there_is_no_tools_yaml(tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path / "flow",
        {
            **TOOL_FLOW,
            "tools.json": '{"tools": [{"name": "hello", "command": "echo", "args": ["from json"]}]}',
        },
    )
    result = run_cli("run", str(flow), "--yes")
    assert result.code == 0, result.err
    assert "Said from json" in result.out


def test_tools_option_points_at_another_registry(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", TOOL_FLOW)
    registry = tmp_path / "elsewhere.yaml"
    registry.write_text("tools:\n  - name: hello\n    command: echo\n    args: [from elsewhere]\n")
    result = run_cli("run", str(flow), "--yes", "--tools", str(registry))
    assert result.code == 0, result.err
    assert "Said from elsewhere" in result.out
    broken = tmp_path / "broken.yaml"
    broken.write_text("tools: {not: a list}\n")
    bad = run_cli("run", str(flow), "--tools", str(broken))
    assert bad.code == 1
    assert bad.err.startswith("Error: ") and "broken.yaml" in bad.err and "tools" in bad.err
