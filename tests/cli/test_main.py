"""The command line's own surface: help at every level, version, error reporting."""

from __future__ import annotations

import pytest

from tests.support.cli import run_cli
from trellis import __version__
from trellis.cli.common import CliError, parse_context
from trellis.cli.main import main


def test_version() -> None:
    result = run_cli("--version")
    assert result.code == 0
    assert result.out.strip() == f"trellis {__version__}"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), ["run", "validate", "graph", "session", "examples:"]),
        (("run",), ["--session", "--context", "--watch", "--json", "--yes", "--unsafe-inline", "examples:"]),
        (("validate",), ["--strict", "--json", "not reachable", "examples:"]),
        (("graph",), ["--session", "push", "pull", "Mermaid", "examples:"]),
        (("session",), ["ls", "show", "rm", "examples:"]),
        (("session", "ls"), ["--dir", "--store-dir", "--json"]),
        (("session", "rm"), ["ID", "--dir"]),
    ],
)
def test_help_at_every_level(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], expected: list[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in expected:
        assert word in text


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "commands" in capsys.readouterr().out


def test_missing_directory_is_a_clean_error() -> None:
    result = run_cli("run", "no/such/flow")
    assert result.code == 1
    assert result.err.strip() == "Error: flow directory 'no/such/flow' does not exist"
    assert "Traceback" not in result.err


def test_a_file_is_not_a_flow_directory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    file = tmp_path / "flow.md"
    file.write_text("hello")
    result = run_cli("validate", str(file))
    assert result.code == 1
    assert "is not a directory" in result.err


def test_context_values_are_json_when_they_parse() -> None:
    context = parse_context(["n=3", "flag=true", "name=Ada", 'tags=["a","b"]', "empty=", 'nested={"k": 1}'])
    assert context == {
        "n": 3,
        "flag": True,
        "name": "Ada",
        "tags": ["a", "b"],
        "empty": "",
        "nested": {"k": 1},
    }


def test_context_accepts_a_json_object() -> None:
    assert parse_context(['{"user_role": "admin", "retries": 5}', "retries=7"]) == {
        "user_role": "admin",
        "retries": 7,
    }


@pytest.mark.parametrize("bad", ["novalue", "=3", '{"unclosed": ', "[1, 2]"])
def test_bad_context_options_name_the_option(bad: str) -> None:
    with pytest.raises(CliError) as info:
        parse_context([bad])
    assert "--context" in info.value.message


def test_a_directory_alone_runs_it() -> None:
    result = run_cli("examples/tour", stdin="q\n")
    assert result.code == 0, result.err
    assert "# Welcome to the trellis tour" in result.out


def test_flow_without_entry_node_is_a_clean_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "other.md").write_text("x\n")
    result = run_cli("run", str(tmp_path))
    assert result.code == 1
    assert result.err.startswith("Error: failed to load node start: node 'start' not found")
