"""A second ``trellis serve`` on a port the first one holds: one line naming the address,
no traceback (docs/cli.md: errors are never a traceback)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.support.cli import EXAMPLES, GUARD, ROOT, cli_env, run_cli


def test_second_server_on_a_busy_port_says_so_in_one_line() -> None:
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trellis.cli.main",
            "serve",
            str(EXAMPLES / "tour"),
            "--listen",
            "127.0.0.1:0",
        ],
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=cli_env(),
    )
    try:
        assert first.stderr is not None
        port = None
        for _ in range(200):  # bounded: the first line that names the port
            line = first.stderr.readline().decode()
            assert line, "the first server exited before serving"
            found = re.search(r"serving on 127\.0\.0\.1:(\d+)", line)
            if found:
                port = found.group(1)
                break
        assert port is not None
        second = run_cli("serve", str(EXAMPLES / "tour"), "--listen", f"127.0.0.1:{port}")
        assert second.code == 1
        lines = second.err.strip().splitlines()
        assert lines == [
            f"Error: cannot serve on 127.0.0.1:{port} (listen): address already in use; "
            "is another server running there?"
        ], second.err
        assert first.poll() is None  # the first server is untouched
    finally:
        first.terminate()
        first.wait(timeout=GUARD)
