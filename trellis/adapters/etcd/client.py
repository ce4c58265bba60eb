"""The connection to etcd: channel, authentication, calls and their retries.

One ``EtcdClient`` per server process: one gRPC channel over every endpoint
(round robin, so a dead member is skipped), one watch stream shared by every
watch (watch.py), and one process lease per TTL (lease.py) backing every lock
the process takes. While a lease is lost the health callback hears
NOT_SERVING; once a new one is granted, SERVING.

aetcd's high-level ``Client`` covers neither TLS, several endpoints, range
limits nor sorted ranges inside transactions, so this module speaks etcd's
gRPC API directly through the stubs and messages aetcd ships (``aetcd.rpc``).
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import math
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
from aetcd import rpc

from trellis.adapters.etcd.config import EtcdConfig, split_endpoint
from trellis.adapters.etcd.lease import LeaseKeeper, ProcessLease
from trellis.adapters.etcd.lock_wait import LockDeletions
from trellis.adapters.etcd.watch import WatchMux
from trellis.errors import BackendUnavailable, ConfigError, StateTooLarge

log = logging.getLogger(__name__)


class Health(enum.Enum):
    SERVING = "SERVING"
    NOT_SERVING = "NOT_SERVING"


HealthCallback = Callable[[Health], None]


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a range cover every key starting with ``prefix``."""
    end = bytearray(prefix)
    for i in reversed(range(len(end))):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


