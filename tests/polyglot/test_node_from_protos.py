"""THE test of issue 16: a client generated at run time from protos/ alone, in Node
with @grpc/proto-loader (tests/polyglot/node, its own package.json; nothing from
clients/node), walks examples/tour against a real `trellis serve` on loopback and
decodes every error it provokes with the catalog in docs/errors.md only."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.requirements import missing
from trellis.api import API_REVISION, error_table

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "tests" / "polyglot" / "node"
TOKEN = "polyglot-token-0123456789"

# What the walk provokes on purpose: one call each (tour.js says which).
PROVOKED = {
    "INVALID_CONFIRMATION",
    "UNHANDLED_SIGNAL",
    "UNEXPECTED_TOOL_RESULT",
    "SESSION_TERMINATED",
    "SESSION_NOT_FOUND",
    "INVALID_SESSION_ID",
    "INVALID_INPUT",
    "UNAUTHENTICATED",
    "NODE_NOT_FOUND",
    "EXPECTED_TOOL_RESULT",
    "TOOL_RESULT_MISMATCH",
    "STATE_SIGNATURE_INVALID",
}


@pytest.fixture(scope="module")
def node_modules() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        missing("node and npm are not installed (the polyglot test needs them)")
    modules = NODE_DIR / "node_modules"
    if not (modules / "google-proto-files").is_dir():
        command = ["npm", "ci", "--no-audit", "--no-fund"]
        done = subprocess.run(command, cwd=NODE_DIR, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return modules


async def _serve(tmp_path: Path) -> tuple[asyncio.subprocess.Process, int]:
    """`trellis serve examples/tour` with a token and state signing, on a free loopback port."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    key_file = tmp_path / "signing.key"
    key_file.write_text("polyglot-signing-key-0123456789abcdef")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "trellis.cli.main", "serve", str(ROOT / "examples" / "tour"),
        "--listen", "127.0.0.1:0", "--token-file", str(token_file), "--signing-key-file", str(key_file),
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    async with asyncio.timeout(60):
        while True:
            line = (await proc.stderr.readline()).decode()
            if not line:
                proc.kill()
                raise AssertionError("trellis serve exited before serving")
            found = re.search(r"serving on 127\.0\.0\.1:(\d+)", line)
            if found:
                return proc, int(found.group(1))


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            async with asyncio.timeout(30):
                await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_a_node_client_from_the_protos_alone_walks_the_tour_and_decodes_every_error(
    node_modules: Path, tmp_path: Path
) -> None:
    proc, port = await _serve(tmp_path)
    try:
        client = await asyncio.create_subprocess_exec(
            "node", "tour.js", f"127.0.0.1:{port}", str(ROOT),
            cwd=NODE_DIR,
            env=dict(os.environ, TRELLIS_TOKEN=TOKEN),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(180):
            out, err = await client.communicate()
    finally:
        await _stop(proc)
    assert client.returncode == 0, f"{err.decode()}\n{out.decode()[-3000:]}"
    events: list[dict[str, Any]] = [orjson.loads(line) for line in out.decode().splitlines() if line]
    assert events[-1] == {"event": "done"}

    info = events[0]["info"]
    assert info["api_revision"] == API_REVISION
    features = info["features"]
    assert features["state_signing"] and features["auth_required"] and features["tool_dispatch"]
    assert (features["store"], features["loader"]) == ("memory", "dir")

    steps = {e["what"]: e for e in events if e["event"] == "step"}
    assert "Nadia" in steps['say "tea"']["texts"][-1] and steps['say "tea"']["node"] == "menu"
    assert steps['say "bogus"']["notices"] == ["no transition matched that answer"]
    assert steps['say "bogus"']["rejected"] and not steps['say "tea"']["rejected"]
    # What a UI needs from a step: the input's kind and default, the signals, each action's node.
    menu = steps['say "Nadia"']
    assert menu["input"]["kind"] == "INPUT_KIND_CHOICE" and menu["input"]["has_default"]
    assert menu["signals"] == ["interrupt"] and menu["nodes"] == ["menu", "menu"]
    assert steps['say "drinks"']["input"]["has_default"] is False
    assert steps['say "confirm"']["input"]["kind"] == "INPUT_KIND_CONFIRM"
    assert steps['say "timeout"']["signals"] == ["interrupt", "timeout"]
    assert steps['say "timeout"']["input"]["timeout_signal"] == "timeout"
    assert steps["timeout elapsed"]["nodes"][:2] == ["too_slow", "menu"]
    assert "has 5 letter(s)" in "".join(steps['say "tool"']["texts"])  # the server ran the tool
    assert steps["timeout elapsed"]["texts"][0].startswith("Too slow")
    assert steps["engine tool"]["call"]["name"] == "word_stats"
    assert steps["engine start"]["node"] == "start"
    walk = [e for e in events if e["event"] == "step" and e["what"].startswith("say")]
    last = walk[-1]
    assert last["node"] == "finish" and last["terminated"] and last["status"] == "STATUS_TERMINATED"

    errors = [e for e in events if e["event"] == "error"]
    assert {e["reason"] for e in errors} == PROVOKED
    # The same reasons, codes and keys as the Python side's table (tour.js read them from the docs).
    known = {cls.reason: row for cls, row in error_table.ROWS.items()}
    for error in errors:
        row = known[error["reason"]]
        assert error["code"] == row.code.name, error
        assert set(error["metadata"]) <= {*row.keys, "session_id"}, error
    by_what = {e["what"]: e for e in errors}
    assert by_what["confirm maybe"]["metadata"] == {
        "session_id": "node-tour", "node_id": "agree", "got": "maybe", "field": "input"
    }  # fmt: skip
    assert by_what["input after the end"]["metadata"] == {"session_id": "node-tour", "node_id": "finish"}
    assert by_what["garbage page token"]["violations"] == [{"field": "page_token", "reason": "INVALID_INPUT"}]
