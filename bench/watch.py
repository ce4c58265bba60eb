#!/usr/bin/env python3
"""Session watches across replicas: what watching costs a step, and how late a change
reaches a watcher on another replica.

Starts a single-member etcd and two ``trellis serve`` processes (A and B: loader,
store and locks on etcd) on loopback, with a one-node flow whose every step saves
its input. Each round runs ``--steps`` sequential steps through A on a fresh
session twice, side by side: once unwatched, once with ``--watchers`` SDK watches
of that session (half on A, half on B). For each run it takes the step rate; for
the watched one also, per change, the time from the step's answer at the client to
the change's arrival at a watcher on B (cross-replica) and on A (same replica);
negative when the watch event overtook the answer. The order of the two runs
alternates between rounds.

Prints the median and spread (min-max) of the rates over the rounds, their ratio
(watched / unwatched, per round, then its median) and the delivery lag p50/p99.

Run:  .venv/bin/python bench/watch.py [--rounds N] [--steps N] [--watchers N]
The etcd binary must be on PATH (or in $ETCD_BIN). Every process is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from bench.common import percentile  # noqa: E402
from tests.support.etcd_process import EtcdCluster  # noqa: E402
from tests.support.replicas import Replica, serve_args, start_replicas  # noqa: E402
from trellis.adapters.etcd import EtcdClient, EtcdConfig  # noqa: E402
from trellis.adapters.etcd.publish import publish  # noqa: E402
from trellis.clients import Client  # noqa: E402

PREFIX = "/bench-watch"
GRAPH = "echo"
GIVE_UP = 120.0


async def follow(
    client: Client, session_id: str, arrivals: dict[int, float], ready: asyncio.Event, steps: int
) -> None:
    """Record when each change arrives; ``ready`` is set at the first bookmark (the watch is
    open); returns after ``steps`` changes."""
    async for event in client.sessions.watch_events(session_id):
        if event.bookmark:
            ready.set()
        elif event.diff is not None:
            arrivals[event.revision] = time.perf_counter()
            if len(arrivals) >= steps:
                return


async def run(
    stepper: Client, watchers: list[Client], session_id: str, steps: int
) -> tuple[float, list[float], list[float]]:
    """Step rate, and the lags (seconds) of the watchers on B and on A."""
    await stepper.sessions.start(session_id)
    arrivals: list[dict[int, float]] = [{} for _ in watchers]
    readies = [asyncio.Event() for _ in watchers]
    tasks = [
        asyncio.create_task(follow(w, session_id, got, ready, steps))
        for w, got, ready in zip(watchers, arrivals, readies, strict=True)
    ]
    try:
        async with asyncio.timeout(GIVE_UP):
            for ready in readies:
                await ready.wait()
            acked: dict[int, float] = {}
            began = time.perf_counter()
            for n in range(steps):
                step = await stepper.sessions.navigate(session_id, str(n))
                acked[step.state.revision] = time.perf_counter()
            rate = steps / (time.perf_counter() - began)
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    half = len(watchers) // 2
    on_a = [got[r] - acked[r] for got in arrivals[:half] for r in acked]
    on_b = [got[r] - acked[r] for got in arrivals[half:] for r in acked]
    return rate, on_b, on_a


async def main(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="trellis-bench-watch-"))
    rates: dict[str, list[float]] = {"unwatched": [], "watched": []}
    ratios: list[float] = []
    lag_b: list[float] = []
    lag_a: list[float] = []
    try:
        with EtcdCluster(1) as cluster:
            endpoint = cluster.endpoints[0]
            flow = work / "flow"
            flow.mkdir()
            (flow / "start.md").write_text("---\nwait: true\nsave_to: last\nto: start\n---\nSay\n")
            async with EtcdClient(EtcdConfig(endpoints=(endpoint,), prefix=PREFIX)) as client:
                await publish(client, GRAPH, flow)
            replicas = [
                Replica(
                    name,
                    serve_args([endpoint], PREFIX, GRAPH, entry="start"),
                    work,
                    env={"TRELLIS_LOG_LEVEL": "warning"},
                )
                for name in ("a", "b")
            ]
            start_replicas(replicas)
            a, b = replicas
            half = args.watchers // 2
            stepper = Client(a.target)
            watchers = [Client(a.target) for _ in range(half)] + [
                Client(b.target) for _ in range(args.watchers - half)
            ]
            try:
                await run(stepper, [], "warm-up", args.steps)
                for n in range(args.rounds):
                    measured: dict[str, float] = {}
                    order = ("unwatched", "watched") if n % 2 == 0 else ("watched", "unwatched")
                    for mode in order:
                        used = watchers if mode == "watched" else []
                        rate, on_b, on_a = await run(stepper, used, f"{mode}-{n}", args.steps)
                        measured[mode] = rate
                        rates[mode].append(rate)
                        lag_b.extend(on_b)
                        lag_a.extend(on_a)
                    ratios.append(measured["watched"] / measured["unwatched"])
            finally:
                for c in [stepper, *watchers]:
                    await c.close()
                for replica in replicas:
                    replica.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"{args.rounds} rounds of {args.steps} sequential steps through replica A; {args.watchers} watchers"
    )
    for mode, values in rates.items():
        print(
            f"{mode:>9}: {statistics.median(values):7.1f} steps/s "
            f"(spread {min(values):.1f}-{max(values):.1f})"
        )
    print(
        f"watched / unwatched: median {statistics.median(ratios):.2f} "
        f"(spread {min(ratios):.2f}-{max(ratios):.2f})"
    )
    for name, lags in (("watcher on B (other replica)", lag_b), ("watcher on A (same replica)", lag_a)):
        lags.sort()
        print(
            f"{name}: lag after the answer p50 {statistics.median(lags) * 1e3:.1f} ms, "
            f"p99 {percentile(lags, 0.99) * 1e3:.1f} ms ({len(lags)} changes)"
        )
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--steps", type=int, default=200, help="steps per run (default 200)")
    parser.add_argument("--watchers", type=int, default=4, help="watchers of the watched run (default 4)")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
