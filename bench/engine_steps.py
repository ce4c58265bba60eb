#!/usr/bin/env python3
"""Engine step rate, side by side with LangGraph and `transitions`, in one run.

One chain of 20 nodes; at each node a template is rendered and the next node is
chosen by a condition on the input ("go"); the last node ends the walk. Every
contestant walks the chain from a fresh start again and again (so histories and
checkpoint logs stay the size of one walk), and its rate is node steps per
second, the cost of starting each walk included. Measured, interleaved over N
rounds; the best and the median round are printed, the ratios use the best:

  (a) trellis in process: Engine.start, then Engine.render + Engine.navigate per
      node, over a MemoryLoader
  (b) trellis durable: SessionManager.start (new session), then
      SessionManager.navigate per node (lock, load, navigate, render, conditional
      save) over a MemoryStore
  (c) LangGraph, no checkpointer: one invoke walks the 20 nodes
  (d) LangGraph with its in-memory checkpointer: a new thread per walk, one node
      per invoke, each node waiting through interrupt() and resumed with
      Command(resume="go")
  (e) `transitions`: a 20-state Machine; trigger with a condition and an after
      callback rendering the same text with str.format; back to n0 per walk

Targets: (a)/(c) >= 20, (b)/(d) >= 40, (a) within 3x of (e).

Run:  .venv/bin/python bench/engine_steps.py [--duration S] [--repeats N] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypedDict

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trellis.adapters.memory_loader import MemoryLoader
from trellis.adapters.memory_store import MemoryStore
from trellis.domain import Node, Transition
from trellis.engine.engine import Engine
from trellis.sessions import SessionManager

CHAIN = 20
ANSWER = "go"
WALKS = 10  # walks between clock reads
CONTEXT = {"name": "Ada", "count": 3}


def chain_nodes() -> list[Node]:
    """n0 … n19: each renders a template, waits for input, goes on when it is "go";
    n19 has no transition, so navigating it ends the session."""
    nodes = []
    for k in range(CHAIN):
        last = k == CHAIN - 1
        nodes.append(
            Node(
                id=f"n{k}",
                type="question",
                content=f"Step {k} for {{{{ .name }}}} ({{{{ .count }}}})",
                transitions=() if last else (Transition(f"n{k + 1}", f"input == '{ANSWER}'"),),
            )
        )
    return nodes


async def timed(step: Callable[[], Awaitable[int]], duration: float) -> float:
    """Calls ``step`` (which performs some units of work and returns how many)
    until ``duration`` seconds pass; returns units per second."""
    units = 0
    start = time.perf_counter()
    deadline = start + duration
    while True:
        units += await step()
        now = time.perf_counter()
        if now >= deadline:
            return units / (now - start)


# --- (a) trellis engine in process ------------------------------------------------------


async def trellis_engine(duration: float) -> float:
    engine = Engine(MemoryLoader(chain_nodes()), entry_node="n0")
    start, render, navigate = engine.start, engine.render, engine.navigate

    async def walks() -> int:
        for _ in range(WALKS):
            state = await start("bench", CONTEXT)
            for _ in range(CHAIN):
                await render(state)
                state = await navigate(state, ANSWER)
        assert state.terminated
        return WALKS * CHAIN

    await walks()  # warm up: compile every node once
    return await timed(walks, duration)


# --- (b) trellis durable step ------------------------------------------------------------


async def trellis_sessions(duration: float) -> float:
    engine = Engine(MemoryLoader(chain_nodes()), entry_node="n0")
    manager = SessionManager(engine, MemoryStore())
    start, navigate = manager.start, manager.navigate
    walk_no = 0

    async def walks() -> int:
        nonlocal walk_no
        for _ in range(WALKS):
            walk_no += 1
            session_id = f"bench-{walk_no}"
            await start(session_id, CONTEXT)
            for _ in range(CHAIN):
                step = await navigate(session_id, ANSWER)
        assert step.terminal
        return WALKS * CHAIN

    await walks()
    return await timed(walks, duration)


# --- (c), (d) LangGraph -----------------------------------------------------------------


class ChainState(TypedDict, total=False):
    name: str
    count: int
    out: str
    input: str


def langgraph_app(durable: bool) -> Any:
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import interrupt

    graph = StateGraph(ChainState)
    for k in range(CHAIN):
        template = f"Step {k} for {{name}} ({{count}})"

        def node(state: ChainState, template: str = template) -> ChainState:
            answer = interrupt(None) if durable else ANSWER
            out = template.format(name=state["name"], count=state["count"])
            return {"out": out, "input": answer}

        def route(state: ChainState, nxt: str = f"n{k + 1}" if k < CHAIN - 1 else END) -> str:
            return nxt if state["input"] == ANSWER else END

        graph.add_node(f"n{k}", node)
        graph.add_conditional_edges(f"n{k}", route)
    graph.add_edge(START, "n0")
    if durable:
        from langgraph.checkpoint.memory import InMemorySaver

        return graph.compile(checkpointer=InMemorySaver())
    return graph.compile()


async def langgraph_plain(duration: float) -> float:
    app = langgraph_app(durable=False)

    async def walks() -> int:
        for _ in range(WALKS):
            app.invoke(dict(CONTEXT))
        return WALKS * CHAIN

    await walks()
    return await timed(walks, duration)


async def langgraph_durable(duration: float) -> float:
    from langgraph.types import Command

    app = langgraph_app(durable=True)
    resume: Any = Command(resume=ANSWER)
    walk_no = 0

    async def walk() -> int:
        nonlocal walk_no
        walk_no += 1
        config = {"configurable": {"thread_id": f"bench-{walk_no}"}}
        app.invoke(dict(CONTEXT), config)  # runs up to n0's interrupt
        for _ in range(CHAIN):
            app.invoke(resume, config)
        return CHAIN

    await walk()
    return await timed(walk, duration)


# --- (e) transitions --------------------------------------------------------------------


async def transitions_machine(duration: float) -> float:
    from transitions import Machine

    class Model:
        def __init__(self) -> None:
            self.name = "Ada"
            self.count = 3
            self.out = ""
            self.input = ANSWER

        def is_go(self) -> bool:
            return self.input == ANSWER

    model = Model()
    states = [f"n{k}" for k in range(CHAIN)] + ["done"]
    machine = Machine(model=model, states=states, initial="n0", auto_transitions=False)
    for k in range(CHAIN):
        template = f"Step {k} for {{name}} ({{count}})"

        def render(m: Model = model, template: str = template) -> None:
            m.out = template.format(name=m.name, count=m.count)

        machine.add_transition("go", states[k], states[k + 1], conditions="is_go", after=render)
    trigger = model.go  # type: ignore[attr-defined]
    reset = machine.set_state

    async def walks() -> int:
        for _ in range(WALKS):
            reset("n0")
            for _ in range(CHAIN):
                trigger()
        assert model.state == "done"  # type: ignore[attr-defined]
        return WALKS * CHAIN

    await walks()
    return await timed(walks, duration)


# --- driver -----------------------------------------------------------------------------

CASES: list[tuple[str, str, Callable[[float], Coroutine[Any, Any, float]]]] = [
    ("a", "trellis Engine render+navigate (in process)", trellis_engine),
    ("b", "trellis SessionManager.navigate (MemoryStore)", trellis_sessions),
    ("c", "LangGraph invoke, no checkpointer (node runs)", langgraph_plain),
    ("d", "LangGraph 1 node/invoke, InMemorySaver+interrupt", langgraph_durable),
    ("e", "transitions Machine trigger", transitions_machine),
]


async def measure(duration: float, repeats: int) -> dict[str, list[float]]:
    """Every round's rate per contestant."""
    rates: dict[str, list[float]] = {key: [] for key, _label, _case in CASES}
    for round_no in range(repeats):
        # Interleaved so that a noisy moment hurts every contestant alike.
        for key, _label, case in CASES:
            rates[key].append(await case(duration))
        print(f"  round {round_no + 1}/{repeats} done", file=sys.stderr)
    return rates


