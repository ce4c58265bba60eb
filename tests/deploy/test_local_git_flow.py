"""The git-flow variant (components/loader-sidecar), run as rendered: git-sync's part is
played by the test, which lays out the volume the way git-sync does (a worktree and
the ``current`` symlink to it, swapped atomically on each sync); the loader sidecar,
the dispatcher sidecar and the server run as local processes. The flow is served from
the checkout through the loader's Unix socket, and a session walks it end to end."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path

import pytest

from tests.deploy.local_pod import LocalPod
from tests.deploy.rendering import KUBERNETES, find, render
from tests.support.etcd_process import EtcdCluster
from tests.support.waiting import eventually
from trellis.clients import Client

FLOW = KUBERNETES / "base" / "flow"
pytestmark = pytest.mark.etcd


def sync(git: Path, flow: Path) -> Path:
    """What one git-sync sync leaves in its root: a new worktree, then the link
    ``current`` pointing at it, replaced in one rename."""
    worktree = git / ".worktrees" / uuid.uuid4().hex
    shutil.copytree(flow, worktree)
    link = git / f".current-{uuid.uuid4().hex[:6]}"
    os.symlink(worktree.relative_to(git), link)
    os.replace(link, git / "current")
    return worktree


async def walk(port: int, token: str, session: str) -> str:
    async with Client(f"127.0.0.1:{port}", token=token) as client:
        await client.sessions.start(session)
        step = await client.sessions.navigate(session, "Ada")
    assert step.state.current_node_id == "done", step.state
    return str(step.state.context["answer"]["greeting"])


async def test_the_flow_is_served_from_the_checkout(etcd_cluster3: EtcdCluster) -> None:
    docs = render("examples/git-flow")
    spec = find(docs, "Deployment", "trellis")["spec"]["template"]["spec"]
    token = uuid.uuid4().hex
    secrets = {"trellis-auth": {"tokens": token.encode(), "signing-key": os.urandom(32)}}
    hosts = {f"etcd-{i}.etcd:2379": m.endpoint for i, m in enumerate(etcd_cluster3.members)}

    def git_sync(pod: LocalPod) -> None:
        sync(pod.volumes["git"], FLOW)

    pod = LocalPod(
        "trellis-5f7d8c9b6-g1t2s", spec, docs, secrets=secrets, hosts=hosts, stand_ins={"git-sync": git_sync}
    )
    try:
        await pod.start()
        for name in pod.containers:
            for kind in ("readinessProbe", "livenessProbe"):
                if kind in pod.specs[name]:
                    await pod.wait_probe(name, kind)
        port = pod.service_port(find(docs, "Service", "trellis"), "grpc")
        assert await walk(port, token, "git-1") == "Hello, Ada."
        # Nothing was published to etcd: the flow came through the loader sidecar.
        assert "publish" not in " ".join(d["metadata"]["name"] for d in docs if d["kind"] == "Job")
    finally:
        await asyncio.to_thread(pod.kill)


async def test_a_sync_reaches_the_engine(etcd_cluster3: EtcdCluster, tmp_path: Path) -> None:
    docs = render("examples/git-flow")
    spec = find(docs, "Deployment", "trellis")["spec"]["template"]["spec"]
    token = uuid.uuid4().hex
    secrets = {"trellis-auth": {"tokens": token.encode(), "signing-key": os.urandom(32)}}
    hosts = {f"etcd-{i}.etcd:2379": m.endpoint for i, m in enumerate(etcd_cluster3.members)}
    edited = tmp_path / "flow"
    shutil.copytree(FLOW, edited)
    (edited / "tools.yaml").unlink(missing_ok=True)
    (edited / "start.md").write_text((FLOW / "start.md").read_text().replace("to: greet", "to: done"))
    (edited / "done.md").write_text("---\n---\nSynced.\n")

    def git_sync(pod: LocalPod) -> None:
        sync(pod.volumes["git"], FLOW)

    pod = LocalPod(
        "trellis-5f7d8c9b6-g1t2s", spec, docs, secrets=secrets, hosts=hosts, stand_ins={"git-sync": git_sync}
    )
    try:
        await pod.start()
        port = pod.service_port(find(docs, "Service", "trellis"), "grpc")
        assert await walk(port, token, "git-1") == "Hello, Ada."
        old = os.readlink(pod.volumes["git"] / "current")
        sync(pod.volumes["git"], edited)
        shutil.rmtree(pod.volumes["git"] / old)  # git-sync removes the old worktree

        async def reloaded() -> bool:
            async with Client(f"127.0.0.1:{port}", token=token) as client:
                step = await client.sessions.start(f"git-{uuid.uuid4().hex[:6]}")
                step = await client.sessions.navigate(step.state.session_id, "Ada")
            return step.state.current_node_id == "done" and "answer" not in step.state.context

        await eventually(reloaded, "the synced flow is served", within=15, interval=0.5)
    finally:
        await asyncio.to_thread(pod.kill)
