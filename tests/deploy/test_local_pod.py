"""The manifests cannot drift from the programs: each overlay's publishing Job and
trellis pod, rendered by kustomize, run as local processes (tests/deploy/local_pod.py)
against a real 3-member etcd standing in for the StatefulSet, and do what
deploy/README.md says:

* the Job publishes the flow; the dispatcher sidecar and the server start, and every
  declared probe passes as the kubelet runs it; every declared port answers;
* a session walks the flow end to end through the Service's port, with the bearer
  token from the Secret, its tool run by the sidecar over the shared Unix socket;
* with etcd down, readiness (trellis.v1.Sessions) fails while liveness holds, and
  readiness comes back with etcd;
* on termination (preStop, SIGTERM, the declared grace period) readiness fails, new
  calls are refused, an in-flight step finishes, and every container exits cleanly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import orjson
import pytest
from aetcd import rpc

from tests.deploy.documented_secrets import documented_secrets
from tests.deploy.local_pod import PROGRAMS, LocalPod
from tests.deploy.rendering import KUBERNETES, OVERLAYS, find, render
from tests.support.etcd_process import EtcdCluster, EtcdUnavailable
from tests.support.requirements import missing
from tests.support.waiting import eventually
from trellis.adapters.etcd import EtcdClient, EtcdConfig
from trellis.adapters.etcd.client import prefix_end
from trellis.adapters.etcd.locker import lock_prefix
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import sessions_pb2_grpc
from trellis.api.v1 import types_pb2 as pb
from trellis.clients import Client

pytestmark = pytest.mark.etcd

CALL_BOUND = 60.0
OUTAGE_BOUND = 90.0


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def etcd(overlay: str) -> Iterator[EtcdCluster]:
    """Three members standing in for the StatefulSet; with client TLS in production."""
    try:
        cluster = EtcdCluster(3, tls=overlay == "overlays/production")
        cluster.start()
    except EtcdUnavailable as exc:
        missing(str(exc))
    try:
        yield cluster
    finally:
        cluster.close()


class Deployment:
    """What the test gives the pods: the Secrets, and etcd's cluster names as addresses here."""

    def __init__(self, overlay: str, cluster: EtcdCluster, workdir: Path) -> None:
        self.docs = render(overlay)
        self.cluster = cluster
        # The token Secret as deploy/README.md makes it.
        self.secrets = {"trellis-auth": documented_secrets(workdir)["trellis-auth"]}
        self.token = self.secrets["trellis-auth"]["tokens"].decode().splitlines()[0]
        if cluster.tls is not None:
            self.secrets["etcd-client-tls"] = {
                "ca.crt": cluster.tls.ca.read_bytes(),
                "tls.crt": cluster.tls.client_cert.read_bytes(),
                "tls.key": cluster.tls.client_key.read_bytes(),
            }
        # With TLS the members are reached by a name their certificate holds, as in the
        # cluster (one certificate naming every member); the test certificates name
        # localhost. (Several bare IP endpoints with TLS fail the name check: the
        # authority is then the list of addresses.)
        host = "localhost" if cluster.tls is not None else "127.0.0.1"
        self.hosts = {f"etcd-{i}.etcd:2379": f"{host}:{m.client_port}" for i, m in enumerate(cluster.members)}

    def pod(self, kind: str, name: str, pod_name: str) -> LocalPod:
        spec = find(self.docs, kind, name)["spec"]["template"]["spec"]
        return LocalPod(pod_name, spec, self.docs, secrets=self.secrets, hosts=self.hosts)

    def etcd_config(self) -> EtcdConfig:
        tls = self.cluster.tls
        files = {}
        if tls is not None:
            files = {
                "ca_file": str(tls.ca),
                "cert_file": str(tls.client_cert),
                "key_file": str(tls.client_key),
            }
        return EtcdConfig(endpoints=tuple(self.hosts.values()), prefix="/trellis", **files)  # type: ignore[arg-type]


@asynccontextmanager
async def running(pod: LocalPod) -> AsyncIterator[LocalPod]:
    try:
        await pod.start()
        yield pod
    finally:
        await asyncio.to_thread(pod.kill)


async def navigate(stub: Any, session: str, text: str, token: str) -> Any:
    request = spb.SessionsNavigateRequest(session_id=session, input=pb.Input(text=text))
    return await stub.Navigate(request, timeout=CALL_BOUND, metadata=[("authorization", f"Bearer {token}")])


async def start(stub: Any, session: str, token: str) -> None:
    request = spb.SessionsStartRequest(session_id=session)
    await stub.Start(request, timeout=CALL_BOUND, metadata=[("authorization", f"Bearer {token}")])


