"""Encryption at rest: the store contract through the wrapper (memory and file stores),
nothing readable on disk, key rotation, and envelopes bound to their session."""

from __future__ import annotations

from pathlib import Path

import pytest

from trellis.adapters.encrypting_store import ENVELOPE_KEY, KeyRing, encrypting, new_key_line
from trellis.adapters.file_store import FileStore
from trellis.adapters.memory_store import MemoryStore
from trellis.contracts.store import StateStoreContract, sample_state
from trellis.errors import ConfigError
from trellis.ports.store import StateStore

RING = KeyRing.from_text(new_key_line("k1"), "test keys")


class TestEncryptedMemoryStoreContract(StateStoreContract):
    max_state_bytes = 64 * 1024  # the inner store's limit, on the encrypted form

    async def make_store(self, tmp_path: Path) -> StateStore:
        return encrypting(MemoryStore(max_state_bytes=self.max_state_bytes), RING)


class TestEncryptedFileStoreContract(StateStoreContract):
    max_state_bytes = 64 * 1024

    async def make_store(self, tmp_path: Path) -> StateStore:
        return encrypting(FileStore(tmp_path / "sessions", max_state_bytes=self.max_state_bytes), RING)


async def test_nothing_of_the_context_is_readable_on_disk(tmp_path: Path) -> None:
    store = encrypting(FileStore(tmp_path / "sessions"), RING)
    await store.save("s", sample_state("s", card="4111-1111-1111-1111"))
    raw = b"".join(p.read_bytes() for p in (tmp_path / "sessions").rglob("*") if p.is_file())
    assert b"4111" not in raw and ENVELOPE_KEY.encode() in raw
    assert (await store.load("s")).context["card"] == "4111-1111-1111-1111"


async def test_rotation_reads_old_keys_and_writes_with_the_active_one(tmp_path: Path) -> None:
    old_line, new_line = new_key_line("old"), new_key_line("new")
    inner = FileStore(tmp_path / "sessions")
    await encrypting(inner, KeyRing.from_text(old_line, "v1")).save("s", sample_state("s", n=1))

    rotated = encrypting(inner, KeyRing.from_text(f"{new_line}\n{old_line}\n", "v2"))
    state = await rotated.load("s")  # sealed with the old key: opens with the fallback
    assert state.context["n"] == 1
    await rotated.save("s", state, expected_revision=state.revision)
    assert (await inner.load("s")).context[ENVELOPE_KEY]["kid"] == "new"  # type: ignore[index]

    # Once every session is re-sealed, the old key can go.
    only_new = encrypting(inner, KeyRing.from_text(new_line, "v3"))
    assert (await only_new.load("s")).context["n"] == 1
    with pytest.raises(ConfigError, match="sealed with key 'new', which is not in the key file"):
        await encrypting(inner, KeyRing.from_text(old_line, "v1")).load("s")


async def test_an_envelope_does_not_open_in_another_session() -> None:
    inner = MemoryStore()
    store = encrypting(inner, RING)
    await store.save("a", sample_state("a", secret="x"))
    copied = await inner.load("a")
    copied.session_id = "b"
    await inner.save("b", copied)
    with pytest.raises(ConfigError, match="does not open"):
        await store.load("b")


def test_bad_key_files_are_named() -> None:
    with pytest.raises(ConfigError, match="keys:1: key 'k' is 3 bytes; AES-256 needs 32"):
        KeyRing.from_text("k:YWJj\n", "keys")
    with pytest.raises(ConfigError, match="keys: no key"):
        KeyRing.from_text("# nothing\n", "keys")


async def test_a_server_with_a_key_file_seals_what_it_stores(tmp_path: Path) -> None:
    import grpc

    from tests.support.cli import write_flow
    from tests.support.servers import flow_server
    from trellis.api.v1 import sessions_pb2 as spb
    from trellis.api.v1 import sessions_pb2_grpc

    keys = tmp_path / "store.keys"
    keys.write_text(f"# active key first\n{new_key_line('k2')}\n{new_key_line('k1')}\n")
    flow = write_flow(tmp_path / "flow", {"start.md": "---\ntype: question\n---\nHi {{ .name }}\n"})
    sessions_dir = tmp_path / "sessions"
    async with flow_server(flow, store=f"file:{sessions_dir}", store_keys_file=str(keys)) as server:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = sessions_pb2_grpc.SessionsStub(channel)
            started = await stub.Start(
                spb.SessionsStartRequest(session_id="s", context_json='{"name": "Zelda"}')
            )
            assert "Zelda" in started.step.state.context_json
            got = await stub.Get(spb.SessionsGetRequest(session_id="s"))
            assert "Zelda" in got.step.state.context_json  # clients see the plain state
    raw = b"".join(p.read_bytes() for p in sessions_dir.rglob("*") if p.is_file())
    assert raw and b"Zelda" not in raw and b'"kid":"k2"' in raw.replace(b" ", b"")
