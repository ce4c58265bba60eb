"""Sidecar processes for tests: started for real, address read from their first line,
stopped by PID (SIGTERM, then SIGKILL after a bounded wait)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from trellis.server.app import TrellisServer
from trellis.server.config import ServerConfig

ROOT = Path(__file__).resolve().parents[2]
TRELLIS = [sys.executable, "-m", "trellis.cli.main"]
START_BOUND = 60.0
STOP_BOUND = 15.0
_SERVING = re.compile(r"serving on (\S+)")


class SidecarProcess:
    def __init__(self, process: asyncio.subprocess.Process, address: str) -> None:
        self.process = process
        self.address = address
        self.output: list[str] = []
        self._reader = asyncio.ensure_future(self._drain())

    @property
    def url(self) -> str:
        """As a server names it: grpc://HOST:PORT or unix:///PATH."""
        return self.address if self.address.startswith("unix:") else f"grpc://{self.address}"

    async def _drain(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.output.append(line.decode(errors="replace").rstrip())

    def send(self, sig: signal.Signals) -> None:
        if self.process.returncode is None:
            with suppress(ProcessLookupError):
                os.kill(self.process.pid, sig)

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        self.send(sig)
        try:
            async with asyncio.timeout(STOP_BOUND):
                code = await self.process.wait()
        except TimeoutError:
            self.send(signal.SIGKILL)
            code = await self.process.wait()
        with suppress(asyncio.CancelledError):
            await self._reader
        return code

    async def kill(self) -> None:
        await self.stop(signal.SIGKILL)


async def start(
    argv: Sequence[str], *, cwd: Path = ROOT, env: Mapping[str, str] | None = None
) -> SidecarProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(START_BOUND):
            while True:
                raw = await process.stdout.readline()
                if not raw:
                    await process.wait()
                    raise AssertionError(f"{argv} exited ({process.returncode}):\n" + "\n".join(seen))
                line = raw.decode(errors="replace").rstrip()
                seen.append(line)
                match = _SERVING.search(line)
                if match:
                    sidecar = SidecarProcess(process, match.group(1))
                    sidecar.output.extend(seen)
                    return sidecar
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise


@asynccontextmanager
async def running(
    argv: Sequence[str], *, cwd: Path = ROOT, env: Mapping[str, str] | None = None
) -> AsyncIterator[SidecarProcess]:
    sidecar = await start(argv, cwd=cwd, env=env)
    try:
        yield sidecar
    finally:
        await sidecar.stop()


@asynccontextmanager
async def socket_dir() -> AsyncIterator[Path]:
    """A short directory for Unix sockets (a socket path must stay under ~100 bytes)."""
    with tempfile.TemporaryDirectory(prefix="trellis-sc-", dir="/tmp") as name:
        yield Path(name)


NODE_DIR = ROOT / "clients" / "node"


def node_ready() -> str | None:
    """Why the Node sidecar cannot run here (None: it can), after `npm ci` when needed."""
    import shutil
    import subprocess

    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node and npm are not installed (the Node sidecar tests need them)"
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise AssertionError(f"npm ci failed:\n{done.stdout}\n{done.stderr}")
    return None


def write_flow(directory: Path, nodes: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in nodes.items():
        (directory / name).write_text(text, encoding="utf-8")
    (directory / "tools.yaml").write_text("tools: []\n", encoding="utf-8")
    return directory


@asynccontextmanager
async def server(flow: Path, **settings: object) -> AsyncIterator[str]:
    config = ServerConfig(flow_dir=str(flow), listen="127.0.0.1:0", health_probe_interval=0.2)
    for key, value in settings.items():
        setattr(config, key, value)
    app = TrellisServer(config)
    await app.start()
    try:
        yield f"127.0.0.1:{app.port}"
    finally:
        await app.stop(grace=2.0)


async def conformance(kind: str, address: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *TRELLIS,
        "conformance",
        kind,
        address,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(START_BOUND):
        out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()