def report(rates: dict[str, list[float]]) -> bool:
    best = {key: max(values) for key, values in rates.items()}
    print(f"\nSteps per second over {len(rates['a'])} rounds, chain of {CHAIN} nodes:")
    print(f"  {'':<56} {'best':>12} {'median':>12}")
    for key, label, _case in CASES:
        median = statistics.median(rates[key])
        print(f"  ({key}) {label:<52} {best[key]:>10,.0f}/s {median:>10,.0f}/s")
    checks = [
        ("(a)/(c)", best["a"] / best["c"], 20.0, ">="),
        ("(b)/(d)", best["b"] / best["d"], 40.0, ">="),
        ("(e)/(a)", best["e"] / best["a"], 3.0, "<="),
    ]
    print("\nRatios against targets:")
    ok = True
    for name, value, target, op in checks:
        met = value >= target if op == ">=" else value <= target
        ok = ok and met
        print(f"  {name} = {value:8.2f}   target {op} {target:g}   {'met' if met else 'NOT MET'}")
    return ok


def profile(duration: float) -> None:
    """Where the time of (a) and (b) goes."""
    for key, _label, case in CASES[:2]:
        profiler = cProfile.Profile()
        profiler.enable()
        asyncio.run(case(duration))
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(18)
        print(f"\n=== profile of ({key}) by own time ===")
        print(out.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=1.5, help="seconds per measurement (default 1.5)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved rounds; ratios use the best (default 3)"
    )
    parser.add_argument("--profile", action="store_true", help="also profile (a) and (b)")
    args = parser.parse_args(argv)
    ok = report(asyncio.run(measure(args.duration, args.repeats)))
    if args.profile:
        profile(args.duration)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