_STUBS = {
    "KV": rpc.KVStub,
    "Lease": rpc.LeaseStub,
    "Watch": rpc.WatchStub,
    "Auth": rpc.AuthStub,
    "Maintenance": rpc.MaintenanceStub,
}
_METHOD_STUB = {
    "Range": "KV",
    "Put": "KV",
    "DeleteRange": "KV",
    "Txn": "KV",
    "Compact": "KV",
    "LeaseGrant": "Lease",
    "LeaseRevoke": "Lease",
    "LeaseTimeToLive": "Lease",
    "Status": "Maintenance",
    "Alarm": "Maintenance",
    "Defragment": "Maintenance",
}
_RETRY_BACKOFF = 0.05
REQUIRE_LEADER = ("hasleader", "true")
"""gRPC metadata with which etcd refuses (and later ends) a stream on a member without a
leader (clientv3's WithRequireLeader)."""
_RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class EtcdClient:
    """A connection to etcd shared by the process' locker, store and loader.

    ``call`` runs one unary RPC with the request timeout and maps failures to
    trellis errors. ``interceptors`` (grpc.aio client interceptors) see every
    RPC, which is how the tests count round trips.
    """

    def __init__(
        self,
        config: EtcdConfig,
        *,
        on_health: HealthCallback | None = None,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        self.config = config
        self.on_health = on_health
        self._interceptors = list(interceptors)
        self._channel: grpc.aio.Channel | None = None
        self._stubs: dict[str, Any] = {}
        self._metadata: tuple[tuple[str, str], ...] = ()
        self._connect_lock = asyncio.Lock()
        self._keepers: dict[int, LeaseKeeper] = {}
        self._serving: bool | None = None
        self.watches = WatchMux(self._open_watch)
        self.lock_deletions = LockDeletions()
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False

    def describe(self) -> str:
        return "endpoints " + ",".join(self.config.endpoints)

    # --- connection ----------------------------------------------------------------

    async def connect(self) -> None:
        """Open the channel and authenticate; waits at most ``dial_timeout`` for a member."""
        if self._channel is not None:
            return
        async with self._connect_lock:
            if self._channel is not None:
                return
            if self._closed:
                raise BackendUnavailable("etcd: client is closed")
            target, options = await asyncio.to_thread(_channel_target, self.config)
            channel = self._make_channel(target, options)
            try:
                await asyncio.wait_for(channel.channel_ready(), self.config.dial_timeout)
            except TimeoutError:
                await channel.close()
                raise BackendUnavailable(
                    f"etcd: no member answered within {self.config.dial_timeout:g} s ({self.describe()})"
                ) from None
            self._stubs = {name: stub(channel) for name, stub in _STUBS.items()}
            try:
                await self._authenticate()
            except BaseException:
                await channel.close()
                raise
            self._channel = channel

    def _make_channel(self, target: str, options: list[tuple[str, Any]]) -> grpc.aio.Channel:
        interceptors = self._interceptors or None
        if not self.config.use_tls:
            return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(self.config.ca_file, "ca"),
            private_key=_read(self.config.key_file, "key"),
            certificate_chain=_read(self.config.cert_file, "cert"),
        )
        return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)

    async def _authenticate(self) -> None:
        if not self.config.username:
            return
        request = rpc.AuthenticateRequest(name=self.config.username, password=self.config.password)
        try:
            response = await self._stubs["Auth"].Authenticate(request, timeout=self.config.request_timeout)
        except grpc.RpcError as exc:
            raise _translate("Authenticate", exc) from None
        self._metadata = (("token", response.token),)

    async def reauthenticate_if_expired(self, exc: grpc.RpcError) -> bool:
        """Simple-auth tokens expire; get a new one when etcd says so."""
        if self.config.username and _code(exc) == grpc.StatusCode.UNAUTHENTICATED:
            await self._authenticate()
            return True
        return False

    def _stub(self, name: str) -> Any:
        return self._stubs[name]

    async def call(self, method: str, request: Any) -> Any:
        """One unary RPC, retried until the request timeout when a member goes away
        or a proposal is lost in a leader election (etcd then just never answers).
        Every request of this package is safe to repeat: transactions are guarded by
        compares and recognise, on the failure branch, a write of their own that
        landed before its answer was lost (see ``call_counting``)."""
        return (await self.call_counting(method, request))[0]

    async def call_counting(self, method: str, request: Any) -> tuple[Any, int]:
        """``call`` that also says how many attempts it took (> 1: a retry happened,
        so a failed compare may be our own earlier attempt's doing)."""
        await self.connect()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.request_timeout
        # Shorter attempts than the whole budget: a proposal lost in an election is
        # only answered by etcd's own (much longer) timeout.
        attempt_budget = max(0.5, self.config.request_timeout / 3)
        reauthenticated = False
        attempts = 0
        while True:
            attempts += 1
            rpc_method = getattr(self._stubs[_METHOD_STUB[method]], method)
            remaining = deadline - loop.time()
            try:
                response = await rpc_method(
                    request,
                    timeout=max(min(remaining, attempt_budget), 0.01),
                    metadata=self._metadata,
                    wait_for_ready=True,
                )
                return response, attempts
            except grpc.RpcError as exc:
                if not reauthenticated and await self.reauthenticate_if_expired(exc):
                    reauthenticated = True
                    continue
                if _code(exc) in _RETRIED and loop.time() + _RETRY_BACKOFF < deadline:
                    await asyncio.sleep(_RETRY_BACKOFF)
                    continue
                raise _translate(method, exc) from None

    async def probe(self) -> None:
        """Health check: returns when etcd answers and the process lease (if any) is
        held; raises BackendUnavailable otherwise."""
        if self._serving is False:
            raise BackendUnavailable(
                f"etcd lease lost; waiting for etcd to grant a new one ({self.describe()})"
            )
        await self.call("Range", rpc.RangeRequest(key=self.config.key("health"), count_only=True))

    async def _open_watch(self) -> Any:
        await self.connect()
        await self._authenticate()  # a stream keeps the token it was opened with: use a fresh one
        # Require a leader: a member that loses the quorum then ends the stream (UNAVAILABLE,
        # "no leader") instead of keeping it open with no events; the mux reopens it.
        metadata = (*self._metadata, REQUIRE_LEADER)
        return self._stubs["Watch"].Watch(metadata=metadata, wait_for_ready=True)

    def open_keepalive(self) -> Any:
        return self._stubs["Lease"].LeaseKeepAlive(metadata=self._metadata, wait_for_ready=True)

    # --- process lease -------------------------------------------------------------

    async def lease(self, ttl: float | None = None) -> ProcessLease:
        """A live process lease whose TTL is at most ``ttl`` seconds (rounded up to whole
        seconds, etcd's unit), granting one on first use. Raises BackendUnavailable.

        Locks with different TTLs share a lease: a lock's TTL bounds how long it outlives
        a crashed holder, and a shorter lease keeps that promise (while the process lives
        the lease is renewed anyway). So the process reuses the longest lease it already
        has that is not longer than asked, and grants one of ``ttl`` only when it has none
        that short; the usual case (every lock asks for the server's lock TTL, or for
        longer than the configured lease) keeps one lease per process."""
        seconds = max(1, math.ceil(ttl if ttl is not None else self.config.lease_ttl))
        shorter = [held for held in self._keepers if held <= seconds]
        keeper = self._keepers[max(shorter)] if shorter else None
        if keeper is None:
            keeper = self._keepers[seconds] = LeaseKeeper(
                self, seconds, on_granted=self._lease_granted, on_changed=self._lease_changed
            )
        await self.connect()
        return await keeper.lease()

    def _lease_changed(self) -> None:
        serving = all(keeper.holds for keeper in self._keepers.values())
        if not serving:
            # Lock waiters re-check: theirs may be among the keys that just vanished.
            self.lock_deletions.wake_all()
        if serving != self._serving:
            self._serving = serving
            if self.on_health is not None:
                self.on_health(Health.SERVING if serving else Health.NOT_SERVING)

    async def _lease_granted(self, revision: int) -> None:
        # The lock watch starts with the first lease: current by the time anyone waits.
        prefix = self.config.key("locks") + b"/"
        await self.lock_deletions.watch(self.watches, prefix, prefix_end(prefix), revision + 1)

    def delete_when_settled(
        self, request: asyncio.Future[Any], key: bytes, then: Callable[[], None] | None = None
    ) -> None:
        """Delete ``key`` in the background once ``request`` (a call its caller abandoned,
        or whose answer was lost, which may still write it) has settled; ``then`` runs once
        it is deleted. The request's outcome is collected here: nobody else will look at
        it (asyncio would log each one as never retrieved)."""

        def settled(done: asyncio.Future[Any]) -> None:
            if not done.cancelled():
                done.exception()
            self.delete_later(key, then=then)

        request.add_done_callback(settled)

    def delete_later(self, key: bytes, then: Callable[[], None] | None = None) -> None:
        """Delete ``key`` in the background, retrying until etcd answers (used when
        releasing a lock fails: the key must not outlive the release); ``then`` runs
        once it is deleted."""

        async def retry() -> None:
            backoff = 0.1
            while not self._closed:
                try:
                    await self.call("DeleteRange", rpc.DeleteRangeRequest(key=key))
                    if then is not None:
                        then()
                    return
                except BackendUnavailable:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)

        task = asyncio.create_task(retry())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Revoke the leases (releasing this process' locks now) and close the channel."""
        if self._closed:
            return
        for task in list(self._background):
            try:
                async with asyncio.timeout(1.0):
                    await asyncio.shield(task)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
        self._closed = True
        await self.watches.close()
        for keeper in self._keepers.values():
            await keeper.close()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def abandon(self) -> None:
        """Stop renewing and disconnect without releasing anything, as a crashed
        process would: this process' locks vanish only when their lease expires."""
        self._closed = True
        for keeper in self._keepers.values():
            keeper.abandon()
        await self.watches.close()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def __aenter__(self) -> EtcdClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _code(exc: grpc.RpcError) -> grpc.StatusCode | None:
    code = getattr(exc, "code", None)
    return code() if callable(code) else None


def _translate(method: str, exc: grpc.RpcError) -> Exception:
    code = _code(exc)
    details_method = getattr(exc, "details", None)
    details = details_method() if callable(details_method) else str(exc)
    if code == grpc.StatusCode.INVALID_ARGUMENT and "too large" in (details or ""):
        return StateTooLarge(f"etcd refused the request as too large: {details}")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED) or (
        "authentication failed" in (details or "")
    ):
        return ConfigError(f"etcd {method}: {details} (check the etcd user and password)")
    return BackendUnavailable(f"etcd {method} failed ({code.name if code else 'error'}): {details}")


