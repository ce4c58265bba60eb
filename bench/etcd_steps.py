#!/usr/bin/env python3
"""Durable steps on etcd through the gRPC server, as a ratio of raw etcd transactions.

Starts a single-member etcd and two ``trellis serve`` replicas (loader, store and
locks on etcd) on loopback, the second on uvloop when it is installed (else on
asyncio's loop too); publishes a 20-node chain (tests/support/system_flows.py: each
node waits for input and saves it), and measures, side by side in ONE run:

  raw            single-key etcd transactions (compare the key's mod revision, put;
                 as a session save does) through the adapter's own EtcdClient (aetcd.rpc
                 stubs, the same channel options), each task on a key of its own
  steps          Sessions.Navigate on the first replica: each task walks a session of
                 its own along the chain (uncontended: one transaction per step, the
                 concurrent ones grouped) and starts a new one (not counted) after the
                 last node
  steps-ids      the same as steps, each Navigate with a request ID (a fresh UUID, as
                 the SDK sends): the price of safe retries (the ID is stored with the
                 state in the step's own write)
  steps-stream   the same as steps-ids, every task's steps over ONE Sessions.Steps
                 stream (the steps ready together in one message, as the SDK's
                 step_stream=True sends them)
  steps-uvloop   the same as steps on the replica running uvloop (when installed)
  contended      every task on ONE session, half of them through each replica, a
                 new session when the walk ends; afterwards every acknowledged
                 step is checked to be stored exactly once

All loads come from a SEPARATE client process (a subprocess per measurement,
``--concurrency`` tasks), so the client does not steal the server's event loop,
after a warm-up, for a fixed time, interleaved over ``--repeats`` rounds. Prints
per kind the best and the median round's rate, the median round's p50/p99
latency and CPU per call (server / etcd / client), then the steps/raw and
steps-stream/raw ratios (the ratio within each round, the kinds back to back:
median, spread), etcd CPU per step over etcd CPU per raw transaction (both
ways of sending), uvloop over asyncio, the contended
run's lost or doubled steps (must be 0) and how evenly its tasks were served,
and the load average. Targets: steps/raw >= 0.4 and etcd CPU per step <= 1.5x
a raw transaction's, at concurrency 16.

Run:  .venv/bin/python bench/etcd_steps.py [--duration S] [--repeats N] [--concurrency N] [--profile]
      (--profile: the first replica runs under cProfile; its top functions are printed)
The etcd binary must be on PATH (or in $ETCD_BIN). Every process is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
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

from bench.common import Load, bench_parser, client_process, run_workers, session_walker
from tests.support.etcd_process import EtcdCluster
from tests.support.replicas import Replica, serve_args
from tests.support.system_flows import counter_node, write_counter_flow

CHAIN = 20
PREFIX = "/bench"
GRAPH = "chain"
try:
    import uvloop  # noqa: F401  (only whether a server can run on it)

    HAVE_UVLOOP = True
except ImportError:
    HAVE_UVLOOP = False
KINDS = (
    ("raw", "steps", "steps-ids", "steps-stream", "steps-uvloop", "contended")
    if HAVE_UVLOOP
    else ("raw", "steps", "steps-ids", "steps-stream", "contended")
)
# Two replicas: the second on uvloop when it is installed (the steps-uvloop kind).
SERVERS = {
    "steps": "asyncio",
    "steps-uvloop" if HAVE_UVLOOP else "second": "uvloop" if HAVE_UVLOOP else "asyncio",
}
TARGET = 0.4
ETCD_CPU_TARGET = 1.5


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


async def steps_client(
    target: str, concurrency: int, duration: float, warmup: float, *, ids: bool = False
) -> dict[str, Any]:
    import grpc  # type: ignore[import-untyped]

    from trellis.api.v1 import sessions_pb2_grpc
    from trellis.api.v1 import types_pb2 as pb

    async with grpc.aio.insecure_channel(target) as channel:
        sessions = sessions_pb2_grpc.SessionsStub(channel)
        worker = session_walker(sessions, "p", pb.Input(text="go"), request_ids=ids)
        return await measured(worker, concurrency, duration, warmup)


async def stream_client(target: str, concurrency: int, duration: float, warmup: float) -> dict[str, Any]:
    """As ``steps_client`` with request IDs, every task's steps over ONE Sessions.Steps
    stream shared by all tasks: the SDK's own StepStream (what ``Client(step_stream=True)``
    uses), which sends the steps queued together in one message."""
    import grpc

    from trellis.api.v1 import sessions_pb2_grpc
    from trellis.api.v1 import types_pb2 as pb
    from trellis.clients.step_stream import StepStream

    async with grpc.aio.insecure_channel(target) as channel:
        stream = StepStream(sessions_pb2_grpc.SessionsStub(channel))
        try:
            worker = session_walker(stream, "s", pb.Input(text="go"), request_ids=True)
            return await measured(worker, concurrency, duration, warmup)
        finally:
            await stream.close()


async def contended_client(targets: str, concurrency: int, duration: float, warmup: float) -> dict[str, Any]:
    """Every task on ONE session at a time, half of them through each server (so the two
    replicas contend in etcd, not only in one process). Each step sends a token of its
    own; afterwards every session walked is read back: each acknowledged token must be
    stored exactly once (no lost update, nothing applied twice). Fairness: the fewest and
    the most steps one task got acknowledged."""
    import grpc

    from trellis.api.v1 import sessions_pb2 as spb
    from trellis.api.v1 import sessions_pb2_grpc
    from trellis.api.v1 import types_pb2 as pb

    channels = [grpc.aio.insecure_channel(target) for target in targets.split(",")]
    stubs = [sessions_pb2_grpc.SessionsStub(channel) for channel in channels]
    generation = 0
    acked: dict[str, list[str]] = {}
    per_task = [0] * concurrency
    refused = 0

    def current() -> str:
        return f"contended-{os.getpid()}-{generation}"

    async def worker(index: int, load: Load) -> None:
        nonlocal generation, refused
        stub = stubs[index % len(stubs)]
        started_sid = ""
        n = 0
        while load.running:
            sid = current()
            if sid != started_sid:
                await stub.Start(spb.SessionsStartRequest(session_id=sid))  # load or start: idempotent
                started_sid = sid
            n += 1
            token = f"t{index}-{n}"
            began = time.perf_counter()
            try:
                reply = await stub.Navigate(
                    spb.SessionsNavigateRequest(session_id=sid, input=pb.Input(text=token))
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:  # the walk ended under us
                    refused += 1
                if sid == current():
                    generation += 1
                continue
            load.record(began)
            acked.setdefault(sid, []).append(token)
            if load.measuring:
                per_task[index] += 1
            if reply.step.terminal and sid == current():
                generation += 1

    try:
        summary = await measured(worker, concurrency, duration, warmup)
        lost = duplicated = 0
        for sid, tokens in acked.items():
            state = (await stubs[0].Get(spb.SessionsGetRequest(session_id=sid))).step.state
            context = json.loads(state.context_json)
            stored = [value for key, value in context.items() if key.startswith("got_")]
            lost += len(set(tokens) - set(stored))
            duplicated += len(stored) - len(set(stored))
    finally:
        for channel in channels:
            await channel.close()
    return {
        **summary,
        "lost": lost,
        "duplicated": duplicated,
        "refused": refused,
        "fewest": min(per_task),
        "most": max(per_task),
    }


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
    result = await client_process(__file__, kind, kind, target, str(concurrency), str(duration), str(warmup))
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
    profiled = ("-m", "cProfile", "-o", str(profile_path)) if args.profile else ()
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    load_before = os.getloadavg()
    with EtcdCluster(1) as cluster:
        endpoint = cluster.endpoints[0]
        await publish_chain(endpoint, work / "flow")
        servers = {
            kind: Replica(
                kind,
                serve_args(
                    [endpoint], PREFIX, GRAPH, lock_ttl="30s", request_timeout="5s", entry=counter_node(0)
                ),
                work,
                env={
                    "TRELLIS_LOG_LEVEL": "warning",
                    "TRELLIS_HEALTH_PROBE_INTERVAL": "5",
                    "TRELLIS_EVENT_LOOP": loop,
                },
                python_args=profiled if kind == "steps" else (),
            )
            for kind, loop in SERVERS.items()
        }
        try:
            for server in servers.values():
                server.start()
            for server in servers.values():
                server.wait_serving()
            assert cluster.members[0].process is not None
            etcd_pid = cluster.members[0].process.pid
            for _ in range(args.repeats):
                for kind in KINDS:  # interleaved: drift in machine load hits every kind alike
                    server = servers.get(kind, servers["steps"])  # raw: the steps server idles
                    assert server.process is not None
                    target = {"raw": endpoint, "contended": ",".join(s.target for s in servers.values())}.get(
                        kind, server.target
                    )
                    watched = {"server": server.process.pid, "etcd": etcd_pid}
                    results[kind].append(
                        await measure(kind, target, args.concurrency, args.duration, args.warmup, watched)
                    )
        finally:
            for server in servers.values():
                server.stop()  # SIGTERM: a graceful exit, which is when cProfile writes its file
                if server.process is not None and server.process.returncode not in (0, None):
                    print(f"server exited with {server.process.returncode}:\n{server.log()[-2000:]}")
    report(args, results, load_before, os.getloadavg())
    if args.profile and profile_path.exists():
        stats = pstats.Stats(str(profile_path))
        print("\nserver profile, by own time:")
        stats.sort_stats("tottime").print_stats(25)
        print("server profile, trellis code by cumulative time:")
        stats.sort_stats("cumulative").print_stats("trellis/", 30)
    return 0


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median rate (the lower middle one for an even count)."""
    ordered = sorted(rounds, key=lambda r: r["rate"])
    return ordered[(len(ordered) - 1) // 2]


def per_round(results: dict[str, list[dict[str, Any]]], top: str, bottom: str, value: Any) -> list[float]:
    """``value(top round) / value(bottom round)`` for each round."""
    return [
        value(a) / value(b) if value(b) else 0.0 for a, b in zip(results[top], results[bottom], strict=True)
    ]


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f}, {min(values):.2f}-{max(values):.2f} (rounds: " + (
        ", ".join(f"{v:.2f}" for v in values) + ")"
    )


