#!/usr/bin/env python3
"""Durable steps on etcd through the gRPC server, as a ratio of raw etcd transactions.

Starts a single-member etcd and ONE ``trellis serve`` process (loader, store and
locks on etcd: each step is lock_and_load + save_and_unlock, two transactions) on
loopback, publishes a 20-node chain (tests/etcd_system/flows.py: each node waits
for input and saves it), and measures, side by side in ONE run:

  raw    single-key etcd transactions (compare the key's mod revision, put; as a
         session save does) through the adapter's own EtcdClient (aetcd.rpc stubs,
         the same channel options), each task on a key of its own
  steps  Sessions.Navigate: each task walks a session of its own along the chain
         (no two steps contend for one lock) and starts a new one (not counted)
         after the last node

Both loads come from a SEPARATE client process (a subprocess per measurement,
``--concurrency`` tasks), so the client does not steal the server's event loop,
after a warm-up, for a fixed time, interleaved over ``--repeats`` rounds. Prints
the best rate with p50/p99 latency per kind and the steps/raw ratio: the median
over rounds of the ratio within a round (raw and steps back to back). Target:
ratio >= 0.4 at concurrency 16.

Run:  .venv/bin/python bench/etcd_steps.py [--duration S] [--repeats N] [--concurrency N] [--profile]
      (--profile: the server runs under cProfile; its top functions are printed)
The etcd binary must be on PATH (or in $ETCD_BIN). Every process is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Load, bench_parser, client_process, run_workers
from tests.etcd_system.flows import counter_node, write_counter_flow
from tests.etcd_system.replicas import Replica, serve_args
from tests.support.etcd_process import EtcdCluster

CHAIN = 20
PREFIX = "/bench"
GRAPH = "chain"
KINDS = ("raw", "steps")
TARGET = 0.4


# --- the client process ---------------------------------------------------------------------


async def measured(
    worker: Callable[[int, Load], Coroutine[Any, Any, None]], concurrency: int, duration: float, warmup: float
) -> dict[str, Any]:
    """``run_workers`` plus this client process's CPU time so far."""
    summary = await run_workers(worker, concurrency, duration, warmup)
    summary["client_cpu"] = time.process_time()
    return summary


async def raw_client(endpoint: str, concurrency: int, duration: float, warmup: float) -> dict[str, Any]:
    from aetcd import rpc

    from trellis.adapters.etcd import EtcdClient, EtcdConfig

    client = EtcdClient(EtcdConfig(endpoints=(endpoint,), prefix=PREFIX))
    await client.connect()
    value = b"x" * 400  # about the size of a chain session's JSON
    run = f"{os.getpid()}"

    async def worker(index: int, load: Load) -> None:
        key = client.config.key(f"raw/{run}/{index}")
        revision = 0
        while load.running:
            started = time.perf_counter()
            request = rpc.TxnRequest(
                compare=[
                    rpc.Compare(
                        key=key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=revision
                    )
                ],
                success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))],
                failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))],
            )
            response = await client.call("Txn", request)
            if not response.succeeded:
                raise SystemExit(f"raw transaction on {key!r} lost its compare")
            revision = response.header.revision
            load.record(started)

    try:
        return await measured(worker, concurrency, duration, warmup)
    finally:
        await client.close()


async def steps_client(target: str, concurrency: int, duration: float, warmup: float) -> dict[str, Any]:
    import grpc  # type: ignore[import-untyped]

    from trellis.api.v1 import sessions_pb2 as spb
    from trellis.api.v1 import sessions_pb2_grpc
    from trellis.api.v1 import types_pb2 as pb

    go = pb.Input(text="go")
    async with grpc.aio.insecure_channel(target) as channel:
        sessions = sessions_pb2_grpc.SessionsStub(channel)

        async def worker(index: int, load: Load) -> None:
            walk = 0

            async def new_session() -> str:
                nonlocal walk
                walk += 1
                sid = f"p{os.getpid()}-w{index}-{walk}"
                await sessions.Start(spb.SessionsStartRequest(session_id=sid))
                return sid

            sid = await new_session()
            while load.running:
                started = time.perf_counter()
                step = (await sessions.Navigate(spb.SessionsNavigateRequest(session_id=sid, input=go))).step
                load.record(started)
                if step.terminal:
                    sid = await new_session()

        return await measured(worker, concurrency, duration, warmup)


# --- the coordinator ------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    kind: str, target: str, concurrency: int, duration: float, warmup: float, watched: dict[str, int]
) -> dict[str, Any]:
    """One client process' run; adds the CPU seconds per call each ``watched`` process
    (name -> PID) spent meanwhile, warm-up included (so slightly over-counted)."""
    before = {name: cpu_seconds(pid) for name, pid in watched.items()}
    result = await client_process(
        __file__, kind, kind, target, str(concurrency), str(duration), str(warmup)
    )
    calls_all = result["rate"] * (duration + warmup)
    result["cpu_ms"] = {
        name: (cpu_seconds(pid) - before[name]) * 1e3 / calls_all for name, pid in watched.items()
    }
    result["cpu_ms"]["client"] = result.pop("client_cpu") * 1e3 / calls_all
    return result


