"""The connection to etcd and the process lease.

One ``EtcdClient`` per server process: one gRPC channel over every endpoint
(round robin, so a dead member is skipped), one watch stream shared by every
watch, and one lease per TTL (in practice one), kept alive in the background
and backing every lock the process takes, like etcd's own concurrency
Session. A crashed process stops renewing, its lease expires and every lock
it held disappears with it.

If renewing fails for longer than the TTL the lease counts as lost: its
handles report ``held() == False``, writes fenced by them are refused by etcd
(their lock keys are gone), the health callback hears NOT_SERVING, and a new
lease is granted as soon as etcd answers again (then SERVING).

aetcd's high-level ``Client`` covers neither TLS, several endpoints, range
limits nor sorted ranges inside transactions, so this module speaks etcd's
gRPC API directly through the stubs and messages aetcd ships (``aetcd.rpc``).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from trellis.adapters.etcd.watch import DeletionWaiters, WatchMux
from trellis.errors import BackendUnavailable, ConfigError, StateTooLarge, TrellisError

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


class ProcessLease:
    """One granted lease. ``alive`` turns False for good when it is lost or revoked."""

    def __init__(self, lease_id: int, ttl: int, granted_at: float) -> None:
        self.id = lease_id
        self.ttl = ttl
        self.granted_at = granted_at
        """Event-loop time the grant was requested: etcd's clock started after it."""
        self.lost = asyncio.Event()

    @property
    def alive(self) -> bool:
        return not self.lost.is_set()


