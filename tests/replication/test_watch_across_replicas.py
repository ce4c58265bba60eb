"""Sessions.Watch across replicas: three ``trellis serve`` processes on one real etcd.

1,000 steps spread over the three replicas, one SDK watcher on each replica: every
watcher sees all 1,000 changes in order; the replica of one watcher is killed
(SIGKILL, by PID) mid-stream and its SDK watch resumes on another replica with no
gap and no duplicate; the deletion through one replica ends every watch. A watch
resumed from a compacted revision gets WATCH_REVISION_COMPACTED and the current
state. The Node client's watch resumes on another replica the same way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from aetcd import rpc

from tests.etcd_system.deployment import Deployment
from tests.support import node
from tests.support.etcd_process import EtcdCluster
from tests.support.replicas import Replica
from tests.support.servers import ROOT
from tests.support.waiting import eventually
from trellis.adapters.etcd import EtcdClient
from trellis.clients import Client
from trellis.domain import SessionEvent
from trellis.errors import WatchRevisionCompacted

STEPS = 1000
KILL_AT = 400
NODE_DIR = ROOT / "clients" / "node"
BOUND = 300.0  # a loaded 2-core machine: generous, never the thing under test


@pytest.fixture
def deployment(etcd_server: EtcdCluster, tmp_path: Path) -> Iterator[Deployment]:
    made = Deployment(etcd_server, tmp_path / "logs")
    try:
        yield made
    finally:
        made.close()


async def _echo_replicas(deployment: Deployment, tmp_path: Path, count: int) -> list[Replica]:
    """Replicas of a one-node flow whose every step saves its input to ``last``."""
    flow = tmp_path / "echo"
    flow.mkdir()
    (flow / "start.md").write_text("---\nwait: true\nsave_to: last\nto: start\n---\nSay something\n")
    await deployment.publish("echo", flow)
    return deployment.replicas_for(count, "echo", options={"entry": "start"})


def _failover_target(replicas: Sequence[Replica], first: int) -> str:
    """All replicas as one gRPC target, ``first`` tried first (pick_first walks the list
    when the connection breaks, as a client behind a load balancer would be moved)."""
    ordered = [replicas[(first + i) % len(replicas)] for i in range(len(replicas))]
    return "ipv4:" + ",".join(r.target for r in ordered)


async def _watch(client: Client, session_id: str, into: list[SessionEvent]) -> None:
    async for event in client.sessions.watch_events(session_id):
        into.append(event)


def _check(events: list[SessionEvent], steps: int) -> None:
    changes = [e for e in events if e.diff is not None]
    got = [e.diff.context["last"] for e in changes if e.diff is not None and e.diff.context]
    assert got == [str(n) for n in range(steps)], "a change was missed, repeated or reordered"
    revisions = [e.revision for e in events]
    assert revisions == sorted(revisions)
    assert len({e.revision for e in changes}) == len(changes)
    assert events[-1].deleted


async def test_every_watcher_sees_every_step_of_every_replica_and_resumes_elsewhere(
    deployment: Deployment, tmp_path: Path
) -> None:
    replicas = await _echo_replicas(deployment, tmp_path, 3)
    steppers = [Client(r.target) for r in replicas]
    watchers = [Client(_failover_target(replicas, i)) for i in range(3)]
    seen: list[list[SessionEvent]] = [[], [], []]
    tasks: list[asyncio.Task[None]] = []
    try:
        async with asyncio.timeout(BOUND):
            await steppers[0].sessions.start("s")
            tasks = [asyncio.create_task(_watch(w, "s", got)) for w, got in zip(watchers, seen, strict=True)]
            await eventually(lambda: all(seen), "each watch's first bookmark (it is open)", within=60)
            live = [0, 1, 2]
            for n in range(STEPS):
                if n == KILL_AT:
                    assert len([e for e in seen[0] if e.diff]) < STEPS
                    replicas[0].kill()  # watcher 0's replica, mid-stream
                    live = [1, 2]
                await steppers[live[n % len(live)]].sessions.navigate("s", str(n))
            await steppers[2].sessions.delete("s")
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        for client in steppers + watchers:
            await client.close()
    for events in seen:
        _check(events, STEPS)


async def test_a_watch_from_a_compacted_revision_gets_the_error_and_the_current_state(
    deployment: Deployment, tmp_path: Path
) -> None:
    (replica,) = await _echo_replicas(deployment, tmp_path, 1)
    async with Client(replica.target) as client, EtcdClient(deployment.config()) as etcd:
        first = await client.sessions.start("c")
        for n in range(3):
            last = await client.sessions.navigate("c", str(n))
        await etcd.call("Compact", rpc.CompactionRequest(revision=last.state.revision, physical=True))
        with pytest.raises(WatchRevisionCompacted, match="get the session and watch again") as caught:
            async with asyncio.timeout(60):
                async for _ in client.sessions.watch_events("c", start_revision=first.state.revision + 1):
                    pass
        assert caught.value.compact_revision == last.state.revision
        assert caught.value.current is not None
        assert caught.value.current.state.context["last"] == "2"
        # Start over from the current state: the next change is the first event after it.
        resumed = client.sessions.watch("c", start_revision=caught.value.current.state.revision + 1)
        async with asyncio.timeout(60):
            pending = asyncio.ensure_future(anext(resumed))
            await client.sessions.navigate("c", "again")
            change = await pending
        await resumed.aclose()
    assert change.context == {"last": "again"}
    assert change.revision > last.state.revision


@pytest.fixture(scope="module")
def node_modules() -> Path:
    return node.node_modules(NODE_DIR, "google-proto-files")


async def test_the_node_client_watch_resumes_on_another_replica(
    deployment: Deployment, tmp_path: Path, node_modules: Path
) -> None:
    first, second = await _echo_replicas(deployment, tmp_path, 2)
    async with Client(second.target) as stepper:
        await stepper.sessions.start("n")
        watcher = await asyncio.create_subprocess_exec(
            "node",
            "watch.js",
            _failover_target([first, second], 0),
            "n",
            cwd=NODE_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert watcher.stdout is not None
            async with asyncio.timeout(BOUND):
                line = await watcher.stdout.readline()
                if not line:
                    assert watcher.stderr is not None
                    pytest.fail(f"the Node watch ended at once: {(await watcher.stderr.read()).decode()}")
                opened = json.loads(line)  # the first bookmark
                for n in range(50):
                    if n == 25:
                        first.kill()  # the replica the Node watch is connected to
                    await stepper.sessions.navigate("n", str(n))
                await stepper.sessions.delete("n")
                out, err = await watcher.communicate()
        finally:
            if watcher.returncode is None:
                watcher.kill()
                await watcher.wait()
    assert watcher.returncode == 0, err.decode()
    events = [opened] + [json.loads(line) for line in out.decode().splitlines()]
    assert events[0]["bookmark"]
    changes = [json.loads(e["diff"]["context_json"])["last"] for e in events if "diff" in e]
    assert changes == [str(n) for n in range(50)], "a change was missed, repeated or reordered"
    revisions = [e["revision"] for e in events]
    assert revisions == sorted(revisions)
    assert events[-1] == {"revision": revisions[-1], "deleted": True}
