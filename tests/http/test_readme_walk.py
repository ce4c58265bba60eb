"""The README's curl walk of the tour, run as written (only the port is made free) against
a real `trellis serve` process: every reply is a step, the session ends, and the event
stream started in the middle of the walk saw the steps after it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading

import orjson

from tests.support.cli import GUARD, ROOT, cli_env
from tests.support.etcd_process import free_port
from tests.support.requirements import missing
from tests.support.waiting import eventually_sync

README = ROOT / "README.md"
SERVE = "./scripts/trellis serve examples/tour --http-listen 127.0.0.1:8080 &"


def walk_block() -> list[str]:
    """The lines of the README's fenced block that starts the HTTP listener."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(SERVE)
    assert lines[start - 1] == "```sh"
    end = lines.index("```", start)
    return lines[start:end]


class Lines:
    """A background process's stdout, collected line by line by a thread."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        stdout = proc.stdout

        def read() -> None:
            for raw in stdout:
                self.lines.append(raw.decode().rstrip("\n"))

        threading.Thread(target=read, daemon=True).start()


def _start_server(command: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {command.removesuffix(' &')}"],
        cwd=ROOT,
        # the gRPC port is not part of the walk: any free one
        env=cli_env({"TRELLIS_LISTEN": "127.0.0.1:0"}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stderr is not None
    for _ in range(500):  # bounded: lines until the one naming the HTTP address
        line = proc.stderr.readline().decode()
        assert line, f"the server exited before serving (status {proc.wait(timeout=GUARD)})"
        if "HTTP (Connect, server-sent events) on" in line:
            return proc
    raise AssertionError("the server never said it serves HTTP")


def test_the_readme_curl_walk_runs_the_tour_to_its_end() -> None:
    if shutil.which("curl") is None:
        missing("curl is not installed (the README's HTTP walk uses it)")
    address = f"127.0.0.1:{free_port()}"
    block = [line.replace("127.0.0.1:8080", address) for line in walk_block()]
    processes: list[subprocess.Popen[bytes]] = []
    replies: list[dict[str, object]] = []
    events: Lines | None = None
    try:
        processes.append(_start_server(block[0]))
        for line in block[1:]:
            if line.split("#")[0].rstrip().endswith("&"):
                proc = subprocess.Popen(
                    ["bash", "-c", f"exec {line.split('#')[0].rstrip().removesuffix('&')}"],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
                processes.append(proc)
                events = Lines(proc)
                eventually_sync(lambda: "event: step" in events.lines, "the event stream opened")  # noqa: B023
                continue
            done = subprocess.run(["bash", "-c", line], cwd=ROOT, capture_output=True, timeout=GUARD)
            assert done.returncode == 0, f"{line}: {done.stderr.decode()}"
            reply = orjson.loads(done.stdout)
            assert "step" in reply, f"{line}: {reply}"
            replies.append(reply)
        assert events is not None
        finished = events

        def saw_the_end() -> bool:
            return any('"status":"STATUS_TERMINATED"' in line for line in finished.lines)

        eventually_sync(saw_the_end, "the event stream showed the session's end")
    finally:
        for proc in processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=GUARD)
    steps = [reply["step"] for reply in replies]
    nodes = [step["state"].get("currentNodeId") for step in steps]  # type: ignore[index, union-attr]
    assert nodes[:5] == ["ask_name", "menu", "drink", "menu", "interrupted"]
    assert nodes[-3:] == ["finish", "finish", "finish"]
    last = steps[-1]["state"]  # type: ignore[index]
    assert last["status"] == "STATUS_TERMINATED"  # type: ignore[index]
    context = orjson.loads(last["contextJson"])  # type: ignore[index]
    assert context["name"] == "Ada" and context["drink"] == "tea"
    assert context["stats"]["letters"] == 3  # the tool the server ran for the "tool" section
    data = [orjson.loads(line.removeprefix("data: ")) for line in finished.lines if line.startswith("data: ")]
    assert [d.get("currentNodeId") for d in data if "currentNodeId" in d][-1] == "finish"