def report(
    args: argparse.Namespace,
    results: dict[str, list[dict[str, Any]]],
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> None:
    print(
        f"durable steps on etcd (two replicas, {CHAIN}-node chain, a session per task) "
        f"vs raw single-key etcd transactions; separate client process; concurrency {args.concurrency}; "
        f"{args.repeats} interleaved rounds x {args.duration:.1f}s"
    )
    print(
        f"{'kind':<15}{'best/s':>8}{'median/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        "   CPU ms per call: server / etcd / client (median round)"
    )
    for kind in KINDS:
        rounds = results[kind]
        middle = median_round(rounds)
        cpu = middle["cpu_ms"]
        server_cpu = "-" if kind in ("raw", "contended") else f"{cpu['server']:.2f}"
        print(
            f"{kind:<15}{max(r['rate'] for r in rounds):>8.0f}{middle['rate']:>10.0f}"
            f"{middle['p50'] * 1e3:>9.2f}{middle['p99'] * 1e3:>9.2f}"
            f"   {server_cpu} / {cpu['etcd']:.2f} / {cpu['client']:.2f}"
        )
    for kind in ("steps", "steps-stream"):
        ratios = per_round(results, kind, "raw", lambda r: r["rate"])
        met = "met" if statistics.median(ratios) >= TARGET else "NOT met"
        print(f"{kind}/raw: {spread(ratios)}; target >= {TARGET}: {met}")
    with_ids = per_round(results, "steps-ids", "steps", lambda r: r["rate"])
    print(f"steps with request IDs / without: {spread(with_ids)}")
    if "steps-uvloop" in KINDS:
        print(f"steps-uvloop/raw: {spread(per_round(results, 'steps-uvloop', 'raw', lambda r: r['rate']))}")
    for kind in ("steps", "steps-stream"):
        etcd = per_round(results, kind, "raw", lambda r: r["cpu_ms"]["etcd"])
        met = "met" if statistics.median(etcd) <= ETCD_CPU_TARGET else "NOT met"
        print(
            f"etcd CPU per {kind} step / per raw transaction: {spread(etcd)}; "
            f"target <= {ETCD_CPU_TARGET}: {met}"
        )
    if "steps-uvloop" in KINDS:
        loops = per_round(results, "steps-uvloop", "steps", lambda r: r["rate"])
        print(f"steps/s, uvloop / asyncio: {spread(loops)}")
        server_cpu = per_round(results, "steps-uvloop", "steps", lambda r: r["cpu_ms"]["server"])
        print(f"server CPU per step, uvloop / asyncio: {spread(server_cpu)}")
    lost = sum(r["lost"] for r in results["contended"])
    twice = sum(r["duplicated"] for r in results["contended"])
    refused = sum(r["refused"] for r in results["contended"])
    shares = ", ".join(f"{r['fewest']}-{r['most']}" for r in results["contended"])
    print(
        f"contended ({args.concurrency} tasks on one session, half through each server): acknowledged "
        f"but lost {lost}, applied twice {twice}, refused {refused}; "
        f"steps per task, fewest-most per round: {shares}"
    )
    print(
        "load average (1/5/15 min) before: "
        + " ".join(f"{v:.2f}" for v in load_before)
        + "; after: "
        + " ".join(f"{v:.2f}" for v in load_after)
        + f"; {os.cpu_count()} CPUs"
    )


def parse_args() -> argparse.Namespace:
    parser = bench_parser(__doc__, "rounds", ("KIND", "TARGET", "CONC", "DURATION", "WARMUP"))
    parser.add_argument("--concurrency", type=int, default=16, help="client tasks (default 16)")
    parser.add_argument("--profile", action="store_true", help="run the server under cProfile")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.client:
        kind_, target_, conc_, duration_, warmup_ = arguments.client
        clients = {
            "raw": raw_client,
            "contended": contended_client,
            "steps-ids": functools.partial(steps_client, ids=True),
            "steps-stream": stream_client,
        }
        client_of = clients.get(kind_, steps_client)  # steps, steps-uvloop
        outcome = asyncio.run(client_of(target_, int(conc_), float(duration_), float(warmup_)))
        print(json.dumps(outcome))
        sys.exit(0)
    sys.exit(asyncio.run(main(arguments)))
