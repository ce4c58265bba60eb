#!/usr/bin/env python3
"""How long one evaluation can hold a core under the default budgets (issue 8).

(a) CEL conditions at the edge of max_condition_cost: the largest list each shape
    of condition may read. CEL holds the GIL, so this is also how long it holds
    the event loop.
(b) Templates at the edge of the template budgets (these renders run off the
    event loop, in an evaluation thread, but still take a core).
(c) Over a real server: the slowest health check answered while hostile steps
    run (a refused hostile condition, a hostile range render at raised limits).

Each time is the slowest of --repeats runs, in milliseconds.

Run:  .venv/bin/python bench/evaluation_limits.py [--repeats N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trellis.conditions import compile_condition
from trellis.errors import TrellisError
from trellis.evaluation_limits import DEFAULT_LIMITS
from trellis.templates import compile_template


def slowest(run: Callable[[], Any], repeats: int) -> float:
    worst = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        try:
            run()
        except TrellisError:
            pass
        worst = max(worst, time.perf_counter() - started)
    return worst * 1000


def conditions(repeats: int) -> None:
    print("(a) CEL conditions, default max_condition_cost =", DEFAULT_LIMITS.max_condition_cost)
    cases = [
        ("items.filter(x, x > 5).size() > 0", 316),
        ("items.map(x, x + 1).size() > 0", 316),
        ("items.exists(x, items.exists(y, x + y < 0))", 316),
        ("items.exists(x, items.filter(y, y == x).size() > 1)", 46),
        ("items.exists(x, x < 0)", 100_000),
        ("items.filter(x, x > 5).size() > 0", 30_000),  # the case: refused
    ]
    for source, n in cases:
        condition = compile_condition(source, where="bench")
        context = {"items": [7] * n}
        took = slowest(lambda c=condition, d=context: c.evaluate("", d, {}), repeats)
        print(f"  {took:8.1f} ms  n={n:<7} {source}")


def templates(repeats: int) -> None:
    print("(b) templates, default budgets")
    big = "x" * 200_000
    cases = [
        ("{{ range .n }}{{ end }}", {"n": 10_000}),
        ("{{ range .n }}{{ . }},{{ end }}", {"n": 10_000}),
        ('{{ range .n }}{{ printf "%*d" 1000 . }}{{ end }}', {"n": 10_000}),  # refused at 1 MiB
        ("{{ range .n }}{{ if gt (len $.big) 0 }}{{ end }}{{ end }}", {"n": 10_000, "big": big}),
        ("{{ range .n }}{{ if eq $.big $.big }}{{ end }}{{ end }}", {"n": 10_000, "big": big}),
        ("{{ range .n }}{{ end }}", {"n": 30_000_000}),  # the case: refused
        ('{{ printf "%*d" .w 1 }}', {"w": 300_000_000}),  # the case: refused
    ]
    for text, data in cases:
        template = compile_template(text)
        took = slowest(lambda t=template, d=data: t.render(d), repeats)
        shown = {k: (f"<{len(v)} chars>" if isinstance(v, str) else v) for k, v in data.items()}
        print(f"  {took:8.1f} ms  {text}  {json.dumps(shown)}")


async def server(repeats: int) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from trellis.api.v1 import sessions_pb2 as spb
    from trellis.api.v1 import sessions_pb2_grpc
    from trellis.api.v1 import types_pb2 as pb
    from trellis.server.app import TrellisServer
    from trellis.server.config import ServerConfig

    print("(c) slowest health check while hostile steps run (server on 127.0.0.1)")
    with tempfile.TemporaryDirectory() as tmp:
        flow = Path(tmp)
        (flow / "start.md").write_text(
            "---\nwait: true\ntransitions:\n  - to: start\n"
            "    condition: items.exists(x, items.exists(y, x + y < 0))\nto: start\n---\n"
            "{{ range .n }}{{ end }}ok\n"
        )
        config = ServerConfig(flow_dir=str(flow), listen="127.0.0.1:0", max_range_iterations=10**12)
        server = TrellisServer(config)
        port = await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                sessions = sessions_pb2_grpc.SessionsStub(channel)
                health = health_pb2_grpc.HealthStub(channel)

                async def probe_while(step: Any) -> float:
                    task = asyncio.ensure_future(step)
                    worst = 0.0
                    while not task.done():
                        started = time.perf_counter()
                        await health.Check(health_pb2.HealthCheckRequest(), timeout=120)
                        worst = max(worst, time.perf_counter() - started)
                        await asyncio.sleep(0.005)
                    try:
                        await task
                    except grpc.aio.AioRpcError:
                        pass
                    return worst * 1000

                worst = await probe_while(asyncio.sleep(2))
                print(f"  {worst:8.1f} ms  nothing else running (for comparison)")
                for label, n in (("condition at its budget (316 items)", 316), ("refused (30,000)", 30_000)):
                    await sessions.Start(
                        spb.SessionsStartRequest(
                            session_id=label, context_json=json.dumps({"items": [7] * n})
                        )
                    )
                    request = spb.SessionsNavigateRequest(session_id=label, input=pb.Input(text="go"))
                    worst = max([await probe_while(sessions.Navigate(request)) for _ in range(repeats)])
                    print(f"  {worst:8.1f} ms  degree-2 condition, {label}")
                hostile = spb.SessionsStartRequest(session_id="range", context_json='{"n": 30000000}')
                worst = await probe_while(sessions.Start(hostile, timeout=5))
                print(
                    f"  {worst:8.1f} ms  range over 3e7 at raised limits, off the loop, abandoned after 5 s"
                )
        finally:
            await server.stop(grace=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="runs per case; the slowest counts (default 5)"
    )
    args = parser.parse_args()
    conditions(args.repeats)
    templates(args.repeats)
    asyncio.run(server(args.repeats))


if __name__ == "__main__":
    main()
