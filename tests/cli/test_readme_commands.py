"""The README's shell commands run as written.

Every shell block of README.md (fenced ``sh``/``bash``/``shell``/``console`` or
untagged blocks, and 4-space indented blocks) is read; each command must have an
entry in PLAN below saying whether this test runs it and why. A command added to
the README without an entry fails the test, so the list stays honest.

What is changed to run here, and nothing else: the etcd endpoint 127.0.0.1:2379
becomes the test's own etcd; servers listen on free ports (127.0.0.1:50051 and
50052 may be taken on a shared machine); ``run --session`` works on a copy of the
tour so that no session is left in the checkout.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.cli import GUARD, ROOT, cli_env, copy_example
from tests.support.etcd_process import EtcdCluster, free_port

README = ROOT / "README.md"
SHELL_TAGS = {"", "sh", "bash", "shell", "console"}

RUN = "run"  # run to its end: exit status 0
SERVE = "serve"  # a server: started, must report "serving on", then stopped
SKIP = "skip"
WALK = "the README's curl walk: run in order by tests/http/test_readme_walk.py"


@dataclass(frozen=True)
class Plan:
    how: str
    why: str


def _curl(method: str, body: str) -> str:
    """A call of the README's curl walk, as readme_commands() normalises it."""
    return (
        f"curl -s http://127.0.0.1:8080/trellis.v1.Sessions/{method} "
        f"-H 'Content-Type: application/json' -d '{body}'"
    )


def _text(text: str) -> str:
    return '{"sessionId":"walk","input":{"text":"' + text + '"}}'


PLAN: dict[str, Plan] = {
    "./scripts/trellis serve examples/tour": Plan(SERVE, "the embedded default server"),
    "./scripts/test": Plan(SKIP, "the whole suite, which includes this test"),
    "./scripts/trellis run examples/tour": Plan(RUN, "no input: first prompt, then end of input"),
    "./scripts/trellis run examples/tour --session demo": Plan(RUN, "as above, on a copy of the tour"),
    "./scripts/trellis validate examples/tour": Plan(RUN, "must report the tour valid"),
    "./scripts/trellis graph examples/tour": Plan(RUN, "prints the Mermaid drawing"),
    "./scripts/trellis serve examples/tour --http-listen 127.0.0.1:8080 &": Plan(
        SERVE, "the embedded default with the HTTP listener (port made free)"
    ),
    # The curl walk of the tour: tests/http/test_readme_walk.py runs it in order against a
    # server of its own and checks the replies and the event stream.
    _curl("Start", '{"sessionId":"walk"}'): Plan(SKIP, WALK),
    "curl -sN http://127.0.0.1:8080/v1/sessions/walk/events &": Plan(SKIP, WALK),
    **{_curl("Navigate", _text(text)): Plan(SKIP, WALK) for text in ("Ada", "drinks", "tea")},
    _curl("Signal", '{"sessionId":"walk","signal":"interrupt"}'): Plan(SKIP, WALK),
    **{_curl("Navigate", _text(text)): Plan(SKIP, WALK) for text in ("no", "tool", "finish", "")},
    _curl("Get", '{"sessionId":"walk"}'): Plan(SKIP, WALK),
    "./scripts/bootstrap": Plan(RUN, "idempotent: the environment is already prepared"),
    ".venv/bin/trellis graph push examples/tour --etcd 127.0.0.1:2379 --graph tour": Plan(
        RUN, "against the test's etcd"
    ),
    ".venv/bin/trellis serve --loader 'etcd://127.0.0.1:2379/trellis?graph=tour' "
    "--store etcd://127.0.0.1:2379/trellis --locker etcd://127.0.0.1:2379/trellis &": Plan(
        SERVE, "first replica, against the test's etcd"
    ),
    ".venv/bin/trellis serve --listen 127.0.0.1:50052 "
    "--loader 'etcd://127.0.0.1:2379/trellis?graph=tour' "
    "--store etcd://127.0.0.1:2379/trellis --locker etcd://127.0.0.1:2379/trellis &": Plan(
        SERVE, "second replica beside the first, against the test's etcd"
    ),
    ".venv/bin/python bench/engine_steps.py": Plan(SKIP, "benchmark: minutes of CPU, measured on its own"),
    ".venv/bin/python bench/grpc_steps.py": Plan(SKIP, "benchmark"),
    ".venv/bin/python bench/etcd_lock.py": Plan(SKIP, "benchmark"),
    ".venv/bin/python bench/etcd_steps.py": Plan(SKIP, "benchmark"),
    ".venv/bin/python bench/memory.py": Plan(SKIP, "benchmark"),
    ".venv/bin/python bench/reload.py": Plan(SKIP, "benchmark"),
    ".venv/bin/python bench/evaluation_limits.py": Plan(SKIP, "benchmark"),
    ".venv/bin/python bench/dispatch.py": Plan(SKIP, "benchmark"),
    ".venv/bin/python bench/timers.py": Plan(SKIP, "benchmark"),
    ".venv/bin/python bench/watch.py": Plan(SKIP, "benchmark"),
    ".venv/bin/python bench/etcd_growth.py": Plan(SKIP, "benchmark"),
    ".venv/bin/python bench/http_steps.py": Plan(SKIP, "benchmark"),
}