def _read(path: str, what: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"etcd: cannot read the TLS {what} file {path!r}: {exc.strerror}") from None


def _channel_target(config: EtcdConfig) -> tuple[str, list[tuple[str, Any]]]:
    """A gRPC target naming every endpoint, and channel options.

    gRPC's ``ipv4:``/``ipv6:`` schemes take a list of addresses, so names are
    resolved here, once. One channel has one name to check certificates
    against, and without an override gRPC would take the target's authority,
    the whole address list, which no certificate matches: so with TLS every
    member's certificate is checked against the first endpoint's host, a name
    or an IP address alike (docs/etcd.md says so to whoever makes the
    certificates).
    """
    options: list[tuple[str, Any]] = [
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1_000),
    ]
    addresses: list[tuple[int, str, int]] = []
    for endpoint in config.endpoints:
        host, port = split_endpoint(endpoint)
        try:
            ip = ipaddress.ip_address(host)
            addresses.append((ip.version, str(ip), port))
        except ValueError:
            try:
                info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise BackendUnavailable(f"etcd: cannot resolve endpoint {endpoint!r}: {exc}") from None
            family, *_, sockaddr = info[0]
            addresses.append((6 if family == socket.AF_INET6 else 4, str(sockaddr[0]), port))
    if len({version for version, _, _ in addresses}) > 1:
        raise ConfigError("etcd: endpoints mix IPv4 and IPv6 addresses; use one family")
    version = addresses[0][0]
    if version == 4:
        target = "ipv4:" + ",".join(f"{ip}:{port}" for _, ip, port in addresses)
    else:
        target = "ipv6:" + ",".join(f"[{ip}]:{port}" for _, ip, port in addresses)
    if config.use_tls:
        first_host, _ = split_endpoint(config.endpoints[0])
        options.append(("grpc.ssl_target_name_override", first_host))
    return target, options
