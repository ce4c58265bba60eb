#!/usr/bin/env python3
"""Sessions.Navigate over the HTTP listener (Connect, JSON and protobuf) as a ratio of
the same call over gRPC, to the same server.

One server process (this one) serves the 20-node chain of bench/engine_steps.py
(MemoryLoader, memory store, local locks) on both listeners. A SEPARATE client process
per measurement walks sessions along the chain with ``concurrency`` tasks:

  grpc          generated stubs on one channel
  connect-json  aiohttp, one keep-alive connection pool, application/json bodies
  connect-proto the same with application/proto bodies

interleaved within each round, at concurrency 1 and 16, --repeats rounds. Prints the
best RPC/s with p50/p99, and for each HTTP kind the median (and min-max spread) over
rounds of its rate divided by the gRPC rate of the same round, and the server's CPU
time per call.

Run:  .venv/bin/python bench/http_steps.py [--duration S] [--repeats N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bench_parser, client_process, run_workers, session_walker
from bench.engine_steps import ANSWER, CHAIN, CONTEXT, chain_nodes

KINDS = ("grpc", "connect-json", "connect-proto")
CONCURRENCY = (1, 16)


# --- the client process ---------------------------------------------------------------------


async def client(
    grpc_target: str, http_url: str, kind: str, concurrency: int, duration: float, warmup: float
) -> Any:
    import aiohttp
    import grpc  # type: ignore[import-untyped]
    import orjson
    from google.protobuf import json_format

    from trellis.api.v1 import sessions_pb2 as spb
    from trellis.api.v1 import sessions_pb2_grpc
    from trellis.api.v1 import types_pb2 as pb

    context_json = json.dumps(CONTEXT)

    async with (
        grpc.aio.insecure_channel(grpc_target) as channel,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http,
    ):
        stub = sessions_pb2_grpc.SessionsStub(channel)

        async def over_grpc(method: str, request: Any) -> Any:
            return (await getattr(stub, method)(request)).step.terminal

        async def over_http(method: str, request: Any) -> Any:
            # What an HTTP client does: JSON with a JSON library (a plain dict back), or
            # protobuf bytes with the generated classes.
            proto = kind == "connect-proto"
            body = request.SerializeToString() if proto else orjson.dumps(json_format.MessageToDict(request))
            headers = {"Content-Type": "application/proto" if proto else "application/json"}
            async with http.post(
                f"{http_url}/trellis.v1.Sessions/{method}", data=body, headers=headers
            ) as reply:
                data = await reply.read()
                assert reply.status == 200, data[:200]
            if proto:
                reply_type = {"Start": spb.SessionsStartResponse, "Navigate": spb.SessionsNavigateResponse}[
                    method
                ]
                return reply_type.FromString(data).step.terminal
            return bool(orjson.loads(data)["step"].get("terminal"))

        call = over_grpc if kind == "grpc" else over_http

        worker = session_walker(_Steps(call), f"{kind}-p", pb.Input(text=ANSWER), context_json=context_json)
        return await run_workers(worker, concurrency, duration, warmup)


class _Steps:
    """Start and Navigate over one transport's ``call``, as session_walker wants them."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def Start(self, request: Any) -> Any:
        return self._call("Start", request)

    def Navigate(self, request: Any) -> Any:
        return self._call("Navigate", request)


# --- the server process -----------------------------------------------------------------------


async def start_server() -> Any:
    from trellis.adapters.local_locker import LocalLocker
    from trellis.adapters.memory_loader import MemoryLoader
    from trellis.adapters.memory_store import MemoryStore
    from trellis.server.app import TrellisServer
    from trellis.server.compose import assemble
    from trellis.server.config import ServerConfig
    from trellis.server.observe import Observer

    config = ServerConfig(listen="127.0.0.1:0", http_listen="127.0.0.1:0", entry_node="n0")
    observer = Observer()
    ports = assemble(MemoryLoader(chain_nodes()), MemoryStore(), LocalLocker(), None, config, observer)
    server = TrellisServer(config, composition=ports, observer=observer)
    await server.start()
    return server


async def main(args: argparse.Namespace) -> int:
    server = await start_server()
    grpc_target = f"127.0.0.1:{server.port}"
    http_url = f"http://127.0.0.1:{server.http_port}"
    best: dict[tuple[str, int], dict[str, Any]] = {}
    ratios: dict[tuple[str, int], list[float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    try:
        for concurrency in CONCURRENCY:
            for _ in range(args.repeats):
                base = 0.0
                for kind in KINDS:  # interleaved: drift in machine load hits every kind alike
                    cpu_before = time.process_time()
                    result = await client_process(
                        __file__,
                        kind,
                        grpc_target,
                        http_url,
                        kind,
                        str(concurrency),
                        str(args.duration),
                        str(args.warmup),
                    )
                    key = (kind, concurrency)
                    cpu.setdefault(key, []).append(
                        (time.process_time() - cpu_before) / max(1, result["total"]) * 1e6
                    )
                    if key not in best or result["rate"] > best[key]["rate"]:
                        best[key] = result
                    base = base or result["rate"]  # grpc comes first in KINDS
                    ratios.setdefault(key, []).append(result["rate"] / base if base else 0.0)
    finally:
        await server.stop(grace=1.0)

    print(
        f"Sessions.Navigate on the {CHAIN}-node chain, one server, separate client process; "
        f"{args.repeats} rounds x {args.duration:.1f}s per cell"
    )
    columns = (("RPC/s", 9), ("p50 ms", 9), ("p99 ms", 9), ("/ grpc (min-max)", 22), ("srv CPU us", 12))
    print(f"{'kind':<15}{'conc':>5}" + "".join(f"{name:>{width}}" for name, width in columns))
    for concurrency in CONCURRENCY:
        for kind in KINDS:
            r = best[(kind, concurrency)]
            values = ratios[(kind, concurrency)]
            spread = f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"
            print(
                f"{kind:<15}{concurrency:>5}{r['rate']:>9.0f}{r['p50'] * 1e3:>9.2f}{r['p99'] * 1e3:>9.2f}"
                f"{spread:>22}{statistics.median(cpu[(kind, concurrency)]):>12.0f}"
            )
    return 0


if __name__ == "__main__":
    parser = bench_parser(
        __doc__, "rounds per concurrency", ("GRPC", "HTTP", "KIND", "CONC", "DURATION", "WARMUP")
    )
    arguments = parser.parse_args()
    if arguments.client:
        grpc_, http_, kind_, conc_, duration_, warmup_ = arguments.client
        outcome = asyncio.run(client(grpc_, http_, kind_, int(conc_), float(duration_), float(warmup_)))
        print(json.dumps(outcome))
        sys.exit(0)
    sys.exit(asyncio.run(main(arguments)))
