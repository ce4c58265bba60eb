#!/usr/bin/env python3
"""Durable timers on etcd: how late they fire, and what arming one costs a step.

Starts a single-member etcd and three ``trellis serve`` replicas (loader, store, locks
and timers on etcd) on loopback, publishes one graph, and measures in ONE run, over
``--repeats`` interleaved rounds:

  lateness   ``--timers`` sessions started at once, spread over the three replicas,
             each waiting at a node with ``timeout: --timeout``. The bench watches
             etcd itself: a timer key's first value gives the timer's due time (as
             the replica armed it), the session key's first write at node ``late``
             gives when its timeout step was saved. Lateness = saved - due, p50 and
             p99 per round. Every session must time out exactly once (checked: one
             write at ``late`` per session).
  plain      Sessions.Navigate along a 20-node chain of input nodes without a
             timeout, ``--concurrency`` tasks, one replica, from a separate
             client process (steps/s, p50/p99)
  timed      the same chain with ``timeout: 1h`` on every node: each step arms a
             timer (one more etcd write per step)

Prints per round and then the median and spread of: lateness p50/p99 and the
timed/plain steps/s ratio. Target: p99 lateness <= 1 s.

Run:  .venv/bin/python bench/timers.py [--timers N] [--timeout S] [--repeats N]
      [--duration S] [--concurrency N]
The etcd binary must be on PATH (or in $ETCD_BIN). Every process is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bench_parser, client_process, percentile, run_workers, session_walker
from tests.support.etcd_process import EtcdCluster
from tests.support.replicas import Replica, serve_args

PREFIX = "/bench-timers"
GRAPH = "timers"
CHAIN = 20
REPLICAS = 3
TARGET_P99 = 1.0
START_CONCURRENCY = 64


def write_flow(directory: Path, timeout: float) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "start.md": "---\ntransitions:\n"
        "  - to: ask\n    condition: \"kind == 'lateness'\"\n"
        "  - to: t0\n    condition: \"kind == 'timed'\"\n"
        "  - to: p0\n---\n",
        "ask.md": f"---\nwait: true\ntimeout: {timeout}s\non_timeout: late\nsave_to: answer\nto: late\n"
        "---\nQuick!\n",
        "late.md": "---\nwait: true\nsave_to: after\nto: late\n---\nToo late\n",
        f"p{CHAIN}.md": "---\n---\nend\n",
        f"t{CHAIN}.md": "---\n---\nend\n",
    }
    for i in range(CHAIN):
        files[f"p{i}.md"] = f"---\nwait: true\nsave_to: got_{i}\nto: p{i + 1}\n---\nstep {i}\n"
        files[f"t{i}.md"] = (
            f"---\nwait: true\ntimeout: 1h\non_timeout: late\nsave_to: got_{i}\nto: t{i + 1}\n---\nstep {i}\n"
        )
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


# --- the client process: steps along a chain ------------------------------------------------


async def chain_client(
    kind: str, target: str, concurrency: int, duration: float, warmup: float
) -> dict[str, Any]:
    import grpc  # type: ignore[import-untyped]

    from trellis.api.v1 import sessions_pb2_grpc
    from trellis.api.v1 import types_pb2 as pb

    go = pb.Input(text="go")
    context = orjson.dumps({"kind": kind}).decode()
    async with grpc.aio.insecure_channel(target) as channel:
        sessions = sessions_pb2_grpc.SessionsStub(channel)

        worker = session_walker(sessions, kind, go, context_json=context)
        return await run_workers(worker, concurrency, duration, warmup)


# --- lateness: watch etcd while the timers come due -----------------------------------------


class Observed:
    """What the bench's own etcd watch saw: each timer's due time (its first value) and
    when each session was first saved at ``late`` (and how many times)."""

    def __init__(self, timers_prefix: bytes, sessions_prefix: bytes) -> None:
        self.timers_prefix = timers_prefix
        self.sessions_prefix = sessions_prefix
        self.due: dict[str, float] = {}
        self.late_at: dict[str, float] = {}
        self.late_writes: dict[str, int] = {}
        self.expected: set[str] = set()
        self.all_late = asyncio.Event()

    def on_events(self, events: Any, _revision: int) -> None:
        now = time.time()
        for event in events:
            kv = event.kv
            if event.type != 0 or not kv.value:  # puts only
                continue
            if kv.key.startswith(self.timers_prefix):
                value = orjson.loads(kv.value)
                self.due.setdefault(value["session_id"], float(value["due"]))
            elif kv.key.startswith(self.sessions_prefix):
                state = orjson.loads(kv.value)
                if state.get("current_node_id") == "late":
                    sid = state["session_id"]
                    self.late_at.setdefault(sid, now)
                    self.late_writes[sid] = self.late_writes.get(sid, 0) + 1
        if self.expected and self.expected.issubset(self.late_at):
            self.all_late.set()


async def lateness_round(
    targets: list[str], endpoint: str, round_no: int, count: int, timer_seconds: float
) -> dict[str, Any]:
    import grpc

    from trellis.adapters.etcd import EtcdClient, EtcdConfig
    from trellis.adapters.etcd.client import prefix_end
    from trellis.api.v1 import sessions_pb2 as spb
    from trellis.api.v1 import sessions_pb2_grpc

    client = EtcdClient(EtcdConfig(endpoints=(endpoint,), prefix=PREFIX))
    await client.connect()
    base = client.config.key("")
    observed = Observed(client.config.key("timers") + b"/", client.config.key("sessions") + b"/")
    subscription = await client.watches.subscribe(
        base, prefix_end(base), 0, observed.on_events, lambda _r: None
    )
    channels = [grpc.aio.insecure_channel(target) for target in targets]
    try:
        stubs = [sessions_pb2_grpc.SessionsStub(channel) for channel in channels]
        ids = [f"late-{round_no}-{i}" for i in range(count)]
        observed.expected = set(ids)
        context = orjson.dumps({"kind": "lateness"}).decode()
        gate = asyncio.Semaphore(START_CONCURRENCY)

        async def start(i: int, sid: str) -> None:
            async with gate:
                request = spb.SessionsStartRequest(session_id=sid, context_json=context)
                await stubs[i % len(stubs)].Start(request, timeout=60)

        began = time.monotonic()
        await asyncio.gather(*(start(i, sid) for i, sid in enumerate(ids)))
        started_in = time.monotonic() - began
        try:
            await asyncio.wait_for(observed.all_late.wait(), timer_seconds + 120)
        except TimeoutError:
            pass  # reported below
        await asyncio.sleep(0.5)  # a doubled fire would show up now
    finally:
        await client.watches.unsubscribe(subscription)
        for channel in channels:
            await channel.close()
        await client.close()
    missing = [sid for sid in ids if sid not in observed.late_at or sid not in observed.due]
    if missing:
        raise SystemExit(f"round {round_no}: {len(missing)} timers not seen firing (e.g. {missing[:3]})")
    doubled = [sid for sid in ids if observed.late_writes[sid] != 1]
    lateness = sorted(observed.late_at[sid] - observed.due[sid] for sid in ids)
    return {
        "p50": percentile(lateness, 0.5),
        "p99": percentile(lateness, 0.99),
        "max": lateness[-1],
        "doubled": len(doubled),
        "started_in": started_in,
    }


# --- the driver ------------------------------------------------------------------------------


async def publish_flow(endpoint: str, directory: Path) -> None:
    from trellis.adapters.etcd import EtcdClient, EtcdConfig
    from trellis.adapters.etcd.publish import publish

    async with EtcdClient(EtcdConfig(endpoints=(endpoint,), prefix=PREFIX)) as client:
        await publish(client, GRAPH, directory)


def spread(values: list[float], unit: str = "") -> str:
    shown = ", ".join(f"{v:.3f}" for v in values)
    return (
        f"median {statistics.median(values):.3f}{unit}, {min(values):.3f}-{max(values):.3f} (rounds: {shown})"
    )


async def run(args: argparse.Namespace, work: Path) -> int:
    with EtcdCluster(1) as cluster:
        endpoint = cluster.endpoints[0]
        await publish_flow(endpoint, write_flow(work / "flow", args.timeout))
        replicas = [
            Replica(f"r{i}", serve_args(cluster.endpoints, PREFIX, GRAPH, entry="start"), work / "logs")
            for i in range(REPLICAS)
        ]
        try:
            for replica in replicas:
                replica.start()
            for replica in replicas:
                replica.wait_serving()
            targets = [replica.target for replica in replicas]
            lateness: list[dict[str, Any]] = []
            cost: dict[str, list[dict[str, Any]]] = {"plain": [], "timed": []}
            for round_no in range(args.repeats):
                lateness.append(await lateness_round(targets, endpoint, round_no, args.timers, args.timeout))
                order = ("plain", "timed") if round_no % 2 == 0 else ("timed", "plain")
                for kind in order:
                    cost[kind].append(
                        await client_process(
                            __file__,
                            kind,
                            kind,
                            targets[0],
                            str(args.concurrency),
                            str(args.duration),
                            str(args.warmup),
                        )
                    )
                late, plain, timed = lateness[-1], cost["plain"][-1], cost["timed"][-1]
                print(
                    f"round {round_no + 1}: {args.timers} timers started in {late['started_in']:.2f}s, "
                    f"lateness p50 {late['p50']:.3f}s p99 {late['p99']:.3f}s max {late['max']:.3f}s, "
                    f"doubled {late['doubled']}; steps/s plain {plain['rate']:.0f} timed {timed['rate']:.0f}",
                    flush=True,
                )
        finally:
            for replica in replicas:
                replica.stop()
    report(args, lateness, cost)
    return 0


def report(
    args: argparse.Namespace, lateness: list[dict[str, Any]], cost: dict[str, list[dict[str, Any]]]
) -> None:
    print(
        f"\n{args.timers} timers of {args.timeout:g}s across {REPLICAS} replicas on one etcd member; "
        f"steps at concurrency {args.concurrency} on one replica, {args.duration:g}s per cell; "
        f"{args.repeats} interleaved rounds; load average {os.getloadavg()[0]:.1f}"
    )
    p99 = [r["p99"] for r in lateness]
    print(f"lateness p50 (s): {spread([r['p50'] for r in lateness])}")
    met = "met" if statistics.median(p99) <= TARGET_P99 else "NOT met"
    print(f"lateness p99 (s): {spread(p99)}; target <= {TARGET_P99:g} s: {met}")
    print(f"timeouts applied twice (must be 0): {sum(r['doubled'] for r in lateness)}")
    for kind in ("plain", "timed"):
        rounds = cost[kind]
        print(
            f"{kind:<6} steps/s {spread([r['rate'] for r in rounds])}; "
            f"p50 {statistics.median(r['p50'] for r in rounds) * 1000:.1f} ms, "
            f"p99 {statistics.median(r['p99'] for r in rounds) * 1000:.1f} ms (medians)"
        )
    ratios = [t["rate"] / p["rate"] for p, t in zip(cost["plain"], cost["timed"], strict=True)]
    print(f"steps/s with an armed timer / without: {spread(ratios)}")


def main() -> int:
    parser = bench_parser(
        __doc__, "interleaved rounds", ("KIND", "TARGET", "CONCURRENCY", "DURATION", "WARMUP")
    )
    parser.add_argument("--timers", type=int, default=1000, help="timers per lateness round (default 1000)")
    parser.add_argument("--timeout", type=float, default=5.0, help="their timeout in seconds (default 5)")
    parser.add_argument("--concurrency", type=int, default=16, help="step tasks (default 16)")
    args = parser.parse_args()
    if args.client:
        kind, target, concurrency, duration, warmup = args.client
        result = asyncio.run(chain_client(kind, target, int(concurrency), float(duration), float(warmup)))
        print(orjson.dumps(result).decode())
        return 0
    with tempfile.TemporaryDirectory(prefix="trellis-bench-timers-") as work:
        return asyncio.run(run(args, Path(work)))


if __name__ == "__main__":
    sys.exit(main())
