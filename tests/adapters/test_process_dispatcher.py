"""ProcessDispatcher beyond the contract: tools.yaml handling, bad tools, limits, the environment."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.support.tool_scripts import ECHO, write_tools
from trellis.adapters.process_dispatcher import ProcessDispatcher
from trellis.domain import ToolCall
from trellis.errors import ConfigError

HANG_IGNORING_SIGTERM = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
child = subprocess.Popen([sys.executable, "-c", stubborn])
with open("pids.txt", "w") as f:
    f.write(f"{os.getpid()} {child.pid}")
sys.stderr.write("about to hang\\n"); sys.stderr.flush()
time.sleep(120)
"""

GARBAGE = """
import sys
sys.stdout.write("  {not json at all]  \\n")
"""

INVALID_UTF8 = """
import sys
sys.stdout.buffer.write(b"\\xff\\xfe\\x00garbage")
"""

HUGE = """
import sys
chunk = "x" * 65536
for _ in range(64):
    sys.stdout.write(chunk)
"""

WHERE_AND_HOW = """
import json, os, sys
print(json.dumps({"cwd": os.getcwd(), "argv": sys.argv[1:], "greeting": os.environ.get("GREETING"),
                  "path_inherited": "PATH" in os.environ, "args": os.environ["TRELLIS_ARGS"]}))
"""

LIST_OUTPUT = """
print('[1, 2.5, "three"]')
"""


def call(name: str, args: dict[str, object] | None = None, **metadata: str) -> ToolCall:
    return ToolCall(id=f"id-{name}", name=name, args=args, metadata=metadata or None)


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_a_tool_that_ignores_sigterm_is_killed_with_its_children(tmp_path: Path) -> None:
    tools = write_tools(tmp_path, {"hang": HANG_IGNORING_SIGTERM}, extra="")
    tools.write_text(tools.read_text().replace("args: ['hang.py']", "args: ['hang.py']\n    timeout: 3s"))
    dispatcher = ProcessDispatcher.from_file(tools, grace_period=0.2)
    async with asyncio.timeout(30):
        result = await dispatcher.dispatch(call("hang"))
    assert result.is_error
    assert "timed out after 3s" in result.error
    assert "about to hang" in result.error
    pids = [int(p) for p in (tmp_path / "pids.txt").read_text().split()]
    for _ in range(200):  # bounded: killed processes may need a moment to be reaped
        if not any(alive(pid) for pid in pids):
            break
        await asyncio.sleep(0.02)
    assert not any(alive(pid) for pid in pids)


async def test_cancelling_a_call_kills_the_tool(tmp_path: Path) -> None:
    dispatcher = ProcessDispatcher.from_file(write_tools(tmp_path, {"hang": HANG_IGNORING_SIGTERM}))
    task = asyncio.create_task(dispatcher.dispatch(call("hang")))
    pid_file = tmp_path / "pids.txt"
    for _ in range(1500):  # bounded wait for the tool to start and write its PIDs
        if pid_file.exists() and len(pid_file.read_text().split()) == 2:
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pids = [int(p) for p in pid_file.read_text().split()]
    for _ in range(500):  # bounded: killed processes may need a moment to be reaped
        if not any(alive(pid) for pid in pids):
            break
        await asyncio.sleep(0.02)
    assert not any(alive(pid) for pid in pids)


async def test_output_that_is_not_json_is_the_trimmed_string(tmp_path: Path) -> None:
    dispatcher = ProcessDispatcher.from_file(
        write_tools(tmp_path, {"garbage": GARBAGE, "items": LIST_OUTPUT})
    )
    async with asyncio.timeout(30):
        garbage = await dispatcher.dispatch(call("garbage"))
        items = await dispatcher.dispatch(call("items"))
    assert not garbage.is_error and garbage.result == "{not json at all]"
    assert items.result == [1, 2.5, "three"]


async def test_output_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    dispatcher = ProcessDispatcher.from_file(write_tools(tmp_path, {"bytes": INVALID_UTF8}))
    async with asyncio.timeout(30):
        result = await dispatcher.dispatch(call("bytes"))
    assert result.is_error and "not UTF-8" in result.error


