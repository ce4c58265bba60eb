"""A third-party adapter is its own package: installed, it is found through its
``trellis.adapters`` entry point and selected by URL scheme in ``trellis serve``."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc

from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import sessions_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
TOUR = ROOT / "examples" / "tour"

PLUGIN = {
    "pyproject.toml": """\
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "trellis-notebook-store"
        version = "1.0"

        [project.entry-points."trellis.adapters"]
        "store.notebook" = "notebook_store:factory"
        """,
    "notebook_store.py": """\
        from pathlib import Path

        from trellis.adapters.file_store import FileStore
        from trellis.plugins import Component


        class NotebookStore(FileStore):
            \"\"\"A file store that also writes one line per save in notebook.txt.\"\"\"

            async def save(self, session_id, state, **kwargs):
                revision = await super().save(session_id, state, **kwargs)
                with open(self.base_dir / "notebook.txt", "a") as notebook:
                    notebook.write(f"{session_id} {state.current_node_id} {revision}\\n")
                return revision


        async def factory(spec, ctx):
            return Component.of(NotebookStore(Path(spec.target)))
        """,
}


def install_plugin(where: Path) -> Path:
    source = where / "plugin"
    source.mkdir()
    for name, text in PLUGIN.items():
        (source / name).write_text(textwrap.dedent(text), encoding="utf-8")
    site = where / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--no-build-isolation", "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    return site


async def test_an_installed_plugin_store_is_selected_by_its_scheme(tmp_path: Path) -> None:
    site = install_plugin(tmp_path)
    sessions_dir = tmp_path / "sessions"
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "trellis.cli.main", "serve", str(TOUR), "--listen", "127.0.0.1:0",
        "--store", f"notebook:{sessions_dir}", env=env, stderr=asyncio.subprocess.PIPE,
    )
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
            await sessions.Start(spb.SessionsStartRequest(session_id="p1"))
        notebook = (sessions_dir / "notebook.txt").read_text(encoding="utf-8").split()
        assert notebook[0] == "p1"
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


def test_an_unknown_scheme_names_the_entry_point_a_plugin_would_declare(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trellis.cli.main", "serve", str(TOUR), "--listen", "127.0.0.1:0",
         "--store", "notebook:x"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "unknown scheme 'notebook:'" in result.stderr
    assert "entry point 'store.notebook' in the group 'trellis.adapters'" in result.stderr