class _LeaseKeeper:
    """Grants, renews and, after a loss, re-grants the process lease of one TTL."""

    def __init__(self, client: EtcdClient, ttl: int) -> None:
        self._client = client
        self._ttl = ttl
        self.current: ProcessLease | None = None
        self._task: asyncio.Task[None] | None = None
        self._granted = asyncio.Event()
        self._lost_ids: list[int] = []

    async def lease(self) -> ProcessLease:
        if self.current is not None and self.current.alive:
            return self.current
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"etcd-lease-{self._ttl}s")
        try:
            async with asyncio.timeout(self._client.config.request_timeout):
                while self.current is None or not self.current.alive:
                    self._granted.clear()
                    await self._granted.wait()
        except TimeoutError:
            raise BackendUnavailable(f"etcd: no lease could be granted ({self._client.describe()})") from None
        return self.current

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                lease = await self._grant()
            except TrellisError as exc:  # unreachable, or refused (credentials): keep trying
                log.warning("etcd lease grant failed: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.1
            await self._revoke_lost()  # first, so that SERVING means the old locks are gone
            self.current = lease
            self._granted.set()
            self._client._lease_changed()
            await self._keep_alive(lease)
            log.warning("etcd lease %x lost: every lock of this process is released", lease.id)
            self._lost_ids.append(lease.id)
            lease.lost.set()
            self._client._lease_changed()

    async def _grant(self) -> ProcessLease:
        requested = asyncio.get_running_loop().time()
        response = await self._client.call("LeaseGrant", rpc.LeaseGrantRequest(TTL=self._ttl))
        if response.error:
            raise BackendUnavailable(f"etcd: lease grant refused: {response.error}")
        await self._client._start_lock_watch(response.header.revision + 1)
        return ProcessLease(response.ID, response.TTL, requested)

    async def _revoke_lost(self) -> None:
        """A lease we gave up on may live on in etcd (a restarted etcd renews every
        lease once): revoke it so its locks go now, not after another TTL."""
        while self._lost_ids:
            try:
                await self._client.call("LeaseRevoke", rpc.LeaseRevokeRequest(ID=self._lost_ids[0]))
            except BackendUnavailable as exc:
                if "not found" not in exc.message:
                    return  # try again after the next grant
                # already expired: nothing left to release
            self._lost_ids.pop(0)

    async def _keep_alive(self, lease: ProcessLease) -> None:
        """Renew at a third of the TTL; return once the lease must be considered lost:
        etcd says it expired, or no renewal succeeded within the TTL."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(lease.granted_at + lease.ttl) as deadline:
                while True:
                    try:
                        call = self._client._stub("Lease").LeaseKeepAlive(
                            metadata=self._client._metadata, wait_for_ready=True
                        )
                        while True:
                            sent = loop.time()
                            await call.write(rpc.LeaseKeepAliveRequest(ID=lease.id))
                            response = await call.read()
                            if response is grpc.aio.EOF:
                                break
                            if response.TTL <= 0:
                                return  # expired (or revoked) in etcd
                            deadline.reschedule(sent + response.TTL)
                            await asyncio.sleep(max(response.TTL / 3, 0.2))
                    except (grpc.RpcError, asyncio.InvalidStateError) as exc:
                        # The stream broke (member gone, etcd restarting): open another.
                        if isinstance(exc, grpc.RpcError):
                            with contextlib.suppress(TrellisError):
                                await self._client._maybe_reauthenticate(exc)
                        log.debug("etcd keepalive stream failed: %s", exc)
                    await asyncio.sleep(0.1)
        except TimeoutError:
            return

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        lease = self.current
        if lease is not None and lease.alive:
            lease.lost.set()
            try:
                async with asyncio.timeout(1.0):
                    await self._client.call("LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease.id))
            except (TimeoutError, TrellisError):
                pass  # it expires on its own after its TTL


_STUBS = {
    "KV": rpc.KVStub,
    "Lease": rpc.LeaseStub,
    "Watch": rpc.WatchStub,
    "Auth": rpc.AuthStub,
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
}
_RETRY_BACKOFF = 0.05
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
        self._keepers: dict[int, _LeaseKeeper] = {}
        self._serving: bool | None = None
        self.watches = WatchMux(self._open_watch)
        self.lock_deletions = DeletionWaiters()
        self._lock_watch_started = False
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

    async def _maybe_reauthenticate(self, exc: grpc.RpcError) -> bool:
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
                if not reauthenticated and await self._maybe_reauthenticate(exc):
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
        return self._stubs["Watch"].Watch(metadata=self._metadata, wait_for_ready=True)

    # --- process lease -------------------------------------------------------------

    async def lease(self, ttl: float | None = None) -> ProcessLease:
        """The live process lease for ``ttl`` seconds (rounded up to whole seconds,
        etcd's unit), granting it on first use. Raises BackendUnavailable."""
        seconds = max(1, math.ceil(ttl if ttl is not None else self.config.lease_ttl))
        keeper = self._keepers.get(seconds)
        if keeper is None:
            keeper = self._keepers[seconds] = _LeaseKeeper(self, seconds)
        await self.connect()
        return await keeper.lease()

    def _lease_changed(self) -> None:
        serving = all(k.current is not None and k.current.alive for k in self._keepers.values())
        if not serving:
            # Lock waiters re-check: theirs may be among the keys that just vanished.
            self.lock_deletions.wake_all()
        if serving != self._serving:
            self._serving = serving
            if self.on_health is not None:
                self.on_health(Health.SERVING if serving else Health.NOT_SERVING)

    async def _start_lock_watch(self, start_revision: int) -> None:
        """The one watch on every lock key of this deployment, started with the
        first lease so that it is current (no catch-up) when waiters need it."""
        if self._lock_watch_started:
            return
        self._lock_watch_started = True
        prefix = self.config.key("locks") + b"/"
        waiters = self.lock_deletions
        await self.watches.subscribe(
            prefix, prefix_end(prefix), start_revision, waiters.on_events, waiters.wake_all, deletes_only=True
        )

    def delete_when_settled(self, request: asyncio.Future[Any], key: bytes) -> None:
        """Delete ``key`` in the background once ``request`` (a call its caller abandoned,
        which may still write it) has settled. The request's outcome is collected here:
        nobody else will look at it (asyncio would log each one as never retrieved)."""

        def settled(done: asyncio.Future[Any]) -> None:
            if not done.cancelled():
                done.exception()
            self.delete_later(key)

        request.add_done_callback(settled)

    def delete_later(self, key: bytes) -> None:
        """Delete ``key`` in the background, retrying until etcd answers (used when
        releasing a lock fails: the key must not outlive the release)."""

        async def retry() -> None:
            backoff = 0.1
            while not self._closed:
                try:
                    await self.call("DeleteRange", rpc.DeleteRangeRequest(key=key))
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
            if keeper._task is not None:
                keeper._task.cancel()
            if keeper.current is not None:
                keeper.current.lost.set()
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
    resolved here, once; TLS then verifies the certificate against the first
    host name.
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
    names: list[str] = []
    for endpoint in config.endpoints:
        host, port = split_endpoint(endpoint)
        try:
            ip = ipaddress.ip_address(host)
            addresses.append((ip.version, str(ip), port))
        except ValueError:
            names.append(host)
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
    if names and config.use_tls:
        options.append(("grpc.ssl_target_name_override", names[0]))
    return target, options