async def publish_chain(endpoint: str, directory: Path) -> None:
    from trellis.adapters.etcd import EtcdClient, EtcdConfig
    from trellis.adapters.etcd.publish import publish

    async with EtcdClient(EtcdConfig(endpoints=(endpoint,), prefix=PREFIX)) as client:
        await publish(client, GRAPH, write_counter_flow(directory, CHAIN - 1))


async def main(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="trellis-bench-etcd-steps-"))
    try:
        return await run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def run(args: argparse.Namespace, work: Path) -> int:
    profile_path = work / "server.prof"
    best: dict[str, dict[str, Any]] = {}
    ratios: list[float] = []
    with EtcdCluster(1) as cluster:
        endpoint = cluster.endpoints[0]
        await publish_chain(endpoint, work / "flow")
        server = Replica(
            "server",
            serve_args(
                [endpoint], PREFIX, GRAPH, lock_ttl="30s", request_timeout="5s", entry=counter_node(0)
            ),
            work,
            env={"TRELLIS_LOG_LEVEL": "warning", "TRELLIS_HEALTH_PROBE_INTERVAL": "5"},
            python_args=("-m", "cProfile", "-o", str(profile_path)) if args.profile else (),
        )
        server.start()
        try:
            server.wait_serving()
            targets = {"raw": endpoint, "steps": server.target}
            assert server.process is not None and cluster.members[0].process is not None
            watched = {"server": server.process.pid, "etcd": cluster.members[0].process.pid}
            for _ in range(args.repeats):
                round_rates: dict[str, float] = {}
                for kind in KINDS:  # interleaved: drift in machine load hits both alike
                    result = await measure(
                        kind, targets[kind], args.concurrency, args.duration, args.warmup, watched
                    )
                    if kind not in best or result["rate"] > best[kind]["rate"]:
                        best[kind] = result
                    round_rates[kind] = result["rate"]
                ratios.append(round_rates["steps"] / round_rates["raw"] if round_rates["raw"] else 0.0)
        finally:
            server.stop()  # SIGTERM: a graceful exit, which is when cProfile writes its file
            if server.process is not None and server.process.returncode not in (0, None):
                print(f"server exited with {server.process.returncode}:\n{server.log()[-2000:]}")

    print(
        f"durable steps on etcd (one server process, {CHAIN}-node chain, a session per task) vs raw "
        f"single-key etcd transactions; separate client process; concurrency {args.concurrency}; "
        f"{args.repeats} rounds x {args.duration:.1f}s (rate: best; ratio: median of per-round ratios)"
    )
    print(f"{'kind':<8}{'per s':>10}{'p50 ms':>9}{'p99 ms':>9}   CPU ms per call: server / etcd / client")
    for kind in KINDS:
        r = best[kind]
        cpu = r["cpu_ms"]
        print(
            f"{kind:<8}{r['rate']:>10.0f}{r['p50'] * 1e3:>9.2f}{r['p99'] * 1e3:>9.2f}"
            f"   {cpu['server']:.2f} / {cpu['etcd']:.2f} / {cpu['client']:.2f}"
        )
    ratio = statistics.median(ratios)
    rounds = ", ".join(f"{r:.2f}" for r in ratios)
    met = "met" if ratio >= TARGET else "NOT met"
    print(f"steps/raw ratio: {ratio:.2f} (rounds: {rounds}); target >= {TARGET}: {met}")
    if args.profile and profile_path.exists():
        stats = pstats.Stats(str(profile_path))
        print("\nserver profile, by own time:")
        stats.sort_stats("tottime").print_stats(25)
        print("server profile, trellis code by cumulative time:")
        stats.sort_stats("cumulative").print_stats("trellis/", 30)
    return 0


def parse_args() -> argparse.Namespace:
    parser = bench_parser(__doc__, "rounds", ("KIND", "TARGET", "CONC", "DURATION", "WARMUP"))
    parser.add_argument("--concurrency", type=int, default=16, help="client tasks (default 16)")
    parser.add_argument("--profile", action="store_true", help="run the server under cProfile")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.client:
        kind_, target_, conc_, duration_, warmup_ = arguments.client
        client_of = raw_client if kind_ == "raw" else steps_client
        outcome = asyncio.run(client_of(target_, int(conc_), float(duration_), float(warmup_)))
        print(json.dumps(outcome))
        sys.exit(0)
    sys.exit(asyncio.run(main(arguments)))
