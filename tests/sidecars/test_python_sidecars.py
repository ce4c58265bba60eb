"""Sidecars as real processes: the Python kit and `trellis dispatcher` pass the conformance
check, and a server runs flows whose tools they serve (discovery, faults, timeouts)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.sidecar_processes import (
    ROOT,
    TRELLIS,
    SidecarProcess,
    conformance,
    running,
    server,
    socket_dir,
    start,
    write_flow,
)
from trellis.clients import Client
from trellis.dispatching import RetryPolicy, ToolPolicy
from trellis.domain import Status
from trellis.errors import BackendUnavailable

KIT_APP = [sys.executable, "-m", "tests.sidecars.kit_app"]
BOUND = 60.0

PAY_FLOW = {
    "start.md": "---\nwait: true\nsave_to: who\nto: pay\n---\nPay?\n",
    "pay.md": (
        "---\ndo:\n  name: charge\n  args:\n    amount: 10\n"
        "save_to: receipt\nto: done\non_error: failed\n---\n"
    ),
    "done.md": "---\n---\nPaid {{ .receipt.charged }}.\n",
    "failed.md": "---\n---\nPayment failed.\n",
}


def runs(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


async def wait_for(predicate: object, what: str, bound: float = BOUND) -> None:
    """Poll a file-backed condition (another process writes it: no event to wait on)."""
    assert callable(predicate)
    async with asyncio.timeout(bound):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


# --- conformance -------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "unix"])
async def test_the_python_kit_passes_the_conformance_check(transport: str, tmp_path: Path) -> None:
    async with socket_dir() as sockets:
        address = "127.0.0.1:0" if transport == "tcp" else f"unix://{sockets}/kit.sock"
        async with running([*KIT_APP, address], env={"RUNS_FILE": str(tmp_path / "runs")}) as sidecar:
            code, table = await conformance("dispatcher", sidecar.address)
    assert code == 0, table
    assert "8 passed, 0 failed, 0 skipped" in table, table
    assert "stale fencing token refused" in table and "FAIL" not in table


async def test_trellis_dispatcher_serves_tools_yaml_and_functions(tmp_path: Path) -> None:
    (tmp_path / "tools.yaml").write_text(
        "tools:\n"
        "  - name: echo\n    command: sh\n    args: ['-c', 'printf %s \"$TRELLIS_ARGS\"']\n"
        "  - name: sleep\n    command: sh\n    args: ['-c', 'sleep 30']\n",
        encoding="utf-8",
    )
    async with socket_dir() as sockets:
        argv = [
            *TRELLIS,
            "dispatcher",
            "--tools",
            str(tmp_path / "tools.yaml"),
            "--function",
            "greet=tests.sidecars.kit_app:echo",
            "--listen",
            f"unix://{sockets}/d.sock",
        ]
        async with running(argv) as sidecar:
            code, table = await conformance("dispatcher", sidecar.address)
    assert code == 0, table
    # Process tools declare no argument schema: that one check is skipped, none fails.
    assert "7 passed, 0 failed, 1 skipped" in table, table
    assert "3 tools: echo, greet, sleep" in table


# --- a server running flows on sidecar tools ------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "unix"])
async def test_a_flow_runs_on_a_sidecar_tool_with_its_dispatch_context(
    transport: str, tmp_path: Path
) -> None:
    flow = write_flow(tmp_path / "flow", PAY_FLOW)
    runs_file = tmp_path / "runs"
    async with socket_dir() as sockets:
        address = "127.0.0.1:0" if transport == "tcp" else f"unix://{sockets}/kit.sock"
        async with running([*KIT_APP, address], env={"RUNS_FILE": str(runs_file)}) as sidecar:
            async with server(flow, dispatcher=sidecar.url) as target, Client(target) as client:
                await client.sessions.start("s1")
                done = await client.sessions.navigate("s1", "me")
    assert done.terminal and done.state.context["receipt"] == {"charged": 10}
    (started, charged) = runs(runs_file)
    assert started[0] == "started" and charged[0] == "charged"
    assert charged[1] == "s1" and len(charged[2]) == 64
    assert int(charged[3]) > 0  # the step's lock token reached the sidecar


async def test_a_sidecar_started_after_the_server_is_discovered_and_reread_on_restart(
    tmp_path: Path,
) -> None:
    nodes = {
        **PAY_FLOW,
        "start.md": "---\nwait: true\nsave_to: what\ntransitions:\n  - condition: \"input == 'refund'\"\n"
        "    to: refund\nto: pay\n---\nPay?\n",
        "refund.md": (
            "---\ndo:\n  name: refund\n  args:\n    amount: 5\nsave_to: receipt\nto: refunded\n---\n"
        ),
        "refunded.md": "---\n---\nRefunded {{ .receipt.refunded }}.\n",
    }
    flow = write_flow(tmp_path / "flow", nodes)
    env = {"RUNS_FILE": str(tmp_path / "runs")}
    async with socket_dir() as sockets:
        address = f"unix://{sockets}/kit.sock"
        # The server starts first; its sidecar list names a socket nobody serves yet.
        async with server(flow, sidecars=[address]) as target, Client(target) as client:
            first = await client.sessions.start("before")
            before = await client.sessions.navigate("before", "pay")
            # Not served (yet): the call goes back to the client, as for any unserved tool.
            assert before.state.status is Status.WAITING_FOR_TOOL, first

            async def served(session: str, answer: str) -> bool:
                await client.sessions.start(session)
                step = await client.sessions.navigate(session, answer)
                return step.terminal

            sidecar = await start([*KIT_APP, address], env=env)
            try:
                async with asyncio.timeout(BOUND):
                    attempt = 0
                    while not await served(f"pay-{attempt}", "pay"):
                        attempt += 1
                        await asyncio.sleep(0.1)
                # refund is not in this sidecar's list
                assert not await served("refund-0", "refund")
            finally:
                await sidecar.stop()
            sidecar = await start([*KIT_APP, address], env={**env, "EXTRA_TOOL": "1"})
            try:
                async with asyncio.timeout(BOUND):
                    attempt = 1
                    while not await served(f"refund-{attempt}", "refund"):
                        attempt += 1
                        await asyncio.sleep(0.1)
                step = await client.sessions.get(f"refund-{attempt}")
                assert step.state.context["receipt"] == {"refunded": 5}
            finally:
                await sidecar.stop()


async def test_a_sidecar_killed_mid_tool_fails_the_step_and_a_retry_charges_once(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", PAY_FLOW)
    runs_file = tmp_path / "runs"
    env = {"RUNS_FILE": str(runs_file), "CHARGE_DELAY": "30"}
    policies = {"charge": ToolPolicy(retry=RetryPolicy(initial_interval=0.05, maximum_attempts=2))}
    async with socket_dir() as sockets:
        address = f"unix://{sockets}/kit.sock"
        sidecar: SidecarProcess = await start([*KIT_APP, address], env=env)
        try:
            async with (
                server(flow, dispatcher=address, tool_policies=policies) as target,
                Client(target) as c,
            ):
                await c.sessions.start("s1")
                step = asyncio.ensure_future(c.sessions.navigate("s1", "me"))
                await wait_for(lambda: any(r[0] == "started" for r in runs(runs_file)), "the tool to start")
                await sidecar.kill()
                with pytest.raises(BackendUnavailable, match="unavailable"):
                    async with asyncio.timeout(BOUND):
                        await step
                # Nothing of the failed step was kept: the session still waits at its input.
                stored = await c.sessions.get("s1")
                assert stored.state.current_node_id == "start" and stored.state.status is Status.ACTIVE
                sidecar = await start([*KIT_APP, address], env={**env, "CHARGE_DELAY": "0"})
                # A later step retries, as a client would, until the server reaches the sidecar again.
                async with asyncio.timeout(BOUND):
                    while True:
                        try:
                            done = await c.sessions.navigate("s1", "me")
                            break
                        except BackendUnavailable:
                            await asyncio.sleep(0.1)
        finally:
            await sidecar.stop()
    assert done.terminal and done.state.context["receipt"] == {"charged": 10}
    outcomes = [r[0] for r in runs(runs_file)]
    assert outcomes == ["started", "started", "charged"]
    keys = {r[2] for r in runs(runs_file)}
    assert len(keys) == 1  # the retry carried the same idempotency key


async def test_a_sidecar_slower_than_the_timeout_is_cancelled_and_on_error_taken(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", PAY_FLOW)
    runs_file = tmp_path / "runs"
    # The server's policy wins over the sidecar's declared retries: one attempt of 0.5 s.
    policies = {"charge": ToolPolicy(timeout=0.5, retry=RetryPolicy(maximum_attempts=1))}
    async with socket_dir() as sockets:
        address = f"unix://{sockets}/kit.sock"
        env = {"RUNS_FILE": str(runs_file), "CHARGE_DELAY": "30"}
        async with running([*KIT_APP, address], env=env):
            async with (
                server(flow, dispatcher=address, tool_policies=policies) as target,
                Client(target) as c,
            ):
                await c.sessions.start("s1")
                step = await c.sessions.navigate("s1", "me")
                # The call was cancelled in the sidecar too, not left running.
                await wait_for(lambda: any(r[0] == "cancelled" for r in runs(runs_file)), "the cancel")
    assert step.terminal and step.state.current_node_id == "failed"
    assert [r[0] for r in runs(runs_file)] == ["started", "cancelled"]
    # The call carried the caller's deadline (1.5 s), not the tool's own 30 s.
    assert float(runs(runs_file)[0][4]) < 5


async def test_a_sidecar_drains_running_calls_on_sigterm(tmp_path: Path) -> None:
    runs_file = tmp_path / "runs"
    flow = write_flow(tmp_path / "flow", PAY_FLOW)
    async with socket_dir() as sockets:
        address = f"unix://{sockets}/kit.sock"
        sidecar = await start([*KIT_APP, address], env={"RUNS_FILE": str(runs_file), "CHARGE_DELAY": "1"})
        try:
            async with server(flow, dispatcher=address) as target, Client(target) as c:
                await c.sessions.start("s1")
                step = asyncio.ensure_future(c.sessions.navigate("s1", "me"))
                await wait_for(lambda: bool(runs(runs_file)), "the tool to start")
                stopping = asyncio.ensure_future(sidecar.stop())
                done = await step
                assert await stopping == 0
        finally:
            await sidecar.stop()
    assert done.terminal and done.state.context["receipt"] == {"charged": 10}


# --- the loader sidecar ---------------------------------------------------------------------


async def test_an_edit_reaches_the_server_through_the_loader_sidecar(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", {"start.md": "---\nwait: true\n---\nversion one\n"})
    async with socket_dir() as sockets:
        argv = [*TRELLIS, "loader", str(flow), "--listen", f"unix://{sockets}/flow.sock"]
        async with running(argv) as sidecar:
            code, table = await conformance("loader", sidecar.address)
            assert code == 0 and "5 passed, 0 failed" in table, table
            async with server(tmp_path / "unused", flow_dir="", loader=sidecar.address) as target:
                async with Client(target) as client:
                    first = await client.sessions.start("a")
                    assert first.render.actions[0].payload.strip() == "version one"
                    (flow / "start.md").write_text("---\nwait: true\n---\nversion two\n", encoding="utf-8")
                    async with asyncio.timeout(BOUND):
                        n = 0
                        while True:
                            n += 1
                            step = await client.sessions.start(f"b{n}")
                            if str(step.render.actions[0].payload).strip() == "version two":
                                break
                            await asyncio.sleep(0.1)


def test_trellis_dispatcher_refuses_to_start_without_tools() -> None:
    done = subprocess.run([*TRELLIS, "dispatcher"], cwd=ROOT, capture_output=True, text=True, timeout=BOUND)
    assert done.returncode == 2 and "no tools to serve" in done.stderr


async def test_the_steps_deadline_becomes_the_tool_calls_and_cancels_it(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", PAY_FLOW)
    runs_file = tmp_path / "runs"
    no_retry = {"charge": ToolPolicy(retry=RetryPolicy(maximum_attempts=1))}
    async with socket_dir() as sockets:
        address = f"unix://{sockets}/kit.sock"
        env = {"RUNS_FILE": str(runs_file), "CHARGE_DELAY": "30"}
        async with running([*KIT_APP, address], env=env):
            async with server(flow, dispatcher=address, tool_policies=no_retry) as target:
                async with Client(target) as client:
                    await client.sessions.start("s1")
                # The tool may take 30 s by its own timeout; the caller waits 1.5 s, once
                # (no request ID: the SDK would otherwise resend the step after its deadline).
                async with Client(target, timeout=1.5) as hurried:
                    with contextlib.suppress(TimeoutError):
                        await hurried.sessions.navigate("s1", "me", request_id="")
                await wait_for(lambda: any(r[0] == "cancelled" for r in runs(runs_file)), "the cancel")
    assert [r[0] for r in runs(runs_file)] == ["started", "cancelled"]
    # The call carried the caller's deadline (1.5 s), not the tool's own 30 s.
    assert float(runs(runs_file)[0][4]) < 5


async def test_trellis_dispatcher_serves_an_entry_point_group(tmp_path: Path) -> None:
    # A distribution installed on the path: its entry points name the tool functions.
    site = tmp_path / "site"
    info = site / "shop_tools-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shop-tools\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[shop.tools]\nprice = shop_tools:price\n")
    tool = "def price(item: str) -> dict:\n    return {'item': item, 'eur': 3}\n"
    (site / "shop_tools.py").write_text(tool)
    async with socket_dir() as sockets:
        argv = [*TRELLIS, "dispatcher", "--entry-points", "shop.tools", "--listen", f"unix://{sockets}/e.sock"]
        env = {"PYTHONPATH": f"{ROOT}{os.pathsep}{site}"}
        async with running(argv, env=env) as sidecar:
            code, table = await conformance("dispatcher", sidecar.address)
            flow = write_flow(
                tmp_path / "flow",
                {
                    "start.md": (
                        "---\ndo:\n  name: price\n  args:\n    item: tea\nsave_to: p\nto: done\n---\n"
                    ),
                    "done.md": "---\n---\nTea costs {{ .p.eur }}.\n",
                },
            )
            async with server(flow, sidecars=[sidecar.url]) as target, Client(target) as client:
                step = await client.sessions.start("e1")
    assert code == 0 and "1 tools: price" in table, table
    assert step.terminal and step.state.context["p"] == {"item": "tea", "eur": 3}
