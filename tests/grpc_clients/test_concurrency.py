"""Concurrent steps on one session through the server: each applies exactly once or
fails with a clear retryable error, and the history loses or doubles nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.grpc_clients.flows import chain_flow
from tests.support.servers import flow_server
from trellis.clients import Client
from trellis.domain import StepResult
from trellis.errors import ConflictError, LockLost

CALLS = 64
RETRYABLE = (ConflictError, LockLost)  # ABORTED: retry the whole step


async def test_64_concurrent_navigates_on_one_session(tmp_path: Path) -> None:
    flow = chain_flow(tmp_path / "chain", CALLS + 10)
    async with flow_server(flow) as server, Client(f"127.0.0.1:{server.port}", timeout=120) as client:
        await client.sessions.start("hot")

        async def one(i: int) -> tuple[int, StepResult | BaseException]:
            try:
                return i, await client.sessions.navigate("hot", f"input-{i}")
            except RETRYABLE as exc:
                return i, exc

        async with asyncio.timeout(120):
            results = await asyncio.gather(*(one(i) for i in range(CALLS)))
        applied = {i: r for i, r in results if isinstance(r, StepResult)}
        refused = [r for _, r in results if not isinstance(r, StepResult)]
        assert len(applied) + len(refused) == CALLS
        for exc in refused:
            assert exc.reason in ("REVISION_CONFLICT", "LOCK_LOST") and str(exc)

        final = (await client.sessions.get("hot")).state
        steps = len(applied)
        # Each applied call moved the session exactly one node on, in some order.
        assert final.history == ["start"] + [f"n{k}" for k in range(1, steps + 1)]
        assert final.current_node_id == f"n{steps}"
        saved = [final.context[f"v{k}"] for k in range(steps)]
        assert sorted(saved) == sorted(f"input-{i}" for i in applied)
        assert f"v{steps}" not in final.context
        # Every applied call saw its own step: distinct revisions, each reply's last input its own.
        assert len({r.state.revision for r in applied.values()}) == steps
        for i, step in applied.items():
            position = len(step.state.history) - 2
            assert step.state.context[f"v{position}"] == f"input-{i}"
