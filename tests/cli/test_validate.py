"""`trellis validate`: every problem, with its file and field; exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import EXAMPLES, run_cli, write_flow

BROKEN = {
    "start.md": (
        "---\n"
        "options:\n  - text: Go\n    to: middle\n"
        "on_signal_default:\n  interrupt: nowhere_default\n"
        "---\nHello {{ .name\n"
    ),
    "middle.md": (
        "---\n"
        "wait: true\n"
        "do:\n  name: work\n  args:\n    x: '{{ if }}'\n"
        "on_error: missing_error\n"
        "on_denied: rollback\n"
        "on_signal:\n  interrupt: rollback\n"
        "transitions:\n"
        "  - to: end\n    condition: \"input ==== 'x'\"\n"
        "  - to: gone\n"
        "---\n"
    ),
    "end.md": "---\ntype: tool\n---\nThe end\n",
    "bad_type.md": "---\nwait: maybe\n---\n",
    "schema.md": "---\ncontext_schema:\n  when: date\n---\n",
    "slow.md": "---\nwait: true\ntimeout: 5 minutes\n---\n",
    "bad_yaml.yaml": "key: [unclosed\n",
    "twin.md": "A\n",
    "twin.json": '{"content": "B"}',
    "cycle_a.md": "---\ntools: [cycle_b]\n---\n",
    "cycle_b.md": "---\ntools: [cycle_a]\n---\n",
    "greet.json": json.dumps(
        {
            "type": "format",
            "messages": {"en": [{"text": "{{ range .x }}"}, {"text": "x", "condition": "a +"}]},
        }
    ),
}

# (file, field) of every problem the broken flow has.
EXPECTED_ERRORS = {
    ("flow/start.md", "content"),
    ("flow/start.md", "on_signal_default.interrupt"),
    ("flow/middle.md", "do.args.x"),
    ("flow/middle.md", "on_error"),
    ("flow/middle.md", "on_signal.interrupt"),
    ("flow/slow.md", "timeout"),
    ("flow/schema.md", "context_schema.when"),
    ("flow/middle.md", "transitions[0].condition"),
    ("flow/middle.md", "transitions[1].to"),
    ("flow/middle.md", "do"),
    ("flow/end.md", "type"),
    ("flow/bad_type.md", "wait"),
    ("flow/bad_yaml.yaml", ""),
    ("flow", "id"),  # twin.md + twin.json collide
    ("flow/greet.json", "messages['en']"),
    ("flow/greet.json", "messages['en'][1].condition"),
}


def _report(flow: Path, *extra: str) -> tuple[int, dict[str, object]]:
    result = run_cli("validate", str(flow), "--json", *extra)
    return result.code, json.loads(result.out)


def test_every_problem_is_reported_with_file_and_field(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", BROKEN)
    code, report = _report(flow)
    assert code == 1
    assert report["valid"] is False
    errors = report["errors"]
    assert isinstance(errors, list)
    found = {(e["file"], e["field"]) for e in errors}
    assert EXPECTED_ERRORS <= found, EXPECTED_ERRORS - found
    # A tool import cycle fails loading one of the two nodes, naming the cycle.
    assert any("cycle" in e["message"] and e["file"].startswith("flow/cycle_") for e in errors)
    # `rollback` is not a node: on_denied: rollback is fine, the signal target is not.
    assert not any(e["field"] == "on_denied" for e in errors)
    assert any("twin" in e["message"] and "collision" in e["message"] for e in errors)


def test_text_report_names_file_and_field(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", BROKEN)
    result = run_cli("validate", str(flow))
    assert result.code == 1
    lines = result.out.splitlines()
    assert (
        'error: flow/slow.md: timeout: expected a duration such as "30s" or "1m30s", got "5 minutes"' in lines
    )
    assert "error: flow/middle.md: transitions[1].to: target node 'gone' does not exist" in lines
    assert any(line.startswith("error: flow/bad_type.md: wait: ") for line in lines)
    assert "error: flow/start.md: content: invalid template at line 1, column 7: unclosed action" in lines
    assert lines[-1].startswith("Validation failed: ")
    assert "Traceback" not in result.err


def test_valid_flow_prints_a_summary(tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path / "flow",
        {"start.md": "---\nto: end\n---\nHi {{ .name }}\n", "end.md": "---\nwait: true\n---\nBye\n"},
    )
    result = run_cli("validate", str(flow))
    assert result.code == 0, result.out
    assert result.out.strip() == "Flow is valid: 2 nodes, entry 'start'."


def test_unreachable_nodes_warn_and_fail_only_when_strict(tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path / "flow",
        {
            "start.md": "---\nto: end\non_error: oops\n---\n",
            "end.md": "Bye\n",
            "oops.md": "Reached through on_error\n",
            "orphan.md": "Nobody comes here\n",
            "error.md": "The default error node is reachable implicitly\n",
        },
    )
    code, report = _report(flow)
    assert code == 0
    warnings = report["warnings"]
    assert isinstance(warnings, list)
    assert [(w["file"], w["message"]) for w in warnings] == [
        ("flow/orphan.md", "node 'orphan' is not reachable from 'start'")
    ]
    code, report = _report(flow, "--strict")
    assert code == 1
    assert report["valid"] is False


def test_entry_falls_back_to_main(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", {"main.md": "---\nto: end\n---\n", "end.md": "x\n"})
    code, report = _report(flow)
    assert code == 0
    assert report["entry"] == "main"
    assert report["nodes"] == 2


def test_missing_entry_is_an_error(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", {"other.md": "x\n"})
    code, report = _report(flow)
    assert code == 1
    errors = report["errors"]
    assert isinstance(errors, list)
    assert errors[0]["message"] == "entry node 'start' not found"


def test_undeclared_tool_is_a_warning(tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path / "flow",
        {
            "start.md": "---\ndo:\n  name: missing_tool\n---\n",
            "tools.yaml": "tools:\n  - name: other\n    command: 'true'\n",
        },
    )
    code, report = _report(flow)
    assert code == 0
    warnings = report["warnings"]
    assert isinstance(warnings, list)
    assert [(w["field"], w["message"]) for w in warnings] == [
        ("do.name", "tool 'missing_tool' is not declared in tools.yaml")
    ]


def test_invalid_tools_file_is_an_error(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", {"start.md": "x\n", "tools.yaml": "tools:\n  - name: t\n"})
    code, report = _report(flow)
    assert code == 1
    errors = report["errors"]
    assert isinstance(errors, list)
    assert errors[0]["file"] == "tools.yaml"
    assert "command" in errors[0]["message"]


@pytest.mark.parametrize("name", ["tour", "saga"])
def test_examples_are_valid_without_warnings(name: str) -> None:
    code, report = _report(EXAMPLES / name, "--strict")
    assert code == 0, report
    assert report["warnings"] == []


def test_a_broken_node_does_not_make_the_nodes_behind_it_unreachable(tmp_path: Path) -> None:
    # start -> hub (broken YAML) -> a, b, c: only hub is reported; whether a, b and c are
    # reachable cannot be known while hub cannot be read, so no warning claims they are not.
    flow = write_flow(
        tmp_path / "flow",
        {
            "start.md": "---\nto: hub\n---\nHi\n",
            "hub.md": "---\noptions: [unclosed\n---\nPick\n",
            "a.md": "A\n",
            "b.md": "B\n",
            "c.md": "C\n",
        },
    )
    result = run_cli("validate", str(flow))
    assert result.code == 1
    assert "not reachable" not in result.out
    errors = [line for line in result.out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "hub.md" in errors[0]
    assert result.out.strip().endswith("Validation failed: 1 error(s), 0 warning(s).")


def test_a_directory_without_node_files_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "notes").mkdir(parents=True)
    (empty / "README.txt").write_text("not a node\n", encoding="utf-8")
    result = run_cli("validate", str(empty))
    assert result.code == 1
    assert "entry node" not in result.out
    assert "no node files" in result.out
    assert result.out.strip().endswith("Validation failed: 1 error(s), 0 warning(s).")
