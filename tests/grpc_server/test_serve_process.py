"""`trellis serve` as a real process: embedded default, step logs, metrics over HTTP,
and a graceful SIGTERM that lets the in-flight step finish."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import urllib.request
from pathlib import Path

import grpc
import orjson

from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import sessions_pb2_grpc
from trellis.api.v1 import types_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]


async def _serve(
    flow: Path, env: dict[str, str], grace: str = "20s"
) -> tuple[asyncio.subprocess.Process, int, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "trellis.cli.main",
        "serve",
        str(flow),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--shutdown-grace",
        grace,
        cwd=ROOT,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    async with asyncio.timeout(60):
        while True:
            line = (await proc.stderr.readline()).decode()
            assert line, "server exited before serving"
            found = re.search(r"serving on 127\.0\.0\.1:(\d+) \(metrics on 127\.0\.0\.1:(\d+)\)", line)
            if found:
                return proc, int(found.group(1)), int(found.group(2))


async def test_sigterm_finishes_the_in_flight_step_then_exits_cleanly(flow: Path, tmp_path: Path) -> None:
    marker = tmp_path / "tool-started"
    env = dict(os.environ, SHOUT_MARKER=str(marker), SHOUT_SLEEP="1.5")
    proc, port, metrics_port = await _serve(flow, env)
    assert proc.stderr is not None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            sessions = sessions_pb2_grpc.SessionsStub(channel)
            await sessions.Start(spb.SessionsStartRequest(session_id="g"))
            in_flight = asyncio.ensure_future(
                sessions.Navigate(spb.SessionsNavigateRequest(session_id="g", input=pb.Input(text="ada")))
            )
            for _ in range(600):  # until the tool of that step is running (bounded)
                if marker.exists():
                    break
                await asyncio.sleep(0.01)
            assert marker.exists()

            metrics = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
            )
            assert b'trellis_steps_total{method="Start",outcome="ok",service="Sessions"} 1.0' in metrics
            assert b"trellis_lock_wait_seconds_count" in metrics

            proc.send_signal(signal.SIGTERM)
            step = (await in_flight).step  # finished despite the SIGTERM
            assert step.state.current_node_id == "lookup"
            assert orjson.loads(step.state.context_json)["shouted"] == "ADA"
        async with asyncio.timeout(30):
            code = await proc.wait()
        assert code == 0
        log = (await proc.stderr.read()).decode()
        step_lines = [
            orjson.loads(line[line.index("{") :]) for line in log.splitlines() if '"event":"step"' in line
        ]
        navigate = [s for s in step_lines if s["rpc"] == "Sessions.Navigate"]
        assert navigate and navigate[0]["session"] == "g" and navigate[0]["outcome"] == "ok"
        assert navigate[0]["node"] == "lookup" and navigate[0]["duration_ms"] > 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_serve_refuses_a_bad_configuration_with_a_clear_message(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "trellis.cli.main",
        "serve",
        str(tmp_path / "missing"),
        "--listen",
        "127.0.0.1:0",
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    assert proc.returncode != 0
    text = err.decode()
    assert "Error:" in text and "missing" in text and "Traceback" not in text


async def test_a_second_sigterm_stops_without_waiting_for_the_grace_period(
    flow: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "tool-started"
    env = dict(os.environ, SHOUT_MARKER=str(marker), SHOUT_SLEEP="3600")
    proc, port, _ = await _serve(flow, env, grace="1h")
    assert proc.stderr is not None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            sessions = sessions_pb2_grpc.SessionsStub(channel)
            await sessions.Start(spb.SessionsStartRequest(session_id="h"))
            request = spb.SessionsNavigateRequest(session_id="h", input=pb.Input(text="x"))
            in_flight = asyncio.ensure_future(sessions.Navigate(request))
            for _ in range(600):  # until the (hour-long) tool of that step runs (bounded)
                if marker.exists():
                    break
                await asyncio.sleep(0.01)
            assert marker.exists()
            proc.send_signal(signal.SIGTERM)  # graceful: would wait up to an hour
            for _ in range(100):  # until the server has begun shutting down (bounded)
                line = (await proc.stderr.readline()).decode()
                if "shutting down" in line:
                    break
            proc.send_signal(signal.SIGTERM)  # second: stop now
            async with asyncio.timeout(60):  # a safety bound, far below the grace period
                code = await proc.wait()
                try:
                    await in_flight
                    raise AssertionError("the in-flight step should have been cancelled")
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
        assert code == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
