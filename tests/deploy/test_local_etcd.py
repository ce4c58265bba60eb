"""The etcd StatefulSet of each overlay, run as rendered: three members from the
manifest's own command and flags (the etcd binary standing in for the image), each
with its volume claim as a directory and its cluster names on loopback. They form a
cluster, every probe passes, the quota is in force, the publishing Job reaches them
(over TLS in production), and with quorum lost readiness fails while liveness holds:
the kubelet takes the member out of the Service but does not restart it."""

from __future__ import annotations

import asyncio
import shutil
import signal
import urllib.request
from pathlib import Path

import pytest

from tests.deploy.documented_secrets import documented_secrets
from tests.deploy.local_pod import PROGRAMS, LocalPod
from tests.deploy.rendering import OVERLAYS, find, render
from tests.support.etcd_process import free_port
from tests.support.requirements import missing

pytestmark = pytest.mark.etcd

CLIENT, PEER, METRICS = 2379, 2380, 2381


def read_url(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return bytes(reply.read()).decode()


@pytest.mark.parametrize("overlay", OVERLAYS)
async def test_the_statefulset_forms_a_cluster_as_declared(overlay: str, tmp_path: Path) -> None:
    if shutil.which(PROGRAMS["etcd"][0]) is None:
        missing("the etcd binary is not installed (scripts/bootstrap installs etcd-server)")
    docs = render(overlay)
    statefulset = find(docs, "StatefulSet", "etcd")
    spec = statefulset["spec"]["template"]["spec"]
    claims = [claim["metadata"]["name"] for claim in statefulset["spec"]["volumeClaimTemplates"]]
    members = int(statefulset["spec"]["replicas"])
    ports = [{CLIENT: free_port(), PEER: free_port(), METRICS: free_port()} for _ in range(members)]
    # The TLS Secrets as deploy/README.md makes them (names for the members, localhost).
    secrets = documented_secrets(tmp_path)
    # With client TLS, clients name the members as their certificate does (localhost here).
    client_host = "localhost" if overlay == "overlays/production" else "127.0.0.1"
    hosts = {}
    for i, member in enumerate(ports):
        hosts[f"etcd-{i}.etcd:{CLIENT}"] = f"{client_host}:{member[CLIENT]}"
        hosts[f"etcd-{i}.etcd:{PEER}"] = f"127.0.0.1:{member[PEER]}"
    pods = [
        LocalPod(f"etcd-{i}", spec, docs, secrets=secrets, hosts=hosts, ports=ports[i], claims=claims)
        for i in range(members)
    ]
    try:
        # podManagementPolicy: Parallel: the members start together (each needs a quorum).
        await asyncio.gather(*(pod.start() for pod in pods))
        for pod in pods:
            for kind in ("readinessProbe", "livenessProbe"):
                await pod.wait_probe("etcd", kind)
        metrics = await asyncio.to_thread(read_url, f"http://127.0.0.1:{ports[0][METRICS]}/metrics")
        quota = next(a for a in spec["containers"][0]["args"] if a.startswith("--quota-backend-bytes="))
        served = [
            float(line.split()[1])
            for line in metrics.splitlines()
            if line.startswith("etcd_server_quota_backend_bytes ")
        ]
        assert served == [float(quota.split("=", 1)[1])], "the quota of the manifest is in force"

        # The publishing Job's client flags reach the members.
        job_spec = find(docs, "Job", "trellis-publish-graph")["spec"]["template"]["spec"]
        job = LocalPod("trellis-publish-graph-x1", job_spec, docs, secrets=secrets, hosts=hosts)
        try:
            await job.run_to_completion()
        finally:
            await asyncio.to_thread(job.kill)

        # Quorum lost: the last member is not ready, but alive (not restarted).
        for pod in pods[1:]:
            pod.containers["etcd"].signal(signal.SIGKILL)
        await pods[0].wait_probe("etcd", "readinessProbe", passing=False)
        assert await pods[0].probe("etcd", "livenessProbe")
        assert pods[0].containers["etcd"].running()
    finally:
        for pod in pods:
            await asyncio.to_thread(pod.kill)
