"""Running the real command line in a subprocess, scripted or interactively."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
GUARD = 60.0  # seconds: only a guard against a hung process, never an assertion


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env.pop("TRELLIS_MAX_INPUT_SIZE", None)
    env.update(extra or {})
    return env


def run_cli(
    *args: str, stdin: str = "", cwd: Path | None = None, env: dict[str, str] | None = None
) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "trellis.cli.main", *args],
        input=stdin.encode(),
        capture_output=True,
        cwd=cwd or ROOT,
        env=cli_env(env),
        timeout=GUARD,
    )
    return Result(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def copy_example(name: str, tmp_path: Path) -> Path:
    """A private copy, so that sessions saved under it never touch the checkout."""
    target = tmp_path / name
    shutil.copytree(EXAMPLES / name, target, ignore=shutil.ignore_patterns(".trellis"))
    return target


def write_flow(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return directory


class Interactive:
    """A CLI process fed line by line, whose output is read as it comes."""

    def __init__(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trellis.cli.main", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd or ROOT,
            env=cli_env(env),
        )
        self._out = ""
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            chunk = self.proc.stdout.read1(4096)
            if not chunk:
                break
            with self._changed:
                self._out += chunk.decode(errors="replace")
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return self._out

    def expect(self, text: str, count: int = 1, guard: float = GUARD) -> str:
        """Wait until ``text`` has appeared ``count`` times in the output."""
        with self._changed:
            ok = self._changed.wait_for(
                lambda: self._out.count(text) >= count or self.proc.poll() is not None, timeout=guard
            )
            if not ok or self._out.count(text) < count:
                raise AssertionError(f"{text!r} (x{count}) never appeared; output so far:\n{self._out}")
            return self._out

    def saw(self, text: str, guard: float) -> bool:
        """Whether ``text`` appears within ``guard`` seconds (for retrying an action)."""
        try:
            self.expect(text, guard=guard)
        except AssertionError:
            return False
        return True

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def finish(self) -> Result:
        try:
            code = self.proc.wait(timeout=GUARD)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self._reader.join(timeout=GUARD)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read().decode()
        return Result(code, self.output, err)
