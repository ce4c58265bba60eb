"""SIGTERM to a `trellis serve` process under load: in-flight steps finish, later calls
are refused as unavailable, and the file store holds exactly the acknowledged steps,
every file valid JSON."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from trellis.adapters.file_store import FileStore
from trellis.clients import Client
from trellis.errors import BackendUnavailable

ROOT = Path(__file__).resolve().parents[2]
SESSIONS = 6
MAX_CALLS = 200  # per session, a bound on the load loop

SLOW_TOOL = """
import json, os, pathlib, sys, time
args = json.loads(os.environ["TRELLIS_ARGS"])
pathlib.Path(os.environ["MARKERS"], args["tag"]).write_text("started")
time.sleep(0.5)
print("done " + args["tag"])
"""


def write_flow(directory: Path, markers: Path) -> Path:
    directory.mkdir()
    (directory / "start.md").write_text("---\nwait: true\nsave_to: v\nto: work\n---\nready\n")
    (directory / "work.md").write_text(
        '---\ndo:\n  name: slow\n  args:\n    tag: "{{ .v }}"\nsave_to: r\nto: start\n---\n'
    )
    (directory / "slow.py").write_text(SLOW_TOOL)
    (directory / "tools.yaml").write_text(
        f"tools:\n  - name: slow\n    command: {sys.executable!r}\n    args: ['slow.py']\n"
        f"    timeout: 30s\n    env:\n      MARKERS: {str(markers)!r}\n"
    )
    return directory


def started(markers: Path) -> set[str]:
    """The steps whose tool has started (each writes a marker named after its input)."""
    return {p.name for p in markers.iterdir()}


async def drain(stream: asyncio.StreamReader, lines: list[str]) -> None:
    while line := await stream.readline():
        lines.append(line.decode(errors="replace"))
        del lines[:-200]


async def read_port(stderr: asyncio.StreamReader) -> int:
    async with asyncio.timeout(60):
        while True:
            line = (await stderr.readline()).decode()
            if not line:
                raise AssertionError("trellis serve exited before listening")
            if "serving on" in line:
                return int(line.rsplit(":", 1)[1])


async def test_sigterm_finishes_in_flight_steps_and_leaves_a_consistent_file_store(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    flow = write_flow(tmp_path / "flow", markers)
    sessions_dir = tmp_path / "sessions"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "trellis.cli.main",
        "serve",
        str(flow),
        "--listen",
        "127.0.0.1:0",
        "--store",
        f"file:{sessions_dir}",
        "--shutdown-grace",
        "20s",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stderr is not None
        port = await read_port(process.stderr)
        # Keep reading the server's log (a line per step): a full pipe would stall the server.
        log: list[str] = []
        draining = asyncio.create_task(drain(process.stderr, log))
        acked: dict[str, list[str]] = {f"s{k}": [] for k in range(SESSIONS)}
        errors: list[BaseException] = []
        warmed_up = asyncio.Event()
        async with Client(f"127.0.0.1:{port}", timeout=60) as client:
            for sid in acked:
                await client.sessions.start(sid)

            async def load(sid: str) -> None:
                for n in range(MAX_CALLS):
                    tag = f"{sid}-{n}"
                    try:
                        await client.sessions.navigate(sid, tag)
                    except Exception as exc:
                        errors.append(exc)
                        return
                    acked[sid].append(tag)
                    if sum(map(len, acked.values())) >= SESSIONS:
                        warmed_up.set()

            loads = [asyncio.create_task(load(sid)) for sid in acked]
            # Wait until steps are running inside the server (their tool has started and
            # has not answered yet), then stop it.
            async with asyncio.timeout(60):
                await warmed_up.wait()
                running: set[str] = set()
                while not running:
                    await asyncio.sleep(0.01)
                    running = started(markers) - {t for ts in acked.values() for t in ts}
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(60):
                await asyncio.gather(*loads)
                code = await process.wait()
        await draining
        assert code == 0, "".join(log[-20:])
        acked_tags = {t for ts in acked.values() for t in ts}
        # Every step that was running when SIGTERM arrived was finished and acknowledged.
        assert running <= acked_tags, f"in-flight steps lost: {running - acked_tags}"
        # Calls after the signal were refused as "server unavailable", not failed half-way.
        assert len(errors) == SESSIONS and all(isinstance(e, BackendUnavailable) for e in errors), [
            (type(e).__name__, str(e)) for e in errors
        ]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    # Nothing half-written: every file is complete JSON, no temporary is left, and each
    # session holds exactly its acknowledged steps, in order.
    files = sorted(p.name for p in sessions_dir.iterdir())
    assert files == sorted(f"{sid}.json" for sid in acked)
    for name in files:
        json.loads((sessions_dir / name).read_text())
    store = FileStore(sessions_dir)
    for sid, tags in acked.items():
        state = await store.load(sid)
        assert state.history == ["start"] + ["work", "start"] * len(tags), (sid, tags, state.history)
        assert state.context.get("v") == (tags[-1] if tags else None)
        assert state.context.get("r") == (f"done {tags[-1]}" if tags else None)
