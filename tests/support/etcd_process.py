"""Real etcd processes on loopback for tests and benchmarks.

Each member gets free ports and its own data directory under a temporary
directory. Only processes started here are ever stopped, always by their PID.
Every wait is bounded: a member that does not become healthy in time is
stopped and reported with the tail of its log.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.pki import make_pki

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class EtcdUnavailable(RuntimeError):
    """The etcd binary is missing or a member could not be started."""


def etcd_binary() -> str:
    """The etcd executable: $ETCD_BIN, else ``etcd`` on PATH. Raises EtcdUnavailable."""
    configured = os.environ.get("ETCD_BIN", "")
    found = shutil.which(configured or "etcd")
    if not found:
        where = f"ETCD_BIN={configured!r}" if configured else "'etcd' on PATH"
        raise EtcdUnavailable(f"etcd binary not found ({where})")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class TlsFiles:
    """A test CA and certificates for 127.0.0.1 (server) and a client, made with openssl."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def create(cls, directory: Path) -> TlsFiles:
        openssl = shutil.which("openssl")
        if not openssl:
            raise EtcdUnavailable("openssl not found (needed to make test certificates)")
        make_pki(directory, openssl)
        return cls(
            directory / "ca.pem",
            directory / "server.pem",
            directory / "server.key",
            directory / "client.pem",
            directory / "client.key",
        )


@dataclass
class EtcdMember:
    """One etcd member process. ``start`` / ``stop`` / ``kill`` may be repeated:
    a restarted member keeps its data directory (and so its data)."""

    name: str
    data_dir: Path
    client_port: int
    peer_port: int
    initial_cluster: str
    cluster_token: str
    extra_args: Sequence[str] = ()
    tls: TlsFiles | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.name}.log"

    def command(self) -> list[str]:
        scheme = "https" if self.tls else "http"
        client_url = f"{scheme}://127.0.0.1:{self.client_port}"
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        tls_args = []
        if self.tls is not None:
            tls_args = [
                f"--cert-file={self.tls.server_cert}",
                f"--key-file={self.tls.server_key}",
                f"--trusted-ca-file={self.tls.ca}",
                "--client-cert-auth",
            ]
        return [
            etcd_binary(),
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster={self.initial_cluster}",
            f"--initial-cluster-token={self.cluster_token}",
            "--initial-cluster-state=new",
            # Short raft timers: elections after a killed member take ~0.5 s, not 1 s+.
            "--heartbeat-interval=50",
            "--election-timeout=500",
            "--logger=zap",
            "--log-level=warn",
            *tls_args,
            *self.extra_args,
        ]

    def start(self) -> None:
        if self.running():
            return
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def healthy(self) -> bool:
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(cafile=str(self.tls.ca))
            context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        scheme = "https" if self.tls else "http"
        try:
            with urllib.request.urlopen(
                f"{scheme}://{self.endpoint}/health", timeout=1.0, context=context
            ) as response:
                return b'"true"' in response.read()
        except (OSError, urllib.error.URLError):
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop this member's process (by PID) and wait for it to exit."""
        process = self.process
        if process is None or process.poll() is not None:
            self.process = None
            return
        os.kill(process.pid, sig)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT)
        self.process = None

    def kill(self) -> None:
        """Crash the member (SIGKILL): no graceful shutdown."""
        self.stop(signal.SIGKILL)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class EtcdCluster:
    """``size`` etcd members on loopback sharing a temporary directory."""

    def __init__(self, size: int = 1, extra_args: Sequence[str] = (), *, tls: bool = False) -> None:
        etcd_binary()  # fail early with a clear reason
        self.root = Path(tempfile.mkdtemp(prefix="trellis-etcd-"))
        try:
            self.tls = TlsFiles.create(self.root / "tls") if tls else None
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        token = f"trellis-{uuid.uuid4().hex[:8]}"
        ports = [(free_port(), free_port()) for _ in range(size)]
        initial = ",".join(f"m{i}=http://127.0.0.1:{peer}" for i, (_, peer) in enumerate(ports))
        self.members = [
            EtcdMember(
                name=f"m{i}",
                data_dir=self.root / f"m{i}.data",
                client_port=client,
                peer_port=peer,
                initial_cluster=initial,
                cluster_token=token,
                extra_args=tuple(extra_args),
                tls=self.tls,
            )
            for i, (client, peer) in enumerate(ports)
        ]

    @property
    def endpoints(self) -> list[str]:
        return [member.endpoint for member in self.members]

    @property
    def url(self) -> str:
        """Endpoints in the ``etcd://host:port,host:port`` form (no prefix)."""
        return "etcd://" + ",".join(self.endpoints)

    def start(self) -> None:
        for member in self.members:
            member.start()
        self.wait_healthy()

    def wait_healthy(
        self, members: Sequence[EtcdMember] | None = None, timeout: float = READY_TIMEOUT
    ) -> None:
        """Wait (bounded) until every given running member reports healthy (has a leader)."""
        waiting = [m for m in (members or self.members) if m.process is not None]
        deadline = time.monotonic() + timeout
        while waiting:
            for member in list(waiting):
                if not member.running():
                    raise EtcdUnavailable(f"etcd member {member.name} exited:\n{member.log_tail()}")
                if member.healthy():
                    waiting.remove(member)
            if not waiting:
                return
            if time.monotonic() > deadline:
                names = ", ".join(m.name for m in waiting)
                tails = "\n".join(m.log_tail() for m in waiting)
                raise EtcdUnavailable(f"etcd member(s) {names} not healthy after {timeout:.0f} s:\n{tails}")
            time.sleep(0.05)

    def restart(self, member: EtcdMember) -> None:
        member.start()
        self.wait_healthy([member])

    def close(self) -> None:
        # The data goes away with the directory, so a graceful shutdown buys nothing
        # (and a member of a cluster takes seconds for it).
        for member in self.members:
            member.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def running_cluster(size: int) -> Iterator[EtcdCluster]:
    """A started cluster of ``size`` members for a fixture to yield from, closed after.
    Without etcd: a skip on a developer's machine, a failure under CI=true."""
    from tests.support.requirements import missing

    try:
        cluster = EtcdCluster(size)
        cluster.__enter__()
    except EtcdUnavailable as exc:
        missing(f"etcd is not available: {exc}")
    try:
        yield cluster
    finally:
        cluster.close()
