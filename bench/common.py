"""What the client/server benchmarks share: a load of worker tasks measured for a fixed
time after a warm-up, its rate and latency percentiles, and running that load in a
separate client process (so the client does not steal the measured server's CPU)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def percentile(ordered: list[float], fraction: float) -> float:
    """The value at ``fraction`` (0.5, 0.99) of an already sorted list; 0.0 when empty."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def summary(latencies: list[float], elapsed: float) -> dict[str, Any]:
    """Calls per second and p50/p99 latency (seconds) of the calls measured in ``elapsed``."""
    latencies.sort()
    return {
        "rate": len(latencies) / elapsed,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "calls": len(latencies),
    }


class Load:
    """Shared by the worker tasks of one measurement: whether to go on, the latencies taken
    after the warm-up, and every call made (warm-up and uncounted calls included)."""

    def __init__(self) -> None:
        self.running = True
        self.measuring = False
        self.latencies: list[float] = []
        self.total = 0

    def record(self, started: float) -> None:
        """A measured call that began at ``started`` (time.perf_counter) has returned."""
        self.total += 1
        if self.measuring:
            self.latencies.append(time.perf_counter() - started)

    def uncounted(self) -> None:
        """A call outside the measured kind (a Start): not in the rate, but in ``total``."""
        self.total += 1


async def run_workers(
    worker: Callable[[int, Load], Coroutine[Any, Any, None]], concurrency: int, duration: float, warmup: float
) -> dict[str, Any]:
    """Run ``concurrency`` ``worker(index, load)`` tasks until told to stop (``load.running``);
    measure for ``duration`` seconds after ``warmup``. The summary plus ``total``."""
    load = Load()
    tasks = [asyncio.create_task(worker(index, load)) for index in range(concurrency)]
    await asyncio.sleep(warmup)
    load.measuring = True
    began = time.perf_counter()
    await asyncio.sleep(duration)
    load.measuring = False
    elapsed = time.perf_counter() - began
    load.running = False
    await asyncio.gather(*tasks)
    return {**summary(load.latencies, elapsed), "total": load.total}


def session_walker(
    steps: Any, prefix: str, answer: Any, *, context_json: str = "", request_ids: bool = False
) -> Callable[[int, Load], Coroutine[Any, Any, None]]:
    """A worker for ``run_workers``: each task walks sessions of its own along a chain,
    answering ``answer`` (a trellis.v1.Input) at every node, through ``steps`` (a
    Sessions stub, the SDK's StepStream: the same Start and Navigate, or anything with
    them whose Navigate returns whether the step was terminal); a new session (its
    Start not counted) after the last node. ``request_ids``: every step
    carries a fresh request ID, as the SDK sends them."""
    import uuid

    from trellis.api.v1 import sessions_pb2 as spb

    def rid() -> str:
        return str(uuid.uuid4()) if request_ids else ""

    async def worker(index: int, load: Load) -> None:
        walk = 0

        async def new_session() -> str:
            nonlocal walk
            walk += 1
            sid = f"{prefix}-{os.getpid()}-{index}-{walk}"
            await steps.Start(
                spb.SessionsStartRequest(session_id=sid, context_json=context_json, request_id=rid())
            )
            load.uncounted()
            return sid

        sid = await new_session()
        while load.running:
            started = time.perf_counter()
            request = spb.SessionsNavigateRequest(session_id=sid, input=answer, request_id=rid())
            reply = await steps.Navigate(request)
            load.record(started)
            if reply if isinstance(reply, bool) else reply.step.terminal:
                sid = await new_session()

    return worker


async def client_process(script: str, name: str, *args: str) -> dict[str, Any]:
    """Run ``python script --client ARGS`` and return the JSON object it prints. Exits with
    a message naming the ``name`` client if it fails."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        script,
        "--client",
        *args,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"the {name} client failed (exit {process.returncode})")
    result: dict[str, Any] = json.loads(out)
    return result


def bench_parser(doc: str | None, rounds: str, client_args: tuple[str, ...]) -> argparse.ArgumentParser:
    """The options every client/server benchmark takes: time measured per cell, warm-up,
    ``--repeats`` (``rounds`` says what one is), and the hidden ``--client CLIENT_ARGS``
    that makes the script the client process."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured per cell (default 3)")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before measuring (default 0.5)")
    parser.add_argument("--repeats", type=int, default=3, help=f"{rounds} (default 3)")
    parser.add_argument("--client", nargs=len(client_args), metavar=client_args, help=argparse.SUPPRESS)
    return parser