def _blocks(text: str) -> Iterator[list[str]]:
    """The lines of each shell block: fenced with a shell tag (or none), or indented by 4."""
    lines = text.splitlines()
    index = 0
    previous_blank = True
    while index < len(lines):
        line = lines[index]
        fence = re.match(r"^```(\w*)\s*$", line)
        if fence:
            end = index + 1
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            if fence.group(1) in SHELL_TAGS:
                yield lines[index + 1 : end]
            index, previous_blank = end + 1, False
            continue
        if previous_blank and line.startswith("    ") and line.strip():
            block = []
            while index < len(lines) and (lines[index].startswith("    ") or not lines[index].strip()):
                block.append(lines[index][4:])
                index += 1
            yield block
            previous_blank = False
            continue
        previous_blank = not line.strip()
        index += 1


def readme_commands() -> list[str]:
    """Each command once: continuations joined, comments dropped, words normalised."""
    commands: list[str] = []
    for block in _blocks(README.read_text(encoding="utf-8")):
        joined = "\n".join(block).replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.removeprefix("$ ").strip()
            if not line:
                continue
            words = shlex.split(line, comments=True)
            background = words[-1] == "&" if words else False
            words = [w for w in words if w != "&"]
            command = " ".join(shlex.quote(w) for w in words) + (" &" if background else "")
            if command not in commands:
                commands.append(command)
    return commands


def test_every_readme_command_has_a_plan() -> None:
    assert readme_commands() == list(PLAN), "update PLAN in this test for the README's commands"


def _localised(command: str, etcd: EtcdCluster, tour_copy: Path) -> str:
    command = command.replace("127.0.0.1:2379", etcd.endpoints[0])
    command = command.replace("127.0.0.1:50052", f"127.0.0.1:{free_port()}")
    command = command.replace("127.0.0.1:8080", f"127.0.0.1:{free_port()}")
    if "--session" in command:
        command = command.replace("examples/tour", str(tour_copy))
    return command.removesuffix(" &")


def _start(command: str) -> tuple[subprocess.Popen[bytes], str]:
    env = cli_env({"TRELLIS_LISTEN": "127.0.0.1:0"})  # a server given no --listen: any free port
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stderr is not None
    for _ in range(500):  # bounded: lines until the one naming the address
        line = proc.stderr.readline().decode()
        assert line, f"{command!r} exited before serving (status {proc.wait(timeout=GUARD)})"
        if "serving on" in line:
            return proc, line.strip()
    raise AssertionError(f"{command!r} never said it was serving")


def test_readme_commands_run_as_written(private_etcd: EtcdCluster, tmp_path: Path) -> None:
    tour_copy = copy_example("tour", tmp_path)
    servers: list[subprocess.Popen[bytes]] = []
    try:
        for command, plan in PLAN.items():
            if plan.how == SKIP:
                continue
            local = _localised(command, private_etcd, tour_copy)
            if plan.how == SERVE:
                proc, line = _start(local)
                servers.append(proc)
                assert proc.poll() is None, f"{command!r}: {line}"
                continue
            result = subprocess.run(
                ["bash", "-c", local],
                cwd=ROOT,
                env=cli_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=GUARD * 5,
            )
            assert result.returncode == 0, f"{command!r} failed:\n{result.stderr.decode()[-2000:]}"
        # Both etcd replicas run side by side (each on its own address).
        assert all(proc.poll() is None for proc in servers)
        assert len(servers) == 4
    finally:
        for proc in servers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=GUARD)
