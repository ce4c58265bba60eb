"""The Node.js client retries a step whose reply was lost, with the same request ID,
and the server applies it once. A real server (in process, memory store) reached
through a TCP proxy that holds the reply back and then breaks the connection; the
Node client is a real ``node`` process driving clients/node/trellis.js."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.support import node
from tests.support.servers import ROOT, serving
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually
from trellis.adapters.memory_loader import MemoryLoader
from trellis.adapters.memory_store import MemoryStore

NODE_DIR = ROOT / "clients" / "node"

FLOW = [
    {"id": "start", "content": "first?", "wait": True, "save_to": "first", "to": "second"},
    {"id": "second", "content": "second?", "wait": True, "save_to": "second", "to": "end"},
    {"id": "end", "content": "bye", "wait": True},
]

# Starts the session, waits for "go" on stdin, then navigates (the SDK retries on its
# own) and tries a step on a stale revision; prints what it got as JSON lines.
SCRIPT = """
const readline = require('readline');
const { TrellisClient, context } = require(process.argv[2]);
const client = new TrellisClient(process.argv[3], { deadlineMs: 20000, backoffMs: 20, backoffCapMs: 200 });
const lines = readline.createInterface({ input: process.stdin });
const next = () => new Promise((resolve) => lines.once('line', resolve));
(async () => {
  const started = await client.sessions.start('s', {}, { requestId: 'start-1' });
  console.log(JSON.stringify({ created: started.created, revision: started.state.revision }));
  await next();
  const step = await client.sessions.navigate('s', 'once');
  const { replayed, state } = step;
  console.log(JSON.stringify({ replayed, history: state.history, context: context(step) }));
  try {
    await client.sessions.signal('s', 'interrupt', { expectedRevision: started.state.revision });
    console.log(JSON.stringify({ stale: 'applied' }));
  } catch (err) {
    console.log(JSON.stringify({ stale: err.codeName, details: err.details }));
  }
  client.close();
  lines.close();
})().catch((err) => { console.error(err); process.exit(1); });
"""


@pytest.fixture(scope="module")
def node_modules() -> Path:
    return node.node_modules(NODE_DIR, "google-proto-files")


async def test_the_node_client_retries_a_lost_reply_and_the_step_is_applied_once(
    node_modules: Path, tmp_path: Path
) -> None:
    store = MemoryStore()
    script = tmp_path / "retry.js"
    script.write_text(SCRIPT, encoding="utf-8")
    async with serving(loader=MemoryLoader(FLOW), store=store) as served:
        proxy = TcpProxy("127.0.0.1", served.server.port)
        await proxy.start()
        process = await asyncio.create_subprocess_exec(
            "node",
            str(script),
            str(NODE_DIR / "trellis.js"),
            proxy.endpoint,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            async with asyncio.timeout(120):
                started = json.loads(await process.stdout.readline())
                assert started["created"] is True
                proxy.hold()
                process.stdin.write(b"go\n")
                await process.stdin.drain()
                # The step is stored and its reply is in the proxy; then the connection breaks.
                before = int(started["revision"])  # int64 arrives as text
                await eventually(lambda: _moved(store, before), "the step was stored", within=60)
                await eventually(lambda: proxy.held_bytes > 0, "the reply reached the proxy", within=60)
                proxy.drop_held()
                stepped = json.loads(await process.stdout.readline())
                stale = json.loads(await process.stdout.readline())
                _out, err = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await proxy.cut()
    assert process.returncode == 0, err.decode()
    assert stepped == {"replayed": True, "history": ["start", "second"], "context": {"first": "once"}}
    assert stale["stale"] == "ABORTED" and "not the expected" in stale["details"]
    stored = await store.load("s")
    assert stored.history == ["start", "second"] and stored.context == {"first": "once"}


async def _moved(store: MemoryStore, revision: int) -> bool:
    return (await store.load("s")).revision > revision
