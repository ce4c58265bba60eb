"""A replica that lost its session's lock (SIGSTOP past the lease) and then dispatches a
tool to a sidecar with its old fencing token: the Python kit refuses it, so the tool does
not run for the stale holder, and its step fails with LOCK_LOST."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import orjson

from tests.etcd_system.deployment import Deployment, channels
from tests.etcd_system.stepping import navigate
from tests.support.replicas import Replica, serve_args, start_replicas
from tests.support.sidecar_processes import running, socket_dir
from tests.support.waiting import eventually
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import sessions_pb2_grpc

TAKEOVER_TIMEOUT = 20.0
FLOW = {
    "start.md": "---\nwait: true\nsave_to: who\nto: hold\n---\nWho?\n",
    "hold.md": '---\ndo:\n  name: hold\n  args:\n    who: "{{ .who }}"\nsave_to: held\nto: after\n---\n',
    "after.md": (
        '---\ndo:\n  name: record\n  args:\n    who: "{{ .who }}"\nsave_to: recorded\nto: done\n---\n'
    ),
    "done.md": "---\n---\nDone.\n",
}


def lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


async def test_a_stale_lock_holder_is_refused_by_the_sidecar(deployment: Deployment, tmp_path: Path) -> None:
    flow = tmp_path / "flow"
    flow.mkdir()
    for name, text in FLOW.items():
        (flow / name).write_text(text, encoding="utf-8")
    await deployment.publish("fenced", flow)
    runs = tmp_path / "runs"
    async with socket_dir() as sockets:
        address = f"unix://{sockets}/kit.sock"
        kit = [sys.executable, "-m", "tests.sidecars.kit_app", address]
        async with running(kit, env={"RUNS_FILE": str(runs)}) as sidecar:
            args = [
                *serve_args(deployment.cluster.endpoints, deployment.prefix, "fenced", lock_ttl="2s"),
                "--dispatcher",
                address,
                "--entry",
                "start",
            ]
            a, b = (Replica(name, args, deployment.log_dir) for name in ("a", "b"))
            deployment.replicas.extend([a, b])
            start_replicas([a, b])
            async with channels([a, b]) as (chan_a, chan_b):
                sa, sb = sessions_pb2_grpc.SessionsStub(chan_a), sessions_pb2_grpc.SessionsStub(chan_b)
                await sb.Start(spb.SessionsStartRequest(session_id="f"), timeout=20)
                in_flight = asyncio.ensure_future(navigate(sa, "f", "ada", within=90))
                await eventually(lambda: any(r[0] == "hold-ada" for r in lines(runs)), "A is in the tool")
                token_a = int(next(r for r in lines(runs) if r[0] == "hold-ada")[3])

                a.pause()  # frozen while holding the lock: its lease runs out
                try:
                    # B takes the lock over and redoes the step; its call of the same tool (same
                    # idempotency key) joins the run A started, which is now released.
                    await asyncio.to_thread((runs.parent / "runs.release").write_text, "go")
                    done_b = await navigate(sb, "f", "bob", within=TAKEOVER_TIMEOUT)
                finally:
                    a.resume()
                assert done_b.code is None, f"B did not take the session over: {done_b}"
                assert done_b.state is not None and done_b.state.current_node_id == "done"

                late = await in_flight
                assert (late.code, late.reason) == (grpc.StatusCode.ABORTED, "LOCK_LOST"), late
                assert "stale fencing token" in late.message
                # The sidecar says so in its log too.
                assert any("refused" in line and "stale fencing token" in line for line in sidecar.output)
                stored = (await sb.Get(spb.SessionsGetRequest(session_id="f"), timeout=20)).step.state
                assert stored == done_b.state
    records = [r for r in lines(runs) if r[0].startswith("record-")]
    # The tool after the takeover ran once, for B, with B's larger token; never for A.
    assert len(records) == 1, records
    assert int(records[0][3]) > token_a
    context = orjson.loads(done_b.state.context_json)
    assert context["recorded"] == {"recorded": "bob"}
