"""The StateStore contract: every store (memory, file, etcd, gRPC client) passes it.

Run it against your store in a few lines::

    from trellis.contracts.store import StateStoreContract

    class TestMyStore(StateStoreContract):
        async def make_store(self, tmp_path):
            return MyStore(...)

        # optional: release what make_store opened
        async def close_store(self, store):
            await store.close()

Stores that check fences themselves (against their own lock service) override
``make_fence`` to return a handle of that lock service.

``max_state_bytes`` (a class attribute) declares the limit of the store
``make_store`` returns: construct it with that limit (at least 4096 bytes).
Every store needs a limit (a caller controls the size of a state), so the
size test fails while it is None.

What the suite holds a store to, beyond the round trip: compare-and-set is
atomic (many concurrent writers of one revision: exactly one wins), revisions
are never reused (not even after a delete), the JSON value rules of
``trellis.adapters.rules`` (64-bit integers, finite floats, exact types),
``list`` in code-point order and pagination that neither repeats nor skips
an ID while sessions are created between pages.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trellis.domain import JSONValue, State, Status
from trellis.errors import (
    ConflictError,
    InvalidInput,
    InvalidSessionId,
    LockLost,
    SessionNotFound,
    StateTooLarge,
)
from trellis.ports.locker import LockHandle
from trellis.ports.store import StateStore

_BOUND = 10.0  # seconds: no single store operation in this suite may take longer

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values: st.SearchStrategy[JSONValue] = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
json_contexts = st.dictionaries(st.text(max_size=12), json_values, max_size=6)


def sample_state(session_id: str, **context: JSONValue) -> State:
    state = State.new(session_id, "start")
    state.context.update(context)
    state.system_context["ans"] = "yes"
    state.history.append("next")
    state.current_node_id = "next"
    return state


def same_type_tree(a: JSONValue, b: JSONValue) -> bool:
    """Equal AND of the same JSON types all the way down (so 42 is not 42.0, True is not 1,
    -0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)  # the shortest repr is exact: it tells -0.0 from 0.0
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_type_tree(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_type_tree(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# Integers and floats at the edges of what a stored state may hold (trellis.adapters.rules).
EDGE_NUMBERS: list[JSONValue] = [
    0,
    -1,
    2**53 + 1,  # not exact as a double: a store must not pass integers through floats
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    0.0,
    -0.0,
    0.1,
    1e16,  # a float with an integral value stays a float
    5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    -1.7976931348623157e308,
]
REFUSED_NUMBERS: list[JSONValue] = [2**64, -(2**63) - 1, 10**30, float("nan"), float("inf"), float("-inf")]

# IDs whose code-point order differs from case-insensitive, locale and UTF-16 order.
CODE_POINT_IDS = ["B", "a", "Z", "aB", "ab", "a b", "a-b", "é", "z", "\uff5e", "\U0001f642", "日本"]

_RACERS = 16
_RACE_ROUNDS = 4


class StateStoreContract:
    """Subclass with a ``Test`` name and implement ``make_store``."""

    # Marked explicitly so the suite also runs under pytest-asyncio's strict mode.
    pytestmark = pytest.mark.asyncio

    max_state_bytes: ClassVar[int | None] = None
    """The encoded-state limit of the store make_store returns (see the module docstring)."""

    async def make_store(self, tmp_path: Path) -> StateStore:
        raise NotImplementedError("override make_store to return the store under test")

    async def close_store(self, store: StateStore) -> None:
        """Release what make_store opened (default: nothing)."""

    async def make_fence(self, store: StateStore, key: str) -> LockHandle:
        """A held lock of the lock service the store fences against (default: LocalLocker)."""
        from trellis.adapters.local_locker import LocalLocker

        return await LocalLocker().acquire(key, ttl=60.0)

    @pytest_asyncio.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[StateStore]:
        made = await self.make_store(tmp_path)
        try:
            yield made
        finally:
            await self.close_store(made)

    # --- round trip and isolation ------------------------------------------------------

    async def test_save_then_load_returns_the_same_state(self, store: StateStore) -> None:
        state = sample_state("s-roundtrip", name="Ada", age=36, score=9.5, tags=["a", "b"], none=None)
        state.locale = "pt-BR"
        state.status = Status.WAITING_FOR_TOOL
        state.pending_tool_call = "call-1"
        async with asyncio.timeout(_BOUND):
            revision = await store.save("s-roundtrip", state)
            loaded = await store.load("s-roundtrip")
        assert revision > 0
        assert loaded.revision == revision
        assert loaded.to_json() == state.to_json()
        assert same_type_tree(loaded.to_json(), state.to_json())

    async def test_terminated_state_round_trips(self, store: StateStore) -> None:
        state = sample_state("s-done")
        state.status = Status.TERMINATED
        state.terminated = True
        async with asyncio.timeout(_BOUND):
            await store.save("s-done", state)
            loaded = await store.load("s-done")
        assert loaded.status is Status.TERMINATED and loaded.terminated

    async def test_changing_a_saved_state_afterwards_does_not_change_the_store(
        self, store: StateStore
    ) -> None:
        state = sample_state("s-iso", profile={"name": "Ada", "langs": ["en"]})
        async with asyncio.timeout(_BOUND):
            await store.save("s-iso", state)
            state.context["profile"]["langs"].append("fr")
            state.context["profile"]["name"] = "Bob"
            state.history.append("elsewhere")
            loaded = await store.load("s-iso")
        assert loaded.context["profile"] == {"name": "Ada", "langs": ["en"]}
        assert loaded.history == ["start", "next"]

    async def test_changing_a_loaded_state_does_not_change_the_store(self, store: StateStore) -> None:
        async with asyncio.timeout(_BOUND):
            await store.save("s-iso2", sample_state("s-iso2", profile={"langs": ["en"]}))
            first = await store.load("s-iso2")
            first.context["profile"]["langs"].append("fr")
            first.system_context["ans"] = "changed"
            first.history.clear()
            second = await store.load("s-iso2")
        assert second.context["profile"] == {"langs": ["en"]}
        assert second.system_context["ans"] == "yes"
        assert second.history == ["start", "next"]

    # --- missing sessions, delete, list ------------------------------------------------

    async def test_loading_a_missing_session_raises_session_not_found(self, store: StateStore) -> None:
        async with asyncio.timeout(_BOUND):
            with pytest.raises(SessionNotFound) as caught:
                await store.load("s-never-saved")
        assert caught.value.session_id == "s-never-saved"

    async def test_delete_removes_and_is_idempotent(self, store: StateStore) -> None:
        async with asyncio.timeout(_BOUND):
            await store.save("s-del", sample_state("s-del"))
            await store.delete("s-del")
            await store.delete("s-del")
            await store.delete("s-never-existed")
            with pytest.raises(SessionNotFound):
                await store.load("s-del")
            page = await store.list()
        assert "s-del" not in page.session_ids

    async def test_list_returns_sorted_ids_in_pages(self, store: StateStore) -> None:
        ids = [f"s-list-{n:02d}" for n in range(7)]
        shuffled = ids[:]
        random.Random(7).shuffle(shuffled)
        async with asyncio.timeout(_BOUND):
            for session_id in shuffled:
                await store.save(session_id, sample_state(session_id))
            everything = await store.list()
            assert everything.session_ids == ids
            assert everything.next_page_token == ""
            pages: list[list[str]] = []
            token = ""
            for _ in range(len(ids) + 1):  # bounded: a broken token must not loop forever
                page = await store.list(page_size=3, page_token=token)
                pages.append(page.session_ids)
                token = page.next_page_token
                if not token:
                    break
        assert pages == [ids[0:3], ids[3:6], ids[6:7]]

    async def test_list_of_an_empty_store_is_empty(self, store: StateStore) -> None:
        async with asyncio.timeout(_BOUND):
            page = await store.list()
        assert page.session_ids == [] and page.next_page_token == ""

    # --- revisions and conditional writes ----------------------------------------------

    async def test_revisions_increase_with_every_save(self, store: StateStore) -> None:
        revisions = []
        async with asyncio.timeout(_BOUND):
            for n in range(4):
                revisions.append(await store.save("s-rev", sample_state("s-rev", n=n)))
            loaded = await store.load("s-rev")
        assert revisions == sorted(set(revisions)) and revisions[0] > 0
        assert loaded.revision == revisions[-1]
        assert loaded.context["n"] == 3

    async def test_expected_revision_must_match(self, store: StateStore) -> None:
        async with asyncio.timeout(_BOUND):
            first = await store.save("s-cas", sample_state("s-cas", v=1), expected_revision=0)
            second = await store.save("s-cas", sample_state("s-cas", v=2), expected_revision=first)
            with pytest.raises(ConflictError):
                await store.save("s-cas", sample_state("s-cas", v=3), expected_revision=first)
            with pytest.raises(ConflictError):
                await store.save("s-cas", sample_state("s-cas", v=4), expected_revision=0)
            loaded = await store.load("s-cas")
        assert second > first
        assert loaded.revision == second and loaded.context["v"] == 2

    async def test_expected_revision_of_a_missing_session_conflicts(self, store: StateStore) -> None:
        async with asyncio.timeout(_BOUND):
            with pytest.raises(ConflictError):
                await store.save("s-cas-missing", sample_state("s-cas-missing"), expected_revision=5)
            with pytest.raises(SessionNotFound):
                await store.load("s-cas-missing")

    async def test_a_save_fenced_by_a_lost_lock_is_refused(self, store: StateStore) -> None:
        async with asyncio.timeout(_BOUND):
            fence = await self.make_fence(store, "s-fence")
            held_revision = await store.save("s-fence", sample_state("s-fence", v=1), fence=fence)
            await fence.unlock()
            with pytest.raises(LockLost):
                await store.save("s-fence", sample_state("s-fence", v=2), fence=fence)
            loaded = await store.load("s-fence")
        assert loaded.revision == held_revision and loaded.context["v"] == 1

    async def test_concurrent_compare_and_set_has_exactly_one_winner(self, store: StateStore) -> None:
        """Many tasks save against the same revision at once: one wins, every other one
        gets ConflictError, and the stored state is the winner's (the compare and the
        write are one atomic step)."""

        async def race(session_id: str, expected: int) -> tuple[int, int]:
            results = await asyncio.gather(
                *(
                    store.save(session_id, sample_state(session_id, writer=n), expected_revision=expected)
                    for n in range(_RACERS)
                ),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException) and not isinstance(result, ConflictError):
                    raise result
            winners = [(n, r) for n, r in enumerate(results) if isinstance(r, int)]
            assert len(winners) == 1, (
                f"{len(winners)} of {_RACERS} concurrent saves with expected_revision={expected} "
                f"succeeded; exactly one may"
            )
            return winners[0]

        async with asyncio.timeout(_BOUND * 3):
            expected = 0  # the first round races to create the session
            for _ in range(_RACE_ROUNDS):
                writer, revision = await race("s-race", expected)
                loaded = await store.load("s-race")
                assert (loaded.revision, loaded.context["writer"]) == (revision, writer)
                assert revision > expected
                expected = revision

    async def test_revisions_are_never_reused_even_after_a_delete(self, store: StateStore) -> None:
        """A writer still holding a revision from before a delete must never match the
        re-created session: revisions keep increasing across delete and create."""
        async with asyncio.timeout(_BOUND):
            earlier = [await store.save("s-reuse", sample_state("s-reuse", n=n)) for n in range(3)]
            await store.delete("s-reuse")
            created = await store.save("s-reuse", sample_state("s-reuse", n=10), expected_revision=0)
            later = [created] + [await store.save("s-reuse", sample_state("s-reuse", n=n)) for n in (11, 12)]
            assert min(later) > max(earlier), f"revisions {later} after the delete reuse {earlier}"
            for stale in earlier:
                with pytest.raises(ConflictError):
                    await store.save("s-reuse", sample_state("s-reuse", n=-1), expected_revision=stale)
            loaded = await store.load("s-reuse")
        assert (loaded.revision, loaded.context["n"]) == (later[-1], 12)

    # --- limits and value rules --------------------------------------------------------

    async def test_a_state_over_the_size_limit_is_refused(self, store: StateStore) -> None:
        limit = self.max_state_bytes
        assert limit is not None, (
            "set max_state_bytes on the contract class to the limit the store of make_store enforces"
        )
        assert limit >= 4096, "max_state_bytes must be at least 4096 for this suite"
        async with asyncio.timeout(_BOUND):
            kept = await store.save("s-big", sample_state("s-big", blob="x" * (limit // 4)))
            with pytest.raises(StateTooLarge):
                await store.save("s-big", sample_state("s-big", blob="y" * (limit + 1024)))
            with pytest.raises(StateTooLarge):
                await store.save("s-big-new", sample_state("s-big-new", blob="é" * limit))
            loaded = await store.load("s-big")
            with pytest.raises(SessionNotFound):
                await store.load("s-big-new")
        assert loaded.revision == kept and loaded.context["blob"] == "x" * (limit // 4)

    @pytest.mark.parametrize("value", EDGE_NUMBERS, ids=repr)
    async def test_edge_numbers_round_trip_exactly(self, store: StateStore, value: JSONValue) -> None:
        state = sample_state("s-edge", value=value, nested={"list": [value]})
        async with asyncio.timeout(_BOUND):
            await store.save("s-edge", state)
            loaded = await store.load("s-edge")
        assert same_type_tree(loaded.context, state.context), (loaded.context, state.context)

    @pytest.mark.parametrize("value", REFUSED_NUMBERS, ids=repr)
    async def test_numbers_json_cannot_hold_are_refused(self, store: StateStore, value: JSONValue) -> None:
        async with asyncio.timeout(_BOUND):
            kept = await store.save("s-nan", sample_state("s-nan", value=1))
            with pytest.raises(InvalidInput):
                await store.save("s-nan", sample_state("s-nan", value=value))
            with pytest.raises(InvalidInput):
                await store.save("s-nan-new", sample_state("s-nan-new", deep={"list": [value]}))
            loaded = await store.load("s-nan")
            with pytest.raises(SessionNotFound):
                await store.load("s-nan-new")
        assert (loaded.revision, loaded.context["value"]) == (kept, 1)

    # --- list order and pagination ------------------------------------------------------

    async def test_list_orders_ids_by_code_point(self, store: StateStore) -> None:
        shuffled = CODE_POINT_IDS[:]
        random.Random(3).shuffle(shuffled)
        expected = sorted(CODE_POINT_IDS)  # Python compares str by code point
        async with asyncio.timeout(_BOUND):
            for session_id in shuffled:
                await store.save(session_id, sample_state(session_id))
            everything = await store.list()
            paged: list[str] = []
            token = ""
            for _ in range(len(expected) + 1):
                page = await store.list(page_size=2, page_token=token)
                paged.extend(page.session_ids)
                token = page.next_page_token
                if not token:
                    break
        assert everything.session_ids == expected
        assert paged == expected

    async def test_pagination_neither_repeats_nor_skips_while_sessions_are_created(
        self, store: StateStore
    ) -> None:
        """Sessions created between pages (before and after the page token) must not make
        a page repeat an ID or skip one that existed all along."""
        existing = [f"s-page-{n:03d}" for n in range(10, 70, 4)]
        async with asyncio.timeout(_BOUND * 3):
            for session_id in existing:
                await store.save(session_id, sample_state(session_id))
            seen: list[str] = []
            token = ""
            for step in range(len(existing) + 2):
                page = await store.list(page_size=3, page_token=token)
                seen.extend(page.session_ids)
                token = page.next_page_token
                if not token:
                    break
                # One new session sorts before the token, one just after it.
                for new in (f"s-page-{step:03d}+", f"{token}+"):
                    await store.save(new, sample_state(new))
        assert seen == sorted(set(seen)), f"pages repeated or reordered IDs: {seen}"
        assert not set(existing) - set(seen), f"pages skipped {sorted(set(existing) - set(seen))}"

    # --- bad input ---------------------------------------------------------------------

    @pytest.mark.parametrize(
        "bad_id", ["", "..", "../escape", "a/b", "a\\b", "nul\0byte", ".hidden", "x" * 201]
    )
    async def test_unsafe_session_ids_are_refused(self, store: StateStore, bad_id: str) -> None:
        async with asyncio.timeout(_BOUND):
            with pytest.raises(InvalidSessionId):
                await store.save(bad_id, sample_state(bad_id or "x"))
            with pytest.raises(InvalidSessionId):
                await store.load(bad_id)
            with pytest.raises(InvalidSessionId):
                await store.delete(bad_id)
            page = await store.list()
        assert page.session_ids == []

    async def test_unicode_session_ids_work(self, store: StateStore) -> None:
        session_id = "sessão-日本-🙂 with space:colon"
        async with asyncio.timeout(_BOUND):
            await store.save(session_id, sample_state(session_id))
            loaded = await store.load(session_id)
            page = await store.list()
        assert loaded.session_id == session_id
        assert page.session_ids == [session_id]

    # --- property ----------------------------------------------------------------------

    # Each subclass runs this method with its own store: "differing executors" is intended.
    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors],
    )
    @given(context=json_contexts)
    async def test_any_json_context_round_trips_exactly(
        self, store: StateStore, context: dict[str, JSONValue]
    ) -> None:
        state = State.new("s-prop", "start")
        state.context = context
        state.system_context = {"ans": context}
        async with asyncio.timeout(_BOUND):
            await store.save("s-prop", state)
            loaded = await store.load("s-prop")
        assert same_type_tree(loaded.context, context)
        assert same_type_tree(loaded.system_context, {"ans": context})
