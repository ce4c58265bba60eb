"""trellis server replicas as real processes (``python -m trellis.cli.main serve``) on
loopback, for the distributed-mode system tests and benchmarks.

Each replica writes its standard error to a log file (no pipe to fill up); its
port is read back from the ``serving on`` line. Every wait is a bounded loop.
Only processes started here are signalled, always by their PID.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
SESSIONS_SERVICE = "trellis.v1.Sessions"
_SERVING = re.compile(r"serving on 127\.0\.0\.1:(\d+)")


class ReplicaFailed(RuntimeError):
    """A replica exited or did not start serving in time (the message has its log)."""


def etcd_url(endpoints: Sequence[str], prefix: str, **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"etcd://{','.join(endpoints)}{prefix}" + (f"?{query}" if query else "")


def serve_args(
    endpoints: Sequence[str],
    prefix: str,
    graph: str,
    *,
    lock_ttl: str = "2s",
    request_timeout: str = "2s",
    dispatcher: Path | None = None,
    entry: str = "",
) -> list[str]:
    """``trellis serve`` arguments for a replica with loader, store and locker on etcd."""
    connection = {"request_timeout": request_timeout}
    args = [
        "--loader",
        etcd_url(endpoints, prefix, graph=graph, **connection),
        "--store",
        etcd_url(endpoints, prefix, **connection),
        "--locker",
        etcd_url(endpoints, prefix, **connection),
        "--lock-ttl",
        lock_ttl,
    ]
    if dispatcher is not None:
        args += ["--dispatcher", f"process:{dispatcher}"]
    if entry:
        args += ["--entry", entry]
    return args


@dataclass
class Replica:
    """One ``trellis serve`` process. ``start`` then ``wait_serving``; ``kill``,
    ``pause``/``resume`` (SIGSTOP/SIGCONT) and ``stop`` (SIGTERM) act on its PID."""

    name: str
    args: Sequence[str]
    log_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    python_args: Sequence[str] = ()  # before ``-m trellis.cli.main`` (e.g. a profiler)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    port: int = 0
    _log_offset: int = field(default=0, repr=False)

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
        # Health follows etcd within a fraction of a second instead of the default 5 s.
        env.setdefault("TRELLIS_HEALTH_PROBE_INTERVAL", "0.3")
        env.update(self.env)
        command = [
            sys.executable,
            *self.python_args,
            "-m",
            "trellis.cli.main",
            "serve",
            "--listen",
            "127.0.0.1:0",
            *self.args,
        ]
        self._log_offset = len(self.log())  # a restarted replica appends to its log
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self.port = 0

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_serving(self, timeout: float = READY_TIMEOUT) -> int:
        """Wait (bounded) for the ``serving on`` line; returns the port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.port:
                return self.port
            found = _SERVING.search(self.log()[self._log_offset :])
            if found:
                self.port = int(found.group(1))
                return self.port
            if not self.running():
                raise ReplicaFailed(f"replica {self.name} exited:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        raise ReplicaFailed(f"replica {self.name} not serving after {timeout:.0f} s:\n{self.log()[-3000:]}")

    def _signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """Crash the replica: no shutdown, its etcd lease simply stops being renewed."""
        self._signal(signal.SIGKILL)
        self._reap()

    def stop(self) -> None:
        """Graceful stop (SIGTERM, bounded), then SIGKILL if it is still there."""
        self._signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
        self._signal(signal.SIGTERM)
        self._reap()

    def _reap(self) -> None:
        process = self.process
        if process is None:
            return
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT)


def start_replicas(replicas: Sequence[Replica], timeout: float = READY_TIMEOUT) -> None:
    """Start them all at once (they import in parallel), then wait for each; on failure
    every one of them is stopped."""
    try:
        for replica in replicas:
            replica.start()
        for replica in replicas:
            replica.wait_serving(timeout)
    except BaseException:
        for replica in replicas:
            replica.kill()
        raise


async def health_of(channel: grpc.aio.Channel, service: str = SESSIONS_SERVICE) -> int:
    """The health status of ``service`` (health_pb2.HealthCheckResponse.*), UNKNOWN when
    the check itself fails."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2.0)
    except grpc.aio.AioRpcError:
        return int(health_pb2.HealthCheckResponse.UNKNOWN)
    return int(response.status)