async def test_a_non_zero_exit_reports_status_and_stderr(tmp_path: Path) -> None:
    source = "import sys\nsys.stderr.write('disk on fire\\n')\nsys.exit(123)\n"
    dispatcher = ProcessDispatcher.from_file(write_tools(tmp_path, {"broken": source}))
    async with asyncio.timeout(30):
        result = await dispatcher.dispatch(call("broken"))
    assert result.is_error
    assert result.error == "execution failed: exit status 123. Stderr: disk on fire"


async def test_huge_output_is_refused(tmp_path: Path) -> None:
    dispatcher = ProcessDispatcher.from_file(write_tools(tmp_path, {"huge": HUGE}), max_output_bytes=100_000)
    async with asyncio.timeout(30):
        result = await dispatcher.dispatch(call("huge"))
    assert result.is_error and "exceeds the limit of 100000 bytes" in result.error


async def test_tools_run_in_their_directory_with_env_and_args_only_in_trellis_args(tmp_path: Path) -> None:
    tools_dir = tmp_path / "flow"
    tools_dir.mkdir()
    tools = write_tools(tools_dir, {"where": WHERE_AND_HOW})
    tools.write_text(tools.read_text() + "    env: {GREETING: hello}\n")
    dispatcher = ProcessDispatcher.from_file(tools)
    async with asyncio.timeout(30):
        result = await dispatcher.dispatch(call("where", {"b": 2, "a": "x y"}))
    assert not result.is_error, result.error
    assert result.result == {
        "cwd": str(tools_dir.resolve()),
        "argv": [],
        "greeting": "hello",
        "path_inherited": True,
        "args": '{"a":"x y","b":2}',
    }


async def test_a_call_without_args_sends_null(tmp_path: Path) -> None:
    dispatcher = ProcessDispatcher.from_file(write_tools(tmp_path, {"echo": ECHO}))
    async with asyncio.timeout(30):
        result = await dispatcher.dispatch(call("echo"))
    assert result.result == "null"


async def test_inline_commands_are_refused_unless_allowed(tmp_path: Path) -> None:
    inline = {"x-exec-command": sys.executable, "x-exec-args": '-c \'print("[\\"inline ok\\"]")\''}
    refused = ProcessDispatcher.from_file(tmp_path / "missing.yaml")
    allowed = ProcessDispatcher.from_file(tmp_path / "missing.yaml", allow_inline=True)
    async with asyncio.timeout(30):
        no = await refused.dispatch(call("adhoc", **inline))
        yes = await allowed.dispatch(call("adhoc", **inline))
    assert not refused.serves("adhoc")
    assert no.is_error
    assert no.error == "process tool not registered: adhoc (and inline execution not enabled/found)"
    assert yes.result == ["inline ok"], yes.error


async def test_a_command_that_does_not_exist_is_an_error_result(tmp_path: Path) -> None:
    (tmp_path / "tools.yaml").write_text("tools:\n  - name: ghost\n    command: ./no-such-program\n")
    dispatcher = ProcessDispatcher.from_file(tmp_path / "tools.yaml")
    async with asyncio.timeout(30):
        result = await dispatcher.dispatch(call("ghost"))
    assert result.is_error and "cannot start './no-such-program'" in result.error


def test_a_missing_tools_file_is_an_empty_registry(tmp_path: Path) -> None:
    assert ProcessDispatcher.from_file(tmp_path / "tools.yaml").tools == {}


