"""ProcessDispatcher: tools that are external programs, declared in tools.yaml
(docs/cli.md, "Tools").

``tools.yaml`` (or ``tools.json``)::

    tools:
      - name: greet                 # the ToolCall name it serves (entries without one are skipped)
        command: python3            # program to run: no shell, looked up on PATH unless it has a '/'
        args: ["./greet.py", "-v"]  # fixed command-line arguments
        env: {GREETING: "hello"}    # set for this tool
        pass_env: [GREETER_URL]     # names this tool takes from the server's environment
        timeout: 10s                # Go duration; default 30s
        description: "Greets"       # for people and LLM hosts
    pass_env: [HTTPS_PROXY]         # names every tool takes from the server's environment

Each call runs ``command args…`` directly (no shell) in its own process group,
with the working directory set to ``base_dir`` (by default the directory of
tools.yaml) and a minimal environment (docs/engine-differences.md, fix #15): ``BASE_ENV``
(PATH, HOME, locale and time zone) and the names listed in ``pass_env`` (top
level and the tool's own) taken from this process, then the tool's ``env``.
Nothing else is inherited: the server's secrets (TRELLIS_TOKEN,
TRELLIS_SIGNING_KEY, cloud credentials) never reach a tool, and ``pass_env``
refuses TRELLIS_* names. The call's arguments reach the program ONLY as the
environment variable ``TRELLIS_ARGS``: compact JSON with sorted keys (``null``
when the call has no arguments), never on the command line.

Outcome: exit 0 → stdout, trimmed; a JSON object or array is parsed, anything
else is the trimmed string. Non-zero exit, a signal, output over
``max_output_bytes``, output that is not UTF-8, or running past the tool's
timeout (SIGTERM to the group, ``grace_period`` seconds, then SIGKILL) each
give an ``is_error`` result saying so; ``dispatch`` never raises for them.

Inline tools (``metadata["x-exec-command"]`` with ``x-exec-args`` split like a
POSIX shell would, without running one) are refused unless ``allow_inline``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from trellis.dispatching import DispatchContext
from trellis.domain import ToolCall, ToolResult
from trellis.errors import ConfigError
from trellis.go_values import format_duration, go_str, parse_duration

DEFAULT_TIMEOUT = 30.0
DEFAULT_GRACE_PERIOD = 5.0
DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
"""Names every tool takes from this process's environment (when set there)."""
_SECRET_PREFIX = "TRELLIS_"
_STDERR_KEEP_BYTES = 64 * 1024
_READ_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class ProcessTool:
    name: str
    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT
    description: str = ""
    pass_env: tuple[str, ...] = ()
    """Names this tool takes from the dispatcher's environment, besides BASE_ENV and the registry's."""


