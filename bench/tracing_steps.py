#!/usr/bin/env python3
"""The cost of tracing (docs/server.md, "Tracing"): Sessions.Navigate through the gRPC
server with tracing off, on, and on but sampled out, side by side.

Three servers in this process serve the 20-node chain of bench/engine_steps.py
(MemoryLoader, memory store, local locks), identical but for tracing:

  off       tracing: false (no interceptor, no wrapper: the default)
  sampled   tracing on, every trace sampled out (OTEL_TRACES_SAMPLER=always_off):
            the interceptor and wrappers, spans that record nothing
  on        tracing on, every span recorded and handed to a batching processor
            whose exporter drops it (what is measured is the server's side of
            tracing, not a collector's network)

A separate client process (bench/grpc_steps.py's sessions client) walks sessions along
the chain for a fixed time; the modes are interleaved in every round, so drifting machine
load hits them alike. Prints, per concurrency, the median and spread (min-max) over rounds
of steps/s and of the server's CPU time per step, and each mode's ratio to ``off`` within
a round (median over rounds).

Run:  .venv/bin/python bench/tracing_steps.py [--duration S] [--repeats N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import client_process
from bench.engine_steps import CHAIN, chain_nodes

MODES = ("off", "sampled", "on")
CONCURRENCY = (1, 16)
CLIENT = str(Path(__file__).resolve().parent / "grpc_steps.py")


def _tracer(mode: str) -> Any:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

    class Dropping(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider(sampler=ALWAYS_OFF if mode == "sampled" else ALWAYS_ON)
    provider.add_span_processor(BatchSpanProcessor(Dropping()))
    return provider.get_tracer("bench")


async def start_server(mode: str) -> Any:
    from trellis.adapters.local_locker import LocalLocker
    from trellis.adapters.memory_loader import MemoryLoader
    from trellis.adapters.memory_store import MemoryStore
    from trellis.server.app import TrellisServer
    from trellis.server.compose import assemble
    from trellis.server.config import ServerConfig
    from trellis.server.observe import Observer

    config = ServerConfig(listen="127.0.0.1:0", entry_node="n0", tracing=mode != "off")
    tracer = _tracer(mode) if config.tracing else None
    observer = Observer()
    loader, store, locker = MemoryLoader(chain_nodes()), MemoryStore(), LocalLocker()
    ports = assemble(loader, store, locker, None, config, observer, tracer)
    server = TrellisServer(config, composition=ports, observer=observer, tracer=tracer)
    await server.start()
    return server


async def measure(port: int, concurrency: int, duration: float, warmup: float) -> tuple[float, float]:
    """Steps/s and this (server) process's CPU microseconds per RPC the client made."""
    cpu_before = time.process_time()
    result = await client_process(
        CLIENT, "sessions", f"127.0.0.1:{port}", "sessions", str(concurrency), str(duration), str(warmup)
    )
    cpu_us = (time.process_time() - cpu_before) / max(1, result["total"]) * 1e6
    return float(result["rate"]), cpu_us


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


async def main(args: argparse.Namespace) -> int:
    servers = {mode: await start_server(mode) for mode in MODES}
    rates: dict[tuple[str, int], list[float]] = {}
    cpus: dict[tuple[str, int], list[float]] = {}
    ratios: dict[tuple[str, int], list[float]] = {}
    try:
        for concurrency in CONCURRENCY:
            for _ in range(args.repeats):
                baseline = 0.0
                for mode in MODES:  # "off" first: the ratios are to it
                    rate, cpu_us = await measure(servers[mode].port, concurrency, args.duration, args.warmup)
                    key = (mode, concurrency)
                    baseline = baseline or rate
                    rates.setdefault(key, []).append(rate)
                    cpus.setdefault(key, []).append(cpu_us)
                    ratios.setdefault(key, []).append(rate / baseline if baseline else 0.0)
    finally:
        for server in servers.values():
            await server.stop(grace=1.0)
    print(
        f"Sessions.Navigate on the {CHAIN}-node chain, tracing off / sampled out / on; separate client "
        f"process; {args.repeats} rounds x {args.duration:.1f}s per cell (median (min-max) over rounds)"
    )
    print(f"{'mode':<9}{'conc':>5}{'steps/s':>22}{'srv CPU us/step':>22}{'/ off':>8}")
    for concurrency in CONCURRENCY:
        for mode in MODES:
            key = (mode, concurrency)
            print(
                f"{mode:<9}{concurrency:>5}{_spread(rates[key]):>22}{_spread(cpus[key]):>22}"
                f"{statistics.median(ratios[key]):>8.2f}"
            )
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured per cell (default 3)")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before measuring (default 0.5)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per concurrency (default 3)")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
