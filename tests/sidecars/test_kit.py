"""The Python sidecar kit in this process: its rules (fence, schema, dedupe, deadline) and the
server side's use of it through RemoteDispatcher (discovery, retry policy, cancellation)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.pki import make_pki
from tests.support.requirements import missing
from trellis.adapters.grpc.channel import RemoteChannel
from trellis.adapters.grpc.dispatcher import RemoteDispatcher
from trellis.api.transport import ChannelOptions
from trellis.contracts.dispatcher import ActionDispatcherContract
from trellis.dispatching import DispatchContext, RetryPolicy, ToolPolicy
from trellis.domain import ToolCall
from trellis.errors import BackendUnavailable, ConfigError, LockLost, Unauthenticated
from trellis.ports.dispatcher import ActionDispatcher
from trellis.server.config import load_config
from trellis.sidecar import Sidecar, SidecarServer
from trellis.sidecar.server import SidecarOptions

BOUND = 30.0


def contract_sidecar() -> Sidecar:
    sidecar = Sidecar()

    @sidecar.tool()
    def echo(**args: Any) -> Any:
        return args

    @sidecar.tool()
    def fail(**args: Any) -> Any:
        raise RuntimeError("this tool always fails")

    return sidecar


class TestTheKitAsADispatcher(ActionDispatcherContract):
    async def make_dispatcher(self, tmp_path: Path) -> ActionDispatcher:
        return contract_sidecar()


class TestARemoteDispatcherOverTheKit(ActionDispatcherContract):
    async def make_dispatcher(self, tmp_path: Path) -> ActionDispatcher:
        self.server = await contract_sidecar().serve("127.0.0.1:0")
        dispatcher = RemoteDispatcher(RemoteChannel(self.server.address))
        await dispatcher.refresh()
        return dispatcher

    async def close_dispatcher(self, dispatcher: ActionDispatcher) -> None:
        assert isinstance(dispatcher, RemoteDispatcher)
        await dispatcher.aclose()
        await self.server.stop(0)


def call(name: str, key: str = "", **args: Any) -> ToolCall:
    return ToolCall(id=f"c-{name}-{key}", name=name, args=args, idempotency_key=key)


async def test_a_call_with_a_stale_fencing_token_is_refused_before_the_tool_runs() -> None:
    sidecar = Sidecar()
    ran: list[int] = []

    @sidecar.tool()
    def record(n: int) -> int:
        ran.append(n)
        return n

    await sidecar.dispatch(call("record", n=1), DispatchContext(session_id="s", fencing_token=7))
    with pytest.raises(LockLost, match=r"stale fencing token 6 .*\(token 7\)"):
        await sidecar.dispatch(call("record", n=2), DispatchContext(session_id="s", fencing_token=6))
    # Other sessions and callers without a lock are not affected.
    await sidecar.dispatch(call("record", n=3), DispatchContext(session_id="t", fencing_token=1))
    await sidecar.dispatch(call("record", n=4), DispatchContext(session_id="s", fencing_token=0))
    assert ran == [1, 3, 4]


async def test_arguments_are_checked_against_the_schema_from_the_signature() -> None:
    sidecar = Sidecar()

    @sidecar.tool()
    def pay(amount: int, currency: str = "EUR") -> str:
        return f"{amount} {currency}"

    bad = await sidecar.dispatch(call("pay", amount="ten", colour="red"))
    assert bad.is_error and bad.error_type == "InvalidArguments"
    assert "args.amount: expected integer, got string" in bad.error and "args.colour: unknown" in bad.error
    missing = await sidecar.dispatch(call("pay"))
    assert missing.is_error and "args.amount: required" in missing.error
    good = await sidecar.dispatch(call("pay", amount=3))
    assert good.result == "3 EUR"


async def test_a_key_runs_its_tool_once_even_when_retried_during_the_run() -> None:
    sidecar = Sidecar()
    runs: list[int] = []

    @sidecar.tool()
    async def slow(n: int) -> int:
        runs.append(n)
        await asyncio.sleep(0.05)
        return n

    async with asyncio.timeout(BOUND):
        results = await asyncio.gather(*(sidecar.dispatch(call("slow", "k1", n=i)) for i in range(5)))
        later = await sidecar.dispatch(call("slow", "k1", n=99))
        other = await sidecar.dispatch(call("slow", "k2", n=7))
    assert [r.result for r in results] == [0] * 5 and later.result == 0 and other.result == 7
    assert runs == [0, 7]


async def test_a_failed_run_is_not_remembered_so_its_retry_runs_again() -> None:
    sidecar = Sidecar()
    runs: list[int] = []

    @sidecar.tool()
    def flaky() -> str:
        runs.append(1)
        if len(runs) == 1:
            raise ConnectionError("upstream down")
        return "ok"

    first = await sidecar.dispatch(call("flaky", "k"))
    again = await sidecar.dispatch(call("flaky", "k"))
    assert first.is_error and first.error_type == "ConnectionError"
    assert again.result == "ok" and len(runs) == 2


async def test_the_dedupe_table_is_bounded() -> None:
    sidecar = Sidecar(max_keys=3)

    @sidecar.tool()
    def one() -> int:
        return 1

    for n in range(10):
        await sidecar.dispatch(call("one", f"k{n}"))
    assert len(sidecar.dedupe) == 3


async def test_the_context_deadline_bounds_the_tool() -> None:
    sidecar = Sidecar()

    @sidecar.tool()
    async def wait() -> str:
        await asyncio.sleep(BOUND)
        return "late"

    async with asyncio.timeout(BOUND):
        result = await sidecar.dispatch(call("wait"), DispatchContext(deadline=time.time() + 0.1))
    assert result.is_error and result.error_type == "Timeout"


@pytest.fixture
async def flaky_server() -> AsyncIterator[tuple[SidecarServer, list[DispatchContext]]]:
    sidecar = Sidecar()
    seen: list[DispatchContext] = []

    @sidecar.tool(idempotent=True, retry=RetryPolicy(initial_interval=0.01, maximum_attempts=5))
    def flaky(fail_times: int, error: str = "Flaky", context: DispatchContext | None = None) -> str:
        assert context is not None
        seen.append(context)
        if len(seen) <= fail_times:
            raise type(error, (Exception,), {})("not yet")
        return f"ok after {len(seen)}"

    @sidecar.tool()
    async def hang() -> str:
        seen.append(DispatchContext(node_id="hang-started"))
        try:
            await asyncio.sleep(BOUND)
        except asyncio.CancelledError:
            seen.append(DispatchContext(node_id="hang-cancelled"))
            raise
        return "never"

    server = await sidecar.serve("127.0.0.1:0")
    try:
        yield server, seen
    finally:
        await server.stop(0)


async def test_remote_dispatch_retries_by_the_tools_policy(
    flaky_server: tuple[SidecarServer, list[DispatchContext]],
) -> None:
    server, seen = flaky_server
    dispatcher = RemoteDispatcher(RemoteChannel(server.address))
    try:
        await dispatcher.refresh()
        assert dispatcher.tools == frozenset({"flaky", "hang"})
        assert dispatcher.info("flaky").idempotent
        result = await dispatcher.dispatch(ToolCall(id="c1", name="flaky", args={"fail_times": 2}))
        assert result.result == "ok after 3"
        assert [c.attempt for c in seen] == [1, 2, 3]
        assert all(c.deadline is not None for c in seen)
    finally:
        await dispatcher.aclose()


async def test_non_retryable_types_and_the_servers_policy_stop_retries(
    flaky_server: tuple[SidecarServer, list[DispatchContext]],
) -> None:
    server, seen = flaky_server
    no_retry = RetryPolicy(
        initial_interval=0.01, maximum_attempts=5, non_retryable_error_types=frozenset({"Fatal"})
    )
    dispatcher = RemoteDispatcher(
        RemoteChannel(server.address), policies={"flaky": ToolPolicy(retry=no_retry)}
    )
    try:
        await dispatcher.refresh()
        result = await dispatcher.dispatch(
            ToolCall(id="c1", name="flaky", args={"fail_times": 3, "error": "Fatal"})
        )
        assert result.is_error and result.error_type == "Fatal" and len(seen) == 1
    finally:
        await dispatcher.aclose()


async def test_a_call_that_is_not_idempotent_and_has_no_key_is_never_retried(
    flaky_server: tuple[SidecarServer, list[DispatchContext]],
) -> None:
    server, seen = flaky_server
    policy = ToolPolicy(idempotent=False, retry=RetryPolicy(initial_interval=0.01, maximum_attempts=5))
    dispatcher = RemoteDispatcher(RemoteChannel(server.address), policies={"flaky": policy})
    try:
        await dispatcher.refresh()
        result = await dispatcher.dispatch(ToolCall(id="c1", name="flaky", args={"fail_times": 1}))
        assert result.is_error and len(seen) == 1
        keyed = await dispatcher.dispatch(
            ToolCall(id="c2", name="flaky", args={"fail_times": 1}, idempotency_key="k")
        )
        assert keyed.result == "ok after 2"
    finally:
        await dispatcher.aclose()


async def test_a_cancelled_dispatch_cancels_the_tool_in_the_sidecar(
    flaky_server: tuple[SidecarServer, list[DispatchContext]],
) -> None:
    server, seen = flaky_server
    dispatcher = RemoteDispatcher(RemoteChannel(server.address))
    try:
        task = asyncio.ensure_future(dispatcher.dispatch(ToolCall(id="c1", name="hang")))
        async with asyncio.timeout(BOUND):
            while not seen:  # noqa: ASYNC110 - the sidecar notes it; nothing to wait on here
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            while len(seen) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert [c.node_id for c in seen] == ["hang-started", "hang-cancelled"]
    finally:
        await dispatcher.aclose()


async def test_a_unix_socket_sidecar_serves_like_a_tcp_one(tmp_path: Path) -> None:
    sidecar = contract_sidecar()
    with tempfile.TemporaryDirectory(prefix="trellis-kit-", dir="/tmp") as sockets:
        server = SidecarServer(SidecarOptions(listen=f"unix://{sockets}/k.sock"), dispatcher=sidecar)
        await server.start()
        dispatcher = RemoteDispatcher(RemoteChannel.from_target(f"unix:{sockets}/k.sock"))
        try:
            await dispatcher.probe()
            result = await dispatcher.dispatch(call("echo", x=1))
            assert result.result == {"x": 1}
        finally:
            await dispatcher.aclose()
            await server.stop(0)
        assert "k.sock" not in os.listdir(sockets)


def test_server_policies_and_sidecars_come_from_the_configuration_file(tmp_path: Path) -> None:
    config = tmp_path / "trellis.yaml"
    config.write_text(
        "dispatcher:\n"
        "  sidecars: [unix:///run/tools/pay.sock]\n"
        "  policies:\n"
        "    charge:\n"
        "      timeout: 5s\n"
        "      idempotent: true\n"
        "      retry: {initial_interval: 200ms, maximum_attempts: 4,\n"
        "              non_retryable_error_types: [Declined]}\n",
        encoding="utf-8",
    )
    loaded = load_config(file=str(config), flags={}, environ={})
    assert loaded.sidecars == ["unix:///run/tools/pay.sock"]
    policy = loaded.tool_policies["charge"]
    assert policy.timeout == 5.0 and policy.idempotent is True and policy.retry is not None
    assert policy.retry.maximum_attempts == 4 and policy.retry.non_retryable_error_types == {"Declined"}
    config.write_text("dispatcher:\n  policies:\n    charge: {retry: {maximum_attempts: 1000}}\n")
    with pytest.raises(
        ConfigError, match=r"charge\.retry\.maximum_attempts: must be an integer from 0 to 100"
    ):
        load_config(file=str(config), flags={}, environ={})


async def test_a_sidecar_with_a_token_refuses_callers_without_it() -> None:
    server = await contract_sidecar().serve("127.0.0.1:0", token="s3cret")
    anonymous = RemoteDispatcher(RemoteChannel(server.address))
    trusted = RemoteDispatcher(RemoteChannel(server.address, ChannelOptions(token="s3cret")))
    try:
        with pytest.raises(Unauthenticated):
            await anonymous.refresh()
        await trusted.probe()
        assert trusted.tools == frozenset({"echo", "fail"})
        assert (await trusted.dispatch(call("echo", x=1))).result == {"x": 1}
    finally:
        await anonymous.aclose()
        await trusted.aclose()
        await server.stop(0)


async def test_a_tls_sidecar_serves_a_server_with_its_ca(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        missing("the openssl command (to make certificates) is not installed")
    pki = make_pki(tmp_path / "pki")
    server = await contract_sidecar().serve(
        "127.0.0.1:0",
        tls_cert=str(pki / "server.pem"),
        tls_key=str(pki / "server.key"),
        tls_client_ca=str(pki / "ca.pem"),
    )
    port = server.address.rpartition(":")[2]
    ca, cert, key = pki / "ca.pem", pki / "client.pem", pki / "client.key"
    trusted = RemoteDispatcher(RemoteChannel.from_target(f"127.0.0.1:{port}?ca={ca}&cert={cert}&key={key}"))
    plain = RemoteDispatcher(RemoteChannel(f"127.0.0.1:{port}", ChannelOptions(timeout=5)))
    try:
        await trusted.probe()
        assert (await trusted.dispatch(call("echo", x=2))).result == {"x": 2}
        with pytest.raises(BackendUnavailable):
            await plain.refresh()
    finally:
        await trusted.aclose()
        await plain.aclose()
        await server.stop(0)


async def test_configured_tool_names_override_the_sidecars_list() -> None:
    server = await contract_sidecar().serve("127.0.0.1:0")
    narrowed = RemoteDispatcher(RemoteChannel(server.address), tools=["echo"])
    listed = RemoteDispatcher(RemoteChannel(server.address), claims_unknown=False)
    try:
        assert not listed.serves("echo")  # not heard from yet: claims nothing
        await narrowed.refresh()
        await listed.refresh()
        assert narrowed.serves("echo") and not narrowed.serves("fail")
        assert listed.serves("echo") and listed.serves("fail") and not listed.serves("other")
    finally:
        await narrowed.aclose()
        await listed.aclose()
        await server.stop(0)


async def test_an_unreachable_sidecar_is_named_with_the_tool() -> None:
    server = await contract_sidecar().serve("127.0.0.1:0")
    address = server.address
    await server.stop(0)
    dispatcher = RemoteDispatcher(RemoteChannel(address, ChannelOptions(timeout=5)))
    try:
        with pytest.raises(
            BackendUnavailable, match=rf"tool 'echo' .* dispatcher sidecar {address} is unavailable"
        ):
            await dispatcher.dispatch(call("echo", x=1))
    finally:
        await dispatcher.aclose()
