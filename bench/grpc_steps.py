#!/usr/bin/env python3
"""Steps through the gRPC server, as ratios of the same server's health-check rate.

One server process (this one) serves the 20-node chain of bench/engine_steps.py
(MemoryLoader, memory store, local locks). A SEPARATE client process (a subprocess
per measurement, raw generated stubs, ``concurrency`` tasks on one channel) calls,
for a fixed time after a warm-up:

  health    grpc.health.v1.Health/Check: the ceiling of this Python gRPC stack
  engine    Engine.Navigate: each task carries its state along the chain ("go"
            at every node; Engine.Start again after the last node, not counted)
  sessions  Sessions.Navigate: each task walks its own session along the chain
            (lock, load, navigate, render, conditional save on the memory store);
            a new session (Sessions.Start, not counted) after the last node
  stream    the same steps over ONE Sessions.Steps stream shared by the tasks (the
            SDK's StepStream: the steps ready together in one message); a
            "call" is a step here

at concurrency 1, 16 and 64, interleaved, --repeats rounds. Prints the best RPC/s
with its p50 and p99 latency, and each kind's ratio to the health-check rate: the
median over rounds of the ratio within a round (health and the kind measured back
to back), which drifting machine load disturbs less than a ratio of two bests. Also
the server's CPU time per RPC (median over rounds) and its multiple of the
health check's: the steadiest figure on a shared machine.
Target: sessions >= 0.7 of the ceiling at concurrency 16.

Run:  .venv/bin/python bench/grpc_steps.py [--duration S] [--repeats N] [--profile]
      (--profile: cProfile of the server while the sessions client runs at 16)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Load, bench_parser, client_process, run_workers, session_walker
from bench.engine_steps import ANSWER, CHAIN, CONTEXT, chain_nodes

KINDS = ("health", "engine", "sessions", "stream")
CONCURRENCY = (1, 16, 64)
TARGET = ("sessions", 16, 0.7)


# --- the client process ---------------------------------------------------------------------


async def client(target: str, kind: str, concurrency: int, duration: float, warmup: float) -> dict[str, Any]:
    import grpc  # type: ignore[import-untyped]
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from trellis.api.v1 import engine_pb2 as epb
    from trellis.api.v1 import engine_pb2_grpc, sessions_pb2_grpc
    from trellis.api.v1 import types_pb2 as pb
    from trellis.clients.step_stream import StepStream

    context_json = json.dumps(CONTEXT)
    go = pb.Input(text=ANSWER)

    async with grpc.aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        engine = engine_pb2_grpc.EngineStub(channel)
        sessions = sessions_pb2_grpc.SessionsStub(channel)

        async def health_worker(worker: int, load: Load) -> None:
            request = health_pb2.HealthCheckRequest()
            while load.running:
                started = time.perf_counter()
                await health.Check(request)
                load.record(started)

        async def engine_worker(worker: int, load: Load) -> None:
            start = epb.EngineStartRequest(session_id=f"w{worker}", context_json=context_json)
            state = (await engine.Start(start)).step.state
            while load.running:
                started = time.perf_counter()
                step = (await engine.Navigate(epb.EngineNavigateRequest(state=state, input=go))).step
                load.record(started)
                if step.terminal:
                    state = (await engine.Start(start)).step.state
                    load.uncounted()
                else:
                    state = step.state

        stream = StepStream(sessions)

        workers = {
            "health": health_worker,
            "engine": engine_worker,
            "sessions": session_walker(sessions, "p", go, context_json=context_json),
            "stream": session_walker(stream, "q", go, context_json=context_json),
        }
        try:
            # "total" counts every RPC made, warm-up and Starts included: the server's CPU
            # time is per all.
            return await run_workers(workers[kind], concurrency, duration, warmup)
        finally:
            await stream.close()


# --- the server process -----------------------------------------------------------------------


async def start_server() -> Any:
    from trellis.adapters.local_locker import LocalLocker
    from trellis.adapters.memory_loader import MemoryLoader
    from trellis.adapters.memory_store import MemoryStore
    from trellis.server.app import TrellisServer
    from trellis.server.compose import assemble
    from trellis.server.config import ServerConfig
    from trellis.server.observe import Observer

    config = ServerConfig(listen="127.0.0.1:0", entry_node="n0")
    observer = Observer()
    loader = MemoryLoader(chain_nodes())
    store = MemoryStore()
    locker = LocalLocker()
    ports = assemble(loader, store, locker, None, config, observer)
    server = TrellisServer(config, composition=ports, observer=observer)
    await server.start()
    return server


async def measure(target: str, kind: str, concurrency: int, duration: float, warmup: float) -> dict[str, Any]:
    """One client run; adds ``cpu_us``: this (server) process's CPU time per RPC the client made,
    a figure that other load on the machine disturbs far less than a rate."""
    cpu_before = time.process_time()
    result = await client_process(__file__, kind, target, kind, str(concurrency), str(duration), str(warmup))
    result["cpu_us"] = (time.process_time() - cpu_before) / max(1, result["total"]) * 1e6
    return result


async def main(args: argparse.Namespace) -> int:
    server = await start_server()
    target = f"127.0.0.1:{server.port}"
    best: dict[tuple[str, int], dict[str, Any]] = {}
    ratios: dict[tuple[str, int], list[float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    try:
        for concurrency in CONCURRENCY:
            for _ in range(args.repeats):
                ceiling = 0.0
                for kind in KINDS:  # interleaved: drift in machine load hits every kind alike
                    result = await measure(target, kind, concurrency, args.duration, args.warmup)
                    key = (kind, concurrency)
                    if key not in best or result["rate"] > best[key]["rate"]:
                        best[key] = result
                    ceiling = ceiling or result["rate"]  # health comes first in KINDS
                    ratios.setdefault(key, []).append(result["rate"] / ceiling if ceiling else 0.0)
                    cpu.setdefault(key, []).append(result["cpu_us"])
        profile_text = ""
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            await measure(target, "sessions", 16, args.duration, args.warmup)
            profiler.disable()
            buffer = io.StringIO()
            stats = pstats.Stats(profiler, stream=buffer)
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats("trellis/", 40)  # where the step's own time goes
            profile_text = buffer.getvalue()
    finally:
        await server.stop(grace=1.0)

    print(
        f"gRPC steps on the {CHAIN}-node chain; separate client process; {args.repeats} rounds "
        f"x {args.duration:.1f}s per cell (RPC/s: best; ratio: median of per-round ratios)"
    )
    print(
        f"{'kind':<10}{'conc':>5}{'RPC/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'/ health':>10}"
        f"{'srv CPU us/RPC':>16}{'CPU x health':>14}"
    )
    verdict = ""
    for concurrency in CONCURRENCY:
        for kind in KINDS:
            r = best[(kind, concurrency)]
            ratio = statistics.median(ratios[(kind, concurrency)])
            cpu_us = statistics.median(cpu[(kind, concurrency)])
            cpu_ratio = cpu_us / statistics.median(cpu[("health", concurrency)])
            print(
                f"{kind:<10}{concurrency:>5}{r['rate']:>10.0f}{r['p50'] * 1e3:>9.2f}{r['p99'] * 1e3:>9.2f}"
                f"{ratio:>10.2f}{cpu_us:>16.0f}{cpu_ratio:>14.2f}"
            )
            if (kind, concurrency) == TARGET[:2]:
                met = "met" if ratio >= TARGET[2] else "NOT met"
                verdict = (
                    f"target sessions/health >= {TARGET[2]} at concurrency {concurrency}: {ratio:.2f} ({met})"
                )
    print(verdict)
    at = TARGET[1]
    streamed = statistics.median(ratios[("stream", at)])
    print(f"the same steps over one Sessions.Steps stream / health at concurrency {at}: {streamed:.2f}")
    if profile_text:
        print("\nserver profile (sessions, concurrency 16):")
        print(profile_text)
    return 0


def parse_args() -> argparse.Namespace:
    parser = bench_parser(__doc__, "rounds per concurrency", ("TARGET", "KIND", "CONC", "DURATION", "WARMUP"))
    parser.add_argument("--profile", action="store_true", help="profile the server during sessions at 16")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.client:
        target_, kind_, conc_, duration_, warmup_ = arguments.client
        outcome = asyncio.run(client(target_, kind_, int(conc_), float(duration_), float(warmup_)))
        print(json.dumps(outcome))
        sys.exit(0)
    sys.exit(asyncio.run(main(arguments)))
