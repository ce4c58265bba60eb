"""etcd failing under a running deployment: one member of three killed and restarted
under load, then all of etcd down and back. The service keeps serving (or fails
cleanly and retryably), recovers without a restart, and loses or doubles nothing."""

from __future__ import annotations

import asyncio
import json
import random
import urllib.request
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import pytest
from grpc_health.v1 import health_pb2

from tests.etcd_system.deployment import Deployment, channels
from tests.etcd_system.stepping import Ledger, check_counter, navigate, step_senders, step_until_acked
from tests.support.etcd_process import EtcdCluster, EtcdMember
from tests.support.replicas import health_of
from tests.support.system_flows import counter_node, write_counter_flow
from tests.support.waiting import eventually
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import sessions_pb2_grpc

SERVING = int(health_pb2.HealthCheckResponse.SERVING)
NOT_SERVING = int(health_pb2.HealthCheckResponse.NOT_SERVING)


def _leader(cluster: EtcdCluster) -> EtcdMember:
    """The member that is raft leader (asked through etcd's JSON gateway)."""
    for member in cluster.members:
        request = urllib.request.Request(
            f"http://{member.endpoint}/v3/maintenance/status", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            status = json.loads(response.read())
        if status["leader"] == status["header"]["member_id"]:
            return member
    raise AssertionError("the cluster has no leader")


@pytest.mark.parametrize("step_stream", [False, True], ids=["unary", "step-stream"])
async def test_a_member_killed_and_restarted_under_load_loses_and_doubles_nothing(
    cluster_deployment: Deployment, tmp_path: Path, step_stream: bool
) -> None:
    deployment = cluster_deployment
    await deployment.publish("counter", write_counter_flow(tmp_path / "flow", 120))
    replicas = deployment.replicas_for(
        2, "counter", options={"lock_ttl": "5s", "request_timeout": "3s", "entry": counter_node(0)}
    )
    ids = [f"m{i}" for i in range(4)]
    ledgers = {sid: Ledger() for sid in ids}
    acked = 0
    stop = asyncio.Event()
    async with (
        channels(replicas) as opened,
        step_senders([sessions_pb2_grpc.SessionsStub(c) for c in opened], step_stream) as senders,
    ):
        stubs = [sessions_pb2_grpc.SessionsStub(c) for c in opened]
        for sid in ids:
            await stubs[0].Start(spb.SessionsStartRequest(session_id=sid), timeout=20)

        async def client(n: int) -> None:
            nonlocal acked
            rng = random.Random(n)
            for k in range(100):  # bounded; the phases below stop it much earlier
                if stop.is_set():
                    return
                sid = ids[(n + k) % len(ids)]
                outcome = await step_until_acked(senders, sid, f"c{n}-{k}", ledgers[sid], rng, within=15)
                assert outcome.code is None, f"step c{n}-{k} never acknowledged: {outcome}"
                acked += 1

        clients = [asyncio.ensure_future(client(n)) for n in range(6)]
        try:
            await eventually(lambda: acked >= 20, "steps before the kill", within=60)
            leader = _leader(deployment.cluster)
            leader.kill()
            during = acked
            await eventually(lambda: acked >= during + 30, "steps while a member is down", within=60)
            await asyncio.to_thread(deployment.cluster.restart, leader)
            after = acked
            await eventually(lambda: acked >= after + 20, "steps after the restart", within=60)
        finally:
            stop.set()
            await asyncio.gather(*clients)
        for sid in ids:
            state = (await stubs[1].Get(spb.SessionsGetRequest(session_id=sid), timeout=20)).step.state
            check_counter(state, ledgers[sid])
    assert sum(len(ledger.acked) for ledger in ledgers.values()) == acked


async def test_all_of_etcd_down_fails_fast_reports_not_serving_and_recovers_on_its_own(
    private_deployment: Deployment, tmp_path: Path
) -> None:
    deployment = private_deployment
    await deployment.publish("counter", write_counter_flow(tmp_path / "flow", 20))
    request_timeout = 1.0
    (replica,) = deployment.replicas_for(
        1, "counter", options={"lock_ttl": "2s", "request_timeout": "1s", "entry": counter_node(0)}
    )
    ledger = Ledger()
    rng = random.Random(4)
    async with channels([replica]) as (channel,):
        stub = sessions_pb2_grpc.SessionsStub(channel)
        await stub.Start(spb.SessionsStartRequest(session_id="d"), timeout=20)
        for k in range(3):
            assert (await step_until_acked([stub], "d", f"before{k}", ledger, rng)).code is None

        (member,) = deployment.cluster.members
        member.kill()
        # Bounded: lease wait + the request's own retries, each within request_timeout,
        # plus a margin. A call hanging past that would be DEADLINE_EXCEEDED, not UNAVAILABLE.
        for k in range(3):
            outcome = await navigate(stub, "d", f"down{k}", within=3 * request_timeout + 5)
            ledger.record(outcome)
            assert outcome.code == grpc.StatusCode.UNAVAILABLE, outcome
            assert outcome.reason == "BACKEND_UNAVAILABLE", outcome

        async def status_is(wanted: int) -> bool:
            return await health_of(channel) == wanted

        await eventually(lambda: status_is(NOT_SERVING), "health NOT_SERVING while etcd is down")

        await asyncio.to_thread(deployment.cluster.restart, member)  # same data directory
        await eventually(lambda: status_is(SERVING), "health SERVING again, without a restart", within=60)
        for k in range(3):
            assert (await step_until_acked([stub], "d", f"after{k}", ledger, rng)).code is None
        assert replica.running()
        state = (await stub.Get(spb.SessionsGetRequest(session_id="d"), timeout=20)).step.state
        assert check_counter(state, ledger) == 6  # the failed calls applied nothing
