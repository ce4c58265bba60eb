#!/usr/bin/env python3
"""Lock hand-off on etcd, side by side in one run: EtcdLocker, aetcd's lock, a polling lock.

Contenders (2, then 4) fight for ONE key. Each has its own etcd connection (like
separate replicas) and loops: acquire, hold the lock for HOLD, release, think for
a random 0..THINK (seeded, the same for every lock), repeat, for DURATION seconds.

  (a) EtcdLocker: a queue of keys under the process lease, waiting on the
      predecessor's deletion through one long-lived watch (trellis)
  (b) aetcd's built-in lock (``client.lock(key, ttl)``): create-if-absent with a
      new lease per attempt, then a new watch for the holder's deletion
  (c) polling: create-if-absent in a transaction, retried every 100 ms (the
      original's Redis design, rebuilt on etcd; first attempt immediate)

Printed per lock and contender count: acquisitions/s, hand-off p50/p99 (from the
moment the holder starts releasing to the moment a waiting contender holds the
lock) and acquire-wait p99 (from calling acquire to holding; a contender still
waiting when time is up counts with the time it has waited), then the ratios.
Targets: hand-off p99 <= 15 ms at 4 contenders for (a); acquire-wait p99 of (a)
at least 10x lower than (c).

Run:  .venv/bin/python bench/etcd_lock.py [--duration S] [--hold MS] [--think MS]
It starts its own single-member etcd on loopback (the etcd binary must be on PATH
or in $ETCD_BIN) and removes it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aetcd
from aetcd import rpc

from tests.support.etcd_process import EtcdCluster
from trellis.adapters.etcd import EtcdClient, EtcdConfig, EtcdLocker
from trellis.adapters.etcd.locker import absent

LOCK_TTL = 30
POLL_INTERVAL = 0.1

Release = Callable[[], Awaitable[None]]
Acquire = Callable[[], Awaitable[Release]]


@dataclass
class Samples:
    acquisitions: int = 0
    handoffs: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    releasing_since: float | None = None


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# --- the three locks, each as "make a contender's acquire function" -------------------


async def etcd_locker(config: EtcdConfig, key: str) -> tuple[Acquire, Callable[[], Awaitable[None]]]:
    client = EtcdClient(config)
    await client.lease(LOCK_TTL)  # the process lease exists before the race starts
    locker = EtcdLocker(client)

    async def acquire() -> Release:
        handle = await locker.acquire(key, ttl=LOCK_TTL)
        return handle.unlock

    return acquire, client.close


async def aetcd_lock(config: EtcdConfig, key: str) -> tuple[Acquire, Callable[[], Awaitable[None]]]:
    host, port = config.endpoints[0].split(":")
    client = aetcd.Client(host=host, port=int(port))
    await client.connect()
    name = config.key("aetcd", key)

    async def acquire() -> Release:
        lock = client.lock(name, ttl=LOCK_TTL)
        await lock.acquire(timeout=None)

        async def release() -> None:
            await lock.release()
            if lock.lease is not None:
                await lock.lease.revoke()

        return release

    return acquire, client.close


async def polling_lock(config: EtcdConfig, key: str) -> tuple[Acquire, Callable[[], Awaitable[None]]]:
    client = EtcdClient(config)
    lease = await client.lease(LOCK_TTL)
    name = config.key("poll", key)

    async def acquire() -> Release:
        token = secrets.token_bytes(16)
        put = rpc.RequestOp(request_put=rpc.PutRequest(key=name, value=token, lease=lease.id))
        attempt = rpc.TxnRequest(compare=[absent(name)], success=[put])
        # Polling is the point of this contestant: it is the design being compared against.
        while not (await client.call("Txn", attempt)).succeeded:  # noqa: ASYNC110
            await asyncio.sleep(POLL_INTERVAL)

        async def release() -> None:
            mine = rpc.Compare(key=name, target=rpc.Compare.VALUE, result=rpc.Compare.EQUAL, value=token)
            delete = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=name))
            await client.call("Txn", rpc.TxnRequest(compare=[mine], success=[delete]))

        return release

    return acquire, client.close


LOCKS = {"EtcdLocker": etcd_locker, "aetcd lock": aetcd_lock, "polling 100ms": polling_lock}


# --- the race ---------------------------------------------------------------------------


async def race(
    make: Any, config: EtcdConfig, contenders: int, args: argparse.Namespace, seed: int
) -> Samples:
    key = f"bench-{secrets.token_hex(4)}"
    made = [await make(config, key) for _ in range(contenders)]
    samples = Samples()
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + args.duration
    waiting_since: dict[int, float] = {}

    async def contender(n: int, acquire: Acquire) -> None:
        rng = random.Random(seed * 100 + n)
        while loop.time() < stop_at:
            started = time.perf_counter()
            waiting_since[n] = started
            release = await acquire()
            got = time.perf_counter()
            del waiting_since[n]
            samples.acquisitions += 1
            samples.waits.append(got - started)
            if samples.releasing_since is not None and started < samples.releasing_since:
                samples.handoffs.append(got - samples.releasing_since)
            samples.releasing_since = None
            await asyncio.sleep(args.hold / 1000)
            samples.releasing_since = time.perf_counter()
            await release()
            await asyncio.sleep(rng.uniform(0, args.think / 1000))

    tasks = [asyncio.create_task(contender(n, acquire)) for n, (acquire, _) in enumerate(made)]
    await asyncio.wait(tasks, timeout=args.duration)
    now = time.perf_counter()
    samples.waits.extend(now - since for since in waiting_since.values())  # still waiting: censored
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for _, close in made:
        await close()
    return samples


def row(name: str, contenders: int, s: Samples, duration: float) -> dict[str, float]:
    stats = {
        "rate": s.acquisitions / duration,
        "h50": percentile(s.handoffs, 50) * 1000,
        "h99": percentile(s.handoffs, 99) * 1000,
        "w99": percentile(s.waits, 99) * 1000,
    }
    print(
        f"  {name:<14} {contenders:>3}  {stats['rate']:>10.1f}  {stats['h50']:>9.2f}  {stats['h99']:>9.2f}"
        f"  {stats['w99']:>10.2f}  {len(s.handoffs):>8}"
    )
    return stats


async def main_async(args: argparse.Namespace) -> int:
    with EtcdCluster(1) as cluster:
        config = EtcdConfig(endpoints=tuple(cluster.endpoints), prefix="/bench")
        print(
            f"etcd on {cluster.endpoints[0]}; hold {args.hold} ms, think 0..{args.think} ms, "
            f"{args.duration:g} s each"
        )
        print(
            f"  {'lock':<14} {'n':>3}  {'acq/s':>10}  {'hand p50':>9}  {'hand p99':>9}  "
            f"{'wait p99':>10}  {'handoffs':>8}"
        )
        results: dict[tuple[str, int], dict[str, float]] = {}
        for contenders in (2, 4):
            for name, make in LOCKS.items():
                # One seed per contender count: every lock sees the same think times.
                samples = await race(make, config, contenders, args, seed=contenders)
                results[(name, contenders)] = row(name, contenders, samples, args.duration)
    print("\nratios (>1: EtcdLocker better)")
    for contenders in (2, 4):
        ours = results[("EtcdLocker", contenders)]
        for other in ("aetcd lock", "polling 100ms"):
            them = results[(other, contenders)]
            print(
                f"  n={contenders} vs {other:<14} acq/s x{ours['rate'] / them['rate']:.1f}"
                f"   hand-off p99 x{them['h99'] / ours['h99']:.1f}"
                f"   acquire-wait p99 x{them['w99'] / ours['w99']:.1f}"
            )
    ours4, poll4 = results[("EtcdLocker", 4)], results[("polling 100ms", 4)]
    handoff_ok = ours4["h99"] <= 15.0
    wait_ok = poll4["w99"] / ours4["w99"] >= 10.0
    print(
        f"\ntarget hand-off p99 <= 15 ms at 4 contenders: {ours4['h99']:.2f} ms  "
        f"{'PASS' if handoff_ok else 'MISS'}"
    )
    print(
        f"target acquire-wait p99 >= 10x lower than polling: x{poll4['w99'] / ours4['w99']:.1f}  "
        f"{'PASS' if wait_ok else 'MISS'}"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per lock and contender count")
    parser.add_argument("--hold", type=float, default=2.0, help="milliseconds each holder keeps the lock")
    parser.add_argument("--think", type=float, default=10.0, help="max milliseconds between acquisitions")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
