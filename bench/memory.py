#!/usr/bin/env python3
"""Server memory per stored session: the memory store and the etcd store, side by side.

Starts two ``trellis serve`` processes on loopback over the same small flow (a
chain of input nodes, tests/support/system_flows.py): one keeps sessions in its
memory store, the other in a single-member etcd (loader, store and locks on
etcd). Creates sessions in both through Sessions.Start (``--concurrency``
calls at a time, from this process) up to each of ``--sessions`` (default
10,000 and 50,000), and after each reads the server's resident set size
(VmRSS, /proc). Prints, per store, the RSS and the growth per session since
the first measurement (a few hundred sessions, so imports, caches and
connections are already counted) — the cost of one more stored session — and
since the previous measurement (flat: about 0).

A new session's state is about 110 bytes of JSON. Target: memory store
<= 1 KB per session; etcd store flat (its server keeps only a bounded cache
of recent sessions, EtcdStateStore's ``cached_sessions``).

Run:  .venv/bin/python bench/memory.py [--sessions 10000,50000] [--concurrency N]
The etcd binary must be on PATH (or in $ETCD_BIN). Every process is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.etcd_process import EtcdCluster
from tests.support.replicas import Replica, serve_args
from tests.support.system_flows import counter_node, write_counter_flow

PREFIX = "/bench-memory"
GRAPH = "chain"
BASELINE = 500


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def create_sessions(target: str, first: int, last: int, concurrency: int) -> None:
    """Sessions ``m<first>`` .. ``m<last - 1>``, ``concurrency`` Starts at a time."""
    import grpc  # type: ignore[import-untyped]

    from trellis.api.v1 import sessions_pb2 as spb
    from trellis.api.v1 import sessions_pb2_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        sessions = sessions_pb2_grpc.SessionsStub(channel)
        numbers = iter(range(first, last))

        async def worker() -> None:
            for n in numbers:
                await sessions.Start(spb.SessionsStartRequest(session_id=f"m{n:07d}"), timeout=30)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def publish_chain(endpoint: str, directory: Path) -> None:
    from trellis.adapters.etcd import EtcdClient, EtcdConfig
    from trellis.adapters.etcd.publish import publish

    async with EtcdClient(EtcdConfig(endpoints=(endpoint,), prefix=PREFIX)) as client:
        await publish(client, GRAPH, directory)


async def run(args: argparse.Namespace, work: Path) -> None:
    counts = sorted(int(n) for n in args.sessions.split(","))
    flow = write_counter_flow(work / "flow", 5)
    env = {"TRELLIS_LOG_LEVEL": "warning", "TRELLIS_HEALTH_PROBE_INTERVAL": "5"}
    with EtcdCluster(1) as cluster:
        endpoint = cluster.endpoints[0]
        await publish_chain(endpoint, flow)
        servers = {
            "memory": Replica(
                "memory",
                [
                    "--loader",
                    f"dir:{flow}",
                    "--store",
                    "memory",
                    "--locker",
                    "local",
                    "--entry",
                    counter_node(0),
                ],
                work,
                env=env,
            ),
            "etcd": Replica(
                "etcd",
                serve_args(
                    [endpoint], PREFIX, GRAPH, lock_ttl="30s", request_timeout="5s", entry=counter_node(0)
                ),
                work,
                env=env,
            ),
        }
        rows: dict[str, list[tuple[int, int]]] = {name: [] for name in servers}
        try:
            for server in servers.values():
                server.start()
            for server in servers.values():
                server.wait_serving()
            for name, server in servers.items():
                assert server.process is not None
                made = 0
                for count in [BASELINE, *counts]:
                    await create_sessions(server.target, made, count, args.concurrency)
                    made = count
                    await asyncio.sleep(0.5)  # let in-flight buffers drain
                    rows[name].append((count, rss_bytes(server.process.pid)))
                    print(f"  {name}: {count} sessions", file=sys.stderr)
        finally:
            for server in servers.values():
                server.stop()
    print(f"server RSS per stored session (growth since {BASELINE} sessions), new sessions of a small flow")
    print(f"{'store':<8}{'sessions':>10}{'RSS MiB':>10}{'bytes/session':>15}{'since previous':>16}")
    for name, measured in rows.items():
        base_count, base_rss = measured[0]
        previous = measured[0]
        for count, rss in measured[1:]:
            per = (rss - base_rss) / (count - base_count)
            step = (rss - previous[1]) / (count - previous[0])
            previous = (count, rss)
            print(f"{name:<8}{count:>10}{rss / 2**20:>10.1f}{per:>15.0f}{step:>16.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sessions", default="10000,50000", help="session counts to measure at (default 10000,50000)"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="Starts in flight (default 32)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trellis-bench-memory-"))
    try:
        asyncio.run(run(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
