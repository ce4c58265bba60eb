"""The process lease: granted once, kept alive in the background, re-granted after a loss.

Every lock a process takes lives under one lease per TTL (in practice one), like
etcd's own concurrency Session. A crashed process stops renewing, its lease
expires and every lock it held disappears with it.

If renewing fails for longer than the TTL the lease counts as lost: its
``alive`` turns False for good (handles built on it report ``held() == False``;
etcd refuses writes fenced by them, their lock keys are gone), and a new lease
is granted as soon as etcd answers again.

The keeper knows the connection only through ``LeaseHost`` (EtcdClient is one),
so this module sits below the client as watch.py does: the client owns one
keeper per TTL and hears from it when a lease is granted or lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import grpc  # type: ignore[import-untyped]
from aetcd import rpc

from trellis.adapters.etcd.config import EtcdConfig
from trellis.errors import BackendUnavailable, TrellisError

log = logging.getLogger(__name__)


class LeaseHost(Protocol):
    """What a keeper needs from the connection its lease lives on."""

    config: EtcdConfig

    def describe(self) -> str: ...

    async def call(self, method: str, request: Any) -> Any: ...

    def open_keepalive(self) -> Any:
        """A new bidirectional LeaseKeepAlive call (grpc.aio.StreamStreamCall)."""
        ...

    async def reauthenticate_if_expired(self, exc: grpc.RpcError) -> bool: ...


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


class LeaseKeeper:
    """Grants, renews and, after a loss, re-grants the process lease of one TTL.

    ``on_granted(revision)`` runs before a new lease is handed out (the revision
    etcd granted it at); ``on_changed()`` after each grant and each loss.
    """

    def __init__(
        self,
        host: LeaseHost,
        ttl: int,
        *,
        on_granted: Callable[[int], Awaitable[None]],
        on_changed: Callable[[], None],
    ) -> None:
        self._host = host
        self._ttl = ttl
        self._on_granted = on_granted
        self._on_changed = on_changed
        self.current: ProcessLease | None = None
        self._task: asyncio.Task[None] | None = None
        self._granted = asyncio.Event()
        self._lost_ids: list[int] = []

    @property
    def holds(self) -> bool:
        """A lease of this TTL is granted and alive."""
        return self.current is not None and self.current.alive

    async def lease(self) -> ProcessLease:
        if self.current is not None and self.current.alive:
            return self.current
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"etcd-lease-{self._ttl}s")
        try:
            async with asyncio.timeout(self._host.config.request_timeout):
                while self.current is None or not self.current.alive:
                    self._granted.clear()
                    await self._granted.wait()
        except TimeoutError:
            raise BackendUnavailable(f"etcd: no lease could be granted ({self._host.describe()})") from None
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
            self._on_changed()
            await self._keep_alive(lease)
            log.warning("etcd lease %x lost: every lock of this process is released", lease.id)
            self._lost_ids.append(lease.id)
            lease.lost.set()
            self._on_changed()

    async def _grant(self) -> ProcessLease:
        requested = asyncio.get_running_loop().time()
        response = await self._host.call("LeaseGrant", rpc.LeaseGrantRequest(TTL=self._ttl))
        if response.error:
            raise BackendUnavailable(f"etcd: lease grant refused: {response.error}")
        await self._on_granted(response.header.revision)
        return ProcessLease(response.ID, response.TTL, requested)

    async def _revoke_lost(self) -> None:
        """A lease we gave up on may live on in etcd (a restarted etcd renews every
        lease once): revoke it so its locks go now, not after another TTL."""
        while self._lost_ids:
            try:
                await self._host.call("LeaseRevoke", rpc.LeaseRevokeRequest(ID=self._lost_ids[0]))
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
                        call = self._host.open_keepalive()
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
                                await self._host.reauthenticate_if_expired(exc)
                        log.debug("etcd keepalive stream failed: %s", exc)
                    await asyncio.sleep(0.1)
        except TimeoutError:
            return

    async def close(self) -> None:
        """Stop renewing and revoke the lease, releasing its locks now."""
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
                    await self._host.call("LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease.id))
            except (TimeoutError, TrellisError):
                pass  # it expires on its own after its TTL

    def abandon(self) -> None:
        """Stop renewing without revoking, as a crashed process would."""
        if self._task is not None:
            self._task.cancel()
        if self.current is not None:
            self.current.lost.set()