class ProcessDispatcher:
    def __init__(
        self,
        tools: Iterable[ProcessTool] = (),
        *,
        base_dir: str | os.PathLike[str] = ".",
        allow_inline: bool = False,
        grace_period: float = DEFAULT_GRACE_PERIOD,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        pass_env: Iterable[str] = (),
    ) -> None:
        """``pass_env``: names every tool takes from this process's environment, on top of
        BASE_ENV (TRELLIS_* names are refused: they hold the server's secrets)."""
        self._tools = {tool.name: tool for tool in tools}
        self._pass_env = tuple(_check_pass_env(list(pass_env), "pass_env"))
        # Absolute now, so a later chdir of this process does not move the tools.
        self._base_dir = Path(base_dir).absolute()
        self._allow_inline = allow_inline
        self._grace_period = grace_period
        self._max_output_bytes = max_output_bytes

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str] = "tools.yaml",
        *,
        base_dir: str | os.PathLike[str] | None = None,
        allow_inline: bool = False,
        grace_period: float = DEFAULT_GRACE_PERIOD,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    ) -> ProcessDispatcher:
        """Read a tool registry. A missing file is an empty registry; an invalid one raises
        ConfigError naming the file and the field. ``base_dir`` (default: the file's
        directory) is where the tools run."""
        file = Path(path)
        registry = load_registry(file)
        return cls(
            registry.tools,
            pass_env=registry.pass_env,
            base_dir=base_dir if base_dir is not None else file.parent,
            allow_inline=allow_inline,
            grace_period=grace_period,
            max_output_bytes=max_output_bytes,
        )

    @property
    def tools(self) -> Mapping[str, ProcessTool]:
        return dict(self._tools)

    def serves(self, tool_name: str) -> bool:
        # With inline execution on, any call may carry its own command in its metadata.
        return tool_name in self._tools or self._allow_inline

    async def dispatch(self, call: ToolCall, context: DispatchContext | None = None) -> ToolResult:
        tool = self._tools.get(call.name)
        if tool is None:
            metadata = call.metadata or {}
            inline = metadata.get("x-exec-command", "")
            if not (self._allow_inline and inline):
                return _failure(
                    call, f"process tool not registered: {call.name} (and inline execution not enabled/found)"
                )
            try:
                inline_args = tuple(shlex.split(metadata.get("x-exec-args", "")))
            except ValueError as exc:
                return _failure(call, f"execution failed: cannot split x-exec-args: {exc}")
            tool = ProcessTool(name=call.name, command=inline, args=inline_args)
        return await self._run(call, tool)

    async def _run(self, call: ToolCall, tool: ProcessTool) -> ToolResult:
        env = self._environment(tool)
        env["TRELLIS_ARGS"] = orjson.dumps(
            dict(call.args) if call.args is not None else None, option=orjson.OPT_SORT_KEYS
        ).decode()
        try:
            process = await asyncio.create_subprocess_exec(
                tool.command,
                *tool.args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self._base_dir,
                env=env,
                start_new_session=True,  # its own process group: a kill reaches grandchildren too
            )
        except OSError as exc:
            if not self._base_dir.is_dir():
                return _failure(call, f"execution failed: working directory {self._base_dir} does not exist")
            return _failure(
                call, f"execution failed: cannot start {tool.command!r}: {exc.strerror or exc}. Stderr: "
            )
        assert process.stdout is not None and process.stderr is not None
        stdout = bytearray()
        stderr = bytearray()
        stdout_task = asyncio.create_task(_read_capped(process.stdout, stdout, self._max_output_bytes))
        stderr_task = asyncio.create_task(
            _read_capped(process.stderr, stderr, _STDERR_KEEP_BYTES, drain=True)
        )
        try:
            try:
                async with asyncio.timeout(tool.timeout):
                    overflow = await stdout_task
                    if overflow:
                        _signal_group(process, signal.SIGKILL)
                        # Read on to the end of the pipe: asyncio resolves wait() only once
                        # every pipe is closed, and a paused reader never sees the EOF.
                        await _read_capped(process.stdout, bytearray(), 0, drain=True)
                    await process.wait()
                    await stderr_task
            except TimeoutError:
                await self._stop(process)
                return _failure(
                    call,
                    f"execution failed: timed out after {format_duration(tool.timeout)} "
                    f"(context deadline exceeded). Stderr: {_text(stderr)}",
                )
        except asyncio.CancelledError:
            # The caller gave up: leave nothing running behind it.
            _signal_group(process, signal.SIGKILL)
            raise
        finally:
            for task in (stdout_task, stderr_task):
                task.cancel()
            await asyncio.gather(stdout_task, stderr_task, return_exceptions=True)
        if overflow:
            return _failure(
                call, f"execution failed: output exceeds the limit of {self._max_output_bytes} bytes"
            )
        code = process.returncode
        assert code is not None
        if code < 0:
            return _failure(call, f"execution failed: signal: {_signal_name(-code)}. Stderr: {_text(stderr)}")
        if code != 0:
            return _failure(call, f"execution failed: exit status {code}. Stderr: {_text(stderr)}")
        try:
            text = bytes(stdout).decode("utf-8")
        except UnicodeDecodeError as exc:
            return _failure(
                call, f"execution failed: output is not UTF-8 text ({exc.reason} at byte {exc.start})"
            )
        return ToolResult(id=call.id, result=_parse_output(text))

    def _environment(self, tool: ProcessTool) -> dict[str, str]:
        """BASE_ENV and the pass-through names read from this process, then the tool's own
        ``env``; never the rest of the server's environment (its secrets live there)."""
        env = {
            name: os.environ[name]
            for name in (*BASE_ENV, *self._pass_env, *tool.pass_env)
            if name in os.environ
        }
        env.update(tool.env)
        return env

    async def _stop(self, process: asyncio.subprocess.Process) -> None:
        _signal_group(process, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._grace_period):
                await process.wait()
        # Always: the leader may have exited and left children (same group) behind.
        _signal_group(process, signal.SIGKILL)
        await process.wait()


async def _read_capped(
    stream: asyncio.StreamReader, into: bytearray, limit: int, drain: bool = False
) -> bool:
    """Read ``stream`` into ``into`` up to ``limit`` bytes. Returns True when more came: then it
    stops at once, or (``drain``) keeps reading and dropping so the writer never blocks."""
    overflow = False
    while True:
        chunk = await stream.read(_READ_CHUNK)
        if not chunk:
            return overflow
        room = limit - len(into)
        if len(chunk) > room:
            into.extend(chunk[: max(room, 0)])
            overflow = True
            if not drain:
                return True
        else:
            into.extend(chunk)


