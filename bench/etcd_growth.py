#!/usr/bin/env python3
"""etcd storage growth per durable step, and what compaction and defragmentation give back.

Starts a single-member etcd on loopback and saves sessions the way steps do (every
save writes the whole state; etcd keeps each version until compaction): ``--steps``
saves of ``--state-kb`` KB states over ``--sessions`` sessions, each also writing a
durable timer key with it (as a step that stops at a node with a timeout does).
Reads the database size (etcd's Status) before, after the saves, after compacting
to the current revision, and after defragmenting, over ``--repeats`` rounds (a fresh
etcd each), and prints bytes of database per step (median, spread) and the size of
one step's writes, so docs/etcd.md's quota arithmetic rests on a measurement.

Run:  .venv/bin/python bench/etcd_growth.py [--steps N] [--state-kb K] [--repeats N]
The etcd binary must be on PATH (or in $ETCD_BIN). Every process is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.etcd_process import EtcdCluster

PREFIX = "/growth"


async def one_round(endpoint: str, steps: int, sessions: int, state_kb: int) -> dict[str, Any]:
    from aetcd import rpc

    from trellis.adapters.etcd import EtcdClient, EtcdConfig, EtcdStateStore
    from trellis.adapters.etcd.storage import storage_status
    from trellis.adapters.etcd.timers import EtcdTimerQueue
    from trellis.domain import State
    from trellis.timers import Timer

    async with EtcdClient(EtcdConfig(endpoints=(endpoint,), prefix=PREFIX)) as client:
        store = EtcdStateStore(client)
        queue = EtcdTimerQueue(client)
        store.written_with_save = queue.written_with_save
        before = await storage_status(client)
        states = {f"s{i}": State.new(f"s{i}", "ask") for i in range(sessions)}
        for state in states.values():
            state.context["blob"] = "x" * (state_kb * 1024)
        written = 0
        started = time.perf_counter()
        for n in range(steps):
            sid = f"s{n % sessions}"
            state = states[sid]
            state.context["n"] = n
            queue.stage(sid, Timer(sid, 0, "ask", time.time() + 3600))
            state.revision = await store.save(sid, state, expected_revision=state.revision)
            written += len(store._encode(state))
        elapsed = time.perf_counter() - started
        after = await storage_status(client)
        revision = (await client.call("Range", rpc.RangeRequest(key=b"/", count_only=True))).header.revision
        await client.call("Compact", rpc.CompactionRequest(revision=revision, physical=True))
        compacted = await storage_status(client)
        await client.call("Defragment", rpc.DefragmentRequest())
        defragmented = await storage_status(client)
    return {
        "per_step": (after.db_size - before.db_size) / steps,
        "state_bytes": written / steps,
        "after": after.db_size,
        "in_use_after": after.db_size_in_use,
        "compacted_in_use": compacted.db_size_in_use,
        "defragmented": defragmented.db_size,
        "rate": steps / elapsed,
    }


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):,.0f}, {min(values):,.0f}-{max(values):,.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20_000, help="saves per round (default 20000)")
    parser.add_argument(
        "--sessions", type=int, default=200, help="sessions they are spread over (default 200)"
    )
    parser.add_argument("--state-kb", type=int, default=5, help="KB of context per state (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds, a fresh etcd each (default 3)")
    args = parser.parse_args()
    rounds = []
    for _ in range(args.repeats):
        with EtcdCluster(1) as cluster:
            rounds.append(
                asyncio.run(one_round(cluster.endpoints[0], args.steps, args.sessions, args.state_kb))
            )
    mib = 1024 * 1024
    print(f"{args.steps} saves of {args.state_kb} KB states over {args.sessions} sessions", end="")
    print(f", {args.repeats} rounds")
    print(f"encoded state per step (bytes):          {spread([r['state_bytes'] for r in rounds])}")
    print(f"database growth per step (bytes):        {spread([r['per_step'] for r in rounds])}")
    growth = [r["per_step"] / r["state_bytes"] for r in rounds]
    print(f"growth per step / state size:             median {statistics.median(growth):.2f}")
    print(f"database after the saves (MiB):           {spread([r['after'] / mib for r in rounds])}")
    print(
        f"in use after compaction (MiB):            {spread([r['compacted_in_use'] / mib for r in rounds])}"
    )
    print(f"database after defragmentation (MiB):     {spread([r['defragmented'] / mib for r in rounds])}")
    print(f"saves/s (one at a time; not the point):   {spread([r['rate'] for r in rounds])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