async def locked(config: EtcdConfig, session: str) -> bool:
    """Whether a server holds (or waits for) the session's lock: a step is in flight."""
    async with EtcdClient(config) as client:
        prefix = lock_prefix(client, session)
        request = rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix), count_only=True)
        reply = await client.call("Range", request)
        return bool(reply.count)


def run_cli(port: int, token: str, session: str, typed: str) -> str:
    """deploy/README.md's `trellis run FLOW --server ... --session ...`, answering on stdin."""
    flow = str(KUBERNETES / "base" / "flow")
    argv = [*PROGRAMS["trellis"], "run", flow, "--server", f"127.0.0.1:{port}", "--session", session]
    done = subprocess.run(
        argv,
        input=typed,
        capture_output=True,
        text=True,
        timeout=CALL_BOUND,
        env={**os.environ, "TRELLIS_TOKEN": token},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def read_url(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return bytes(reply.read())


def greeting(response: Any) -> str:
    state = response.step.state
    assert state.current_node_id == "done", state
    return str(orjson.loads(state.context_json)["answer"]["greeting"])


async def test_the_overlay_runs_as_declared(overlay: str, etcd: EtcdCluster, tmp_path: Path) -> None:
    deployment = Deployment(overlay, etcd, tmp_path)

    # The publishing Job puts the flow of the trellis-flow ConfigMap into etcd.
    job = deployment.pod("Job", "trellis-publish-graph", "trellis-publish-graph-x7k2p")
    try:
        await job.run_to_completion()
    finally:
        await asyncio.to_thread(job.kill)

    pod = deployment.pod("Deployment", "trellis", "trellis-7d9c5b6f4-q8x2z")
    async with running(pod):
        # Every declared probe passes; every declared port answers.
        for container in pod.containers.values():
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                if kind in container.spec:
                    await pod.wait_probe(container.name, kind)
        server = pod.containers["trellis"].spec
        metrics = pod.local_port(server, "metrics")
        assert b"trellis_steps" in await asyncio.to_thread(read_url, f"http://127.0.0.1:{metrics}/metrics")

        port = pod.service_port(find(deployment.docs, "Service", "trellis"), "grpc")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = sessions_pb2_grpc.SessionsStub(channel)
            # The token of the Secret is required.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await start(stub, "k8s-anonymous", "not-the-token")
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

            # A flow end to end with the SDK (as deploy/README.md does), its tool served by
            # the dispatcher sidecar.
            async with Client(f"127.0.0.1:{port}", token=deployment.token) as client:
                await client.sessions.start("k8s-1")
                step = await client.sessions.navigate("k8s-1", "Ada")
            assert step.state.current_node_id == "done"
            assert step.state.context["answer"]["greeting"] == "Hello, Ada."
            # ... and with the command line, as the quickstart does.
            shown = await asyncio.to_thread(run_cli, port, deployment.token, "k8s-cli", "Ada\n")
            assert "Hello, Ada." in shown

            # etcd down: out of the Service (readiness), not restarted (liveness).
            for member in etcd.members:
                await asyncio.to_thread(member.stop)
            await pod.wait_probe("trellis", "readinessProbe", passing=False, within=OUTAGE_BOUND)
            assert await pod.probe("trellis", "livenessProbe")
            assert pod.containers["trellis"].running()
            for member in etcd.members:
                await asyncio.to_thread(member.start)
            await asyncio.to_thread(etcd.wait_healthy)
            await pod.wait_probe("trellis", "readinessProbe", within=OUTAGE_BOUND)
            await start(stub, "k8s-2", deployment.token)
            assert greeting(await navigate(stub, "k8s-2", "Bob", deployment.token)) == "Hello, Bob."

            # Termination with a step in flight: the sidecar is paused so the step waits
            # in its tool call, holding the session's lock.
            await start(stub, "k8s-3", deployment.token)
            tools = pod.containers["tools"]
            tools.signal(signal.SIGSTOP)
            in_flight = asyncio.ensure_future(navigate(stub, "k8s-3", "Cy", deployment.token))
            try:
                await eventually(
                    lambda: locked(deployment.etcd_config(), "k8s-3"), "the step is in flight", interval=0.2
                )
                deadline = await pod.begin_termination()
                await pod.wait_probe("trellis", "readinessProbe", passing=False)
                with pytest.raises(grpc.aio.AioRpcError) as late:
                    await start(stub, "k8s-late", deployment.token)
                assert late.value.code() == grpc.StatusCode.UNAVAILABLE
            finally:
                tools.signal(signal.SIGCONT)
            assert greeting(await in_flight) == "Hello, Cy."
            codes = await pod.finish_termination(deadline)
    assert codes == {"trellis": 0, "tools": 0}, pod.logs()