def _signal_group(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _text(data: bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace").strip()


def _parse_output(text: str) -> Any:
    trimmed = text.strip()
    if (trimmed.startswith("{") and trimmed.endswith("}")) or (
        trimmed.startswith("[") and trimmed.endswith("]")
    ):
        try:
            return orjson.loads(trimmed)
        except orjson.JSONDecodeError:
            pass
    return trimmed


def _failure(call: ToolCall, message: str) -> ToolResult:
    return ToolResult(id=call.id, is_error=True, error=message)


# --- tools.yaml ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolRegistry:
    """What a tools file declares: its tools and the top-level ``pass_env`` names."""

    tools: list[ProcessTool] = field(default_factory=list)
    pass_env: tuple[str, ...] = ()


def load_tools(path: Path) -> list[ProcessTool]:
    """The tools of a tools file (see load_registry). Missing file → []."""
    return load_registry(path).tools


def load_registry(path: Path) -> ToolRegistry:
    """Parse a tools file (YAML, or JSON for ``.json``). Missing file → an empty registry."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return ToolRegistry()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if path.suffix == ".json":
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON: {exc}") from None
    else:
        try:
            document = YAML(typ="safe", pure=True).load(raw)
        except YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None
    if document is None:
        return ToolRegistry()
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with a 'tools' list")
    pass_env = tuple(_check_pass_env(document.get("pass_env"), f"{path}: pass_env"))
    entries = document.get("tools")
    if entries is None:
        return ToolRegistry(pass_env=pass_env)
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: field 'tools' must be a list")
    tools: list[ProcessTool] = []
    first_seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        where = f"{path}: tools[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: each tool must be a mapping")
        tool = _parse_tool(entry, where)
        if tool is None:
            continue
        if tool.name in first_seen:
            raise ConfigError(
                f"{where}.name: duplicate tool {tool.name!r} "
                f"(first defined in tools[{first_seen[tool.name]}])"
            )
        first_seen[tool.name] = index
        tools.append(tool)
    return ToolRegistry(tools=tools, pass_env=pass_env)


def _check_pass_env(names: Any, where: str) -> list[str]:
    """A ``pass_env`` list: variable names, none of them TRELLIS_* (the server's own settings
    and secrets; TRELLIS_ARGS is set per call anyway)."""
    if names is None:
        return []
    if not isinstance(names, list):
        raise ConfigError(f"{where}: must be a list of environment variable names")
    for name in names:
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise ConfigError(f"{where}: invalid variable name {name!r}")
        if name.upper().startswith(_SECRET_PREFIX):
            raise ConfigError(
                f"{where}: {name!r} cannot be passed to tools: TRELLIS_* variables hold the "
                "server's settings and secrets (give the tool its own value in 'env')"
            )
    return list(names)


def _scalar(value: Any, where: str) -> str:
    if isinstance(value, str | int | float | bool):
        return go_str(value)
    raise ConfigError(f"{where}: must be a string, number or boolean, got {type(value).__name__}")


def _parse_tool(entry: dict[str, Any], where: str) -> ProcessTool | None:
    name = entry.get("name")
    if name is None or name == "":
        return None  # entries without a name are skipped, as the original did
    if not isinstance(name, str):
        raise ConfigError(f"{where}.name: must be a string")
    command = entry.get("command")
    prefix: list[str] = []
    if isinstance(command, list) and command:
        # A command given as a list: its first item is the program, the rest lead the args.
        parts = [_scalar(part, f"{where}.command[{i}]") for i, part in enumerate(command)]
        command, prefix = parts[0], parts[1:]
    if not isinstance(command, str) or not command.strip():
        raise ConfigError(f"{where}.command: tool {name!r} needs a non-empty command")
    args = entry.get("args") or []
    if not isinstance(args, list):
        raise ConfigError(f"{where}.args: must be a list")
    env = entry.get("env") or {}
    if not isinstance(env, dict):
        raise ConfigError(f"{where}.env: must be a mapping of variable names to values")
    for key in env:
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise ConfigError(f"{where}.env: invalid variable name {key!r}")
    timeout_value = entry.get("timeout")
    timeout = DEFAULT_TIMEOUT
    if timeout_value is not None:
        try:
            if isinstance(timeout_value, bool):
                raise ValueError("a boolean is not a duration")
            timeout = (
                float(timeout_value)
                if isinstance(timeout_value, int | float)
                else parse_duration(str(timeout_value))
            )
        except ValueError as exc:
            raise ConfigError(f"{where}.timeout: {exc} (use a duration like '5s')") from None
        if timeout <= 0:
            raise ConfigError(f"{where}.timeout: must be positive, got {timeout_value!r}")
    description = entry.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError(f"{where}.description: must be a string")
    pass_env = tuple(_check_pass_env(entry.get("pass_env"), f"{where}.pass_env"))
    return ProcessTool(
        name=name,
        command=command,
        args=tuple(prefix) + tuple(_scalar(arg, f"{where}.args[{i}]") for i, arg in enumerate(args)),
        env={key: _scalar(value, f"{where}.env.{key}") for key, value in env.items()},
        timeout=timeout,
        description=description,
        pass_env=pass_env,
    )
