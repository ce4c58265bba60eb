"""PII masking: the store contract through the wrapper (memory and file stores; etcd and
remote stores in tests/etcd and tests/grpc_clients), what is masked and where, and the
server setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trellis.adapters.encrypting_store import ENVELOPE_KEY, KeyRing, encrypting, new_key_line
from trellis.adapters.file_store import FileStore
from trellis.adapters.masking_store import MASK, MaskingRules, masking
from trellis.adapters.memory_store import MemoryStore
from trellis.contracts.store import StateStoreContract, sample_state
from trellis.errors import ConfigError
from trellis.ports.store import StateStore
from trellis.server.config import load_config

# A key longer than any the contract generates (12 characters): its contexts round-trip unchanged.
CONTRACT_RULES = MaskingRules.from_config({"keys": ["^contract-suite-secret$"]}, "test")
RULES = MaskingRules.from_config(
    {"keys": ["(?i)password", "^card"], "values": [r"[\w.+-]+@[\w-]+\.[\w.]+"]}, "test"
)


class TestMaskedMemoryStoreContract(StateStoreContract):
    max_state_bytes = 64 * 1024  # the inner store's limit

    async def make_store(self, tmp_path: Path) -> StateStore:
        return masking(MemoryStore(max_state_bytes=self.max_state_bytes), CONTRACT_RULES)


class TestMaskedFileStoreContract(StateStoreContract):
    max_state_bytes = 64 * 1024

    async def make_store(self, tmp_path: Path) -> StateStore:
        return masking(FileStore(tmp_path / "sessions", max_state_bytes=self.max_state_bytes), CONTRACT_RULES)


async def test_matching_keys_are_masked_at_any_depth_in_both_contexts(tmp_path: Path) -> None:
    store = masking(FileStore(tmp_path / "sessions"), RULES)
    state = sample_state(
        "s",
        name="Ada",
        Password="hunter2",
        profile={"card": {"number": "4111"}, "items": [{"card_no": "5500"}], "city": "Lisbon"},
    )
    state.system_context["ans"] = "hunter2"  # the engine keeps the last answer here
    state.system_context["vault"] = {"password": "s3cret"}
    await store.save("s", state)

    loaded = await store.load("s")
    assert loaded.context["name"] == "Ada"
    assert loaded.context["Password"] == MASK
    assert loaded.context["profile"] == {"card": MASK, "items": [{"card_no": MASK}], "city": "Lisbon"}
    assert loaded.system_context == {"ans": MASK, "vault": {"password": MASK}}
    raw = b"".join(p.read_bytes() for p in (tmp_path / "sessions").rglob("*") if p.is_file())
    for secret in (b"hunter2", b"4111", b"5500", b"s3cret"):
        assert secret not in raw
    # The caller's state is untouched: the flow goes on with what it collected.
    assert state.context["Password"] == "hunter2" and state.system_context["ans"] == "hunter2"
    assert state.context["profile"]["items"] == [{"card_no": "5500"}]


async def test_value_patterns_mask_the_matching_part_of_any_string() -> None:
    store = masking(MemoryStore(), RULES)
    state = sample_state("s", note="write to ada@example.org or call", history=["bob@mail.example.com"])
    await store.save("s", state)
    loaded = await store.load("s")
    assert loaded.context["note"] == f"write to {MASK} or call"
    assert loaded.context["history"] == [MASK]


async def test_masking_then_encryption_seals_the_masked_state() -> None:
    inner = MemoryStore()
    store = masking(encrypting(inner, KeyRing.from_text(new_key_line("k"), "keys")), RULES)
    await store.save("s", sample_state("s", password="hunter2", name="Ada"))
    assert set((await inner.load("s")).context) == {ENVELOPE_KEY}
    loaded = await store.load("s")
    assert (loaded.context["password"], loaded.context["name"]) == (MASK, "Ada")


async def test_a_step_store_keeps_its_step_and_masks_it(tmp_path: Path) -> None:
    from trellis.adapters.local_locker import LocalLocker
    from trellis.locked_store import step_store_for
    from trellis.ports.store import StepStore

    inner = MemoryStore()
    step_store = step_store_for(masking(inner, RULES), LocalLocker())
    assert isinstance(step_store, StepStore)
    handle, _ = await step_store.lock_and_load("s", 5.0)
    await step_store.save_and_unlock(handle, "s", sample_state("s", password="x1"))
    assert (await inner.load("s")).context["password"] == MASK


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"keys": ["("]}, r"store_masking\.keys\[0\]: '\(' is not a regular expression"),
        ({"keys": [""]}, r"keys\[0\]: an empty pattern would match everything"),
        ({"keys": "password"}, r"keys: must be a list of regular expressions"),
        ({"fields": ["x"]}, r"unknown keys \['fields'\]"),
        ({}, r"no pattern given"),
        (["password"], r"must be a mapping"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, section: object, message: str) -> None:
    path = tmp_path / "trellis.yaml"
    path.write_text(json.dumps({"store_masking": section}))
    with pytest.raises(ConfigError, match=message):
        load_config(file=str(path), environ={})


def test_the_environment_gives_the_section_as_yaml() -> None:
    config = load_config(environ={"TRELLIS_STORE_MASKING": "{keys: [password], values: ['\\d{16}']}"})
    assert config.store_masking == {"keys": ["password"], "values": ["\\d{16}"]}


async def test_a_server_with_masking_stores_masked_states(tmp_path: Path) -> None:
    import grpc

    from tests.support.cli import write_flow
    from tests.support.servers import flow_server
    from trellis.api.v1 import sessions_pb2 as spb
    from trellis.api.v1 import sessions_pb2_grpc
    from trellis.api.v1 import types_pb2 as pb

    flow = write_flow(
        tmp_path / "flow",
        {
            "start.md": "---\nwait: true\nsave_to: password\nto: next\n---\nYour password?\n",
            "next.md": "---\nwait: true\n---\nThanks\n",
        },
    )
    sessions_dir = tmp_path / "sessions"
    masked = {"keys": ["password"]}
    async with flow_server(flow, store=f"file:{sessions_dir}", store_masking=masked) as server:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = sessions_pb2_grpc.SessionsStub(channel)
            await stub.Start(spb.SessionsStartRequest(session_id="s"))
            answer = spb.SessionsNavigateRequest(session_id="s", input=pb.Input(text="hunter2"))
            step = await stub.Navigate(answer)
            assert step.step.state.current_node_id == "next"
            got = await stub.Get(spb.SessionsGetRequest(session_id="s"))
    assert json.loads(got.step.state.context_json)["password"] == MASK
    assert "hunter2" not in got.step.state.system_context_json
    raw = b"".join(p.read_bytes() for p in sessions_dir.rglob("*") if p.is_file())
    assert raw and b"hunter2" not in raw
