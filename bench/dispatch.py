#!/usr/bin/env python3
"""Tool dispatch latency and rate: in process vs the Python sidecar vs the Node sidecar,
over TCP and a Unix socket, at concurrency 1 and 16, side by side in one run.

What is measured is one ``dispatch`` of an ``echo`` tool as the server's session manager
makes it (a ToolCall with a fresh idempotency key and a dispatch context):

  in-process     InProcessDispatcher in this process (the embedded server's way)
  python/tcp     RemoteDispatcher -> the Python kit (trellis.sidecar) in its own process
  python/unix    the same over a Unix domain socket
  node/tcp       RemoteDispatcher -> clients/node/example-sidecar.js (needs node + npm ci)
  node/unix      the same over a Unix domain socket

Cells are interleaved round by round (--repeats rounds); each row shows the median of
the rounds and the spread (lowest..highest p50). Ratios: the p50 a sidecar adds over in
process (target: <= 1 ms at concurrency 1) and unix/tcp (target: the socket is no slower).
The sidecars share the machine's cores with this process: on a small shared machine,
concurrency 16 measures CPU contention as much as the transport.

Run:  .venv/bin/python bench/dispatch.py [--duration S] [--repeats N] [--no-node]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, Load, run_workers
from trellis.adapters.grpc.channel import RemoteChannel
from trellis.adapters.grpc.dispatcher import RemoteDispatcher
from trellis.adapters.inprocess_dispatcher import InProcessDispatcher
from trellis.dispatching import DispatchContext
from trellis.domain import ToolCall
from trellis.ports.dispatcher import ActionDispatcher

NODE_DIR = ROOT / "clients" / "node"
ARGS = {"text": "hello", "n": 1}
CONCURRENCY = (1, 16)


def python_sidecar(address: str) -> None:
    """The Python sidecar process: one echo tool."""
    from trellis.sidecar import Sidecar

    sidecar = Sidecar()

    # async: a plain function would run in a worker thread (the kit's default for code
    # that may block), which is not what is measured here.
    @sidecar.tool(idempotent=True)
    async def echo(**args: Any) -> Any:
        return args

    sidecar.run(address)


async def start_process(argv: list[str], cwd: Path) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    async with asyncio.timeout(60):
        while line := (await process.stdout.readline()).decode():
            if "serving on " in line:
                return process, line.split("serving on ")[1].split()[0]
    raise SystemExit(f"{argv} did not start")


async def stop_process(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


async def measure(
    dispatcher: ActionDispatcher, concurrency: int, duration: float, warmup: float
) -> dict[str, Any]:
    async def worker(index: int, load: Load) -> None:
        while load.running:
            key = uuid.uuid4().hex
            call = ToolCall(id=key[:8], name="echo", args=ARGS, idempotency_key=key)
            context = DispatchContext(
                session_id=f"bench-{index}", node_id="n", idempotency_key=key, fencing_token=1
            )
            started = time.perf_counter()
            result = await dispatcher.dispatch(call, context)
            if result.is_error:
                raise SystemExit(f"echo failed: {result.error}")
            load.record(started)
            # In process nothing suspends: yield so that the other workers and the clock run.
            await asyncio.sleep(0)

    return await run_workers(worker, concurrency, duration, warmup)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=2.0, help="seconds measured per cell (default 2)")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before measuring (default 0.5)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every cell (default 3)")
    parser.add_argument("--no-node", action="store_true", help="leave out the Node sidecar")
    parser.add_argument("--sidecar", metavar="ADDRESS", help=argparse.SUPPRESS)
    args = parser.parse_args()

    contestants: dict[str, ActionDispatcher] = {"in-process": InProcessDispatcher({"echo": lambda a: a})}
    processes: list[asyncio.subprocess.Process] = []
    remotes: list[RemoteDispatcher] = []
    sockets = tempfile.mkdtemp(prefix="trellis-bench-", dir="/tmp")
    with_node = not args.no_node and shutil.which("node") and (NODE_DIR / "node_modules").is_dir()
    try:
        kinds = [("python", [sys.executable, __file__, "--sidecar"], ROOT)]
        if with_node:
            kinds.append(("node", ["node", "example-sidecar.js"], NODE_DIR))
        for kind, argv, cwd in kinds:
            for transport, address in (("tcp", "127.0.0.1:0"), ("unix", f"unix://{sockets}/{kind}.sock")):
                process, where = await start_process([*argv, address], cwd)
                processes.append(process)
                target = f"unix:{where[len('unix://') :]}" if where.startswith("unix://") else where
                remote = RemoteDispatcher(RemoteChannel.from_target(target))
                await remote.refresh()
                remotes.append(remote)
                contestants[f"{kind}/{transport}"] = remote
        results: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for round_number in range(args.repeats):
            for concurrency in CONCURRENCY:
                for name, dispatcher in contestants.items():
                    cell = await measure(dispatcher, concurrency, args.duration, args.warmup)
                    results.setdefault((name, concurrency), []).append(cell)
            print(f"round {round_number + 1}/{args.repeats} done", file=sys.stderr)
        report(results, contestants, args, bool(with_node))
    finally:
        for remote in remotes:
            await remote.aclose()
        for process in processes:
            await stop_process(process)
        shutil.rmtree(sockets, ignore_errors=True)


def report(
    results: dict[tuple[str, int], list[dict[str, Any]]],
    contestants: dict[str, Any],
    args: argparse.Namespace,
    with_node: bool,
) -> None:
    def median(name: str, concurrency: int, key: str) -> float:
        return statistics.median(cell[key] for cell in results[(name, concurrency)])

    print(
        f"\ndispatch of an echo tool, {args.repeats} rounds x {args.duration:g}s per cell, median of rounds "
        f"(spread = lowest..highest p50); {os.cpu_count()} CPUs shared by this process and the sidecars"
        + ("" if with_node else "; Node sidecar left out (no node or no clients/node/node_modules)")
    )
    header = f"{'contestant':<12} {'conc':>4} {'p50 ms':>8} {'spread ms':>15} {'p99 ms':>8} {'calls/s':>9}"
    header += f" {'+p50 vs in-process':>19} {'rate vs in-process':>19} {'unix/tcp p50':>13}"
    print(header)
    print("-" * len(header))
    for concurrency in CONCURRENCY:
        base_p50 = median("in-process", concurrency, "p50")
        base_rate = median("in-process", concurrency, "rate")
        for name in contestants:
            p50 = median(name, concurrency, "p50")
            p50s = [cell["p50"] for cell in results[(name, concurrency)]]
            rate = median(name, concurrency, "rate")
            added = f"{(p50 - base_p50) * 1000:+.3f} ms" if name != "in-process" else ""
            ratio = f"{rate / base_rate:.3f}x" if name != "in-process" else ""
            unix_tcp = ""
            if name.endswith("/unix"):
                tcp = median(name.replace("/unix", "/tcp"), concurrency, "p50")
                unix_tcp = f"{p50 / tcp:.2f}"
            spread = f"{min(p50s) * 1000:.3f}..{max(p50s) * 1000:.3f}"
            p99 = median(name, concurrency, "p99")
            print(
                f"{name:<12} {concurrency:>4} {p50 * 1000:>8.3f} {spread:>15} {p99 * 1000:>8.3f} "
                f"{rate:>9.0f} {added:>19} {ratio:>19} {unix_tcp:>13}"
            )
    print("\ntargets: a sidecar adds <= 1 ms p50 over in-process at concurrency 1; unix/tcp p50 <= 1")


if __name__ == "__main__":
    if "--sidecar" in sys.argv:
        python_sidecar(sys.argv[sys.argv.index("--sidecar") + 1])  # runs its own event loop
    else:
        asyncio.run(main())
