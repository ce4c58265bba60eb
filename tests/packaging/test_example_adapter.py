"""The example adapter package (examples/adapter-sqlite) is what docs/adapters.md says
a third-party adapter is: it installs, passes every public contract suite with its own
test command, registers by entry point and is selected by URL in ``trellis serve``."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import sessions_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "adapter-sqlite"
TOUR = ROOT / "examples" / "tour"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy of the example (so no build output lands in the checkout) and the
    directory it was pip-installed into."""
    where = tmp_path_factory.mktemp("example")
    source = where / "adapter-sqlite"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    site = where / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--no-build-isolation", "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return source, site


def test_the_example_passes_every_suite_with_its_own_test_command(installed: tuple[Path, Path]) -> None:
    source, site = installed
    # Its tests import the installed package, not the source tree (src layout).
    shutil.rmtree(source / "src")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", "-rs"],
        cwd=source, env=dict(os.environ, PYTHONPATH=str(site)), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    # Every contract test ran, none skipped: the locker is checked across processes too.
    counts = re.fullmatch(r"=* ?(\d+) passed in [^,]*", summary)
    assert counts, summary
    assert int(counts.group(1)) >= 50, summary


async def test_the_example_is_selected_by_url_from_a_configuration_file(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    _, site = installed
    conf = tmp_path / "conf"
    conf.mkdir()
    # Relative targets of plugin schemes, written with ./, are relative to the file.
    config = "store: sqlite:./sessions.db\nlocker: flock:./locks\n"
    (conf / "trellis.yaml").write_text(config, encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "trellis.cli.main", "serve", str(TOUR), "--listen", "127.0.0.1:0",
        "--config", str(conf / "trellis.yaml"), cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(site)), stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(60):
            while True:
                line = (await proc.stderr.readline()).decode()
                assert line, "the server exited before serving"
                found = re.search(r"serving on 127\.0\.0\.1:(\d+)", line)
                if found:
                    break
        async with grpc.aio.insecure_channel(f"127.0.0.1:{found.group(1)}") as channel:
            sessions = sessions_pb2_grpc.SessionsStub(channel)
            started = await sessions.Start(spb.SessionsStartRequest(session_id="p1"), timeout=30)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
    with sqlite3.connect(conf / "sessions.db") as db:
        rows = db.execute("SELECT id, revision FROM sessions").fetchall()
    assert rows == [("p1", started.step.state.revision)]
    assert list((conf / "locks").glob("*.lock")), "the session's step took no flock lock"