def test_entries_without_a_name_are_skipped_and_json_works(tmp_path: Path) -> None:
    path = tmp_path / "tools.json"
    path.write_text(
        '{"tools": [{"command": "true"}, {"name": "t", "command": ["sh", "-c"], "args": ["exit 0", 3]}]}'
    )
    tools = ProcessDispatcher.from_file(path).tools
    assert list(tools) == ["t"]
    assert tools["t"].command == "sh" and tools["t"].args == ("-c", "exit 0", "3")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("tools: [\n  - name: x\n", "invalid YAML"),
        ("- just a list\n", "top level must be a mapping"),
        ("tools: {name: x}\n", "field 'tools' must be a list"),
        ("tools:\n  - name: x\n", "tools[0].command: tool 'x' needs a non-empty command"),
        ("tools:\n  - name: x\n    command: c\n    args: nope\n", "tools[0].args: must be a list"),
        ("tools:\n  - name: x\n    command: c\n    env: [a]\n", "tools[0].env: must be a mapping"),
        (
            "tools:\n  - name: x\n    command: c\n    timeout: soon\n",
            "tools[0].timeout: invalid duration 'soon'",
        ),
        (
            "tools:\n  - {name: x, command: c}\n  - {name: x, command: d}\n",
            "tools[1].name: duplicate tool 'x'",
        ),
    ],
)
def test_an_invalid_tools_file_names_the_file_and_field(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "tools.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        ProcessDispatcher.from_file(path)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


async def test_a_missing_working_directory_is_named(tmp_path: Path) -> None:
    tools = write_tools(tmp_path, {"echo": ECHO})
    dispatcher = ProcessDispatcher.from_file(tools, base_dir=tmp_path / "gone")
    async with asyncio.timeout(30):
        result = await dispatcher.dispatch(call("echo", {}))
    assert result.is_error and f"working directory {tmp_path / 'gone'} does not exist" in result.error


async def test_a_tool_that_exits_on_sigterm_is_not_kept_waiting_for_the_grace_period(tmp_path: Path) -> None:
    tools = write_tools(tmp_path, {"sleepy": "import time\ntime.sleep(120)\n"})
    tools.write_text(tools.read_text() + "    timeout: 500ms\n")
    # A grace period far beyond the test's bound: only SIGTERM can end this call in time.
    dispatcher = ProcessDispatcher.from_file(tools, grace_period=600)
    async with asyncio.timeout(30):
        result = await dispatcher.dispatch(call("sleepy"))
    assert result.is_error and "timed out after 500ms" in result.error


PRINT_ENV = """
import json, os
print(json.dumps(dict(os.environ)))
"""


async def test_tools_never_see_the_servers_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The documented way to give the server its secrets is its environment.
    monkeypatch.setenv("TRELLIS_TOKEN", "server-token")
    monkeypatch.setenv("TRELLIS_SIGNING_KEY", "server-signing-key")
    monkeypatch.setenv("CLOUD_SECRET", "not-for-tools")
    monkeypatch.setenv("SHARED_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("ONLY_FOR_ENV", "from-server")
    monkeypatch.setenv("LANG", "C.UTF-8")
    tools = write_tools(tmp_path, {"env": PRINT_ENV, "other": PRINT_ENV})
    text = tools.read_text().replace(
        "args: ['env.py']", "args: ['env.py']\n    env: {OWN: mine}\n    pass_env: [ONLY_FOR_ENV]"
    )
    tools.write_text("pass_env: [SHARED_URL]\n" + text)
    dispatcher = ProcessDispatcher.from_file(tools)
    async with asyncio.timeout(30):
        seen = await dispatcher.dispatch(call("env"))
        other = await dispatcher.dispatch(call("other"))
    assert not seen.is_error, seen.error
    env = seen.result
    assert isinstance(env, dict)
    assert "server-token" not in str(env) and "server-signing-key" not in str(env)
    assert "TRELLIS_TOKEN" not in env and "TRELLIS_SIGNING_KEY" not in env and "CLOUD_SECRET" not in env
    assert env["OWN"] == "mine" and env["SHARED_URL"] == "http://127.0.0.1:9"
    assert env["ONLY_FOR_ENV"] == "from-server" and env["LANG"] == "C.UTF-8" and "PATH" in env
    assert set(env) <= {"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TRELLIS_ARGS",
                        "OWN", "SHARED_URL", "ONLY_FOR_ENV"}
    assert isinstance(other.result, dict) and "ONLY_FOR_ENV" not in other.result and "OWN" not in other.result


@pytest.mark.parametrize("where", ["top", "tool"])
async def test_trellis_names_cannot_be_passed_to_tools(tmp_path: Path, where: str) -> None:
    tools = write_tools(tmp_path, {"env": PRINT_ENV})
    if where == "top":
        tools.write_text("pass_env: [TRELLIS_TOKEN]\n" + tools.read_text())
    else:
        tools.write_text(tools.read_text() + "    pass_env: [trellis_signing_key]\n")
    with pytest.raises(ConfigError, match="cannot be passed to tools"):
        ProcessDispatcher.from_file(tools)
