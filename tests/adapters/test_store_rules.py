"""The rules every in-process store applies alike, at their edges: the longest
allowed session ID, the last page of a listing, a negative page size, and which
of the three conflicts a refused save reports."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from trellis.adapters.file_store import FileStore
from trellis.adapters.memory_store import MemoryStore
from trellis.adapters.rules import MAX_SESSION_ID_BYTES, check_session_id
from trellis.domain import State
from trellis.errors import ConflictError, InvalidInput, InvalidSessionId
from trellis.ports.store import StateStore

STORES: dict[str, Callable[[Path], StateStore]] = {
    "memory": lambda tmp: MemoryStore(),
    "file": lambda tmp: FileStore(tmp / "sessions"),
}
stores = pytest.mark.parametrize("make", STORES.values(), ids=STORES.keys())


@stores
async def test_an_id_of_exactly_the_limit_is_stored_and_one_byte_more_is_refused(
    tmp_path: Path, make: Callable[[Path], StateStore]
) -> None:
    store = make(tmp_path)
    assert MAX_SESSION_ID_BYTES == 200
    longest = "é" * 99 + "xx"  # 2-byte characters: the limit counts UTF-8 bytes, not characters
    assert len(longest.encode()) == 200
    await store.save(longest, State.new(longest, "start"))
    assert (await store.load(longest)).session_id == longest
    assert (await store.list()).session_ids == [longest]
    too_long = longest + "x"
    with pytest.raises(InvalidSessionId, match="201 bytes long; the limit is 200 bytes"):
        await store.save(too_long, State.new(too_long, "start"))
    with pytest.raises(InvalidSessionId, match="201 bytes long"):
        await store.load(too_long)
    with pytest.raises(InvalidSessionId, match="201 bytes long"):
        await store.delete(too_long)


@stores
@pytest.mark.parametrize("count", [3, 4])
async def test_a_listing_ends_on_the_page_that_holds_its_last_ids(
    tmp_path: Path, make: Callable[[Path], StateStore], count: int
) -> None:
    store = make(tmp_path)
    ids = [f"s{n}" for n in range(count)]
    for sid in ids:
        await store.save(sid, State.new(sid, "start"))
    first = await store.list(page_size=2)
    assert first.session_ids == ids[:2] and first.next_page_token == "s1"
    last = await store.list(page_size=2, page_token=first.next_page_token)
    # Exactly page_size IDs left: this is the last page, with no token to an empty one.
    assert last.session_ids == ids[2:]
    assert last.next_page_token == ""
    everything = await store.list(page_size=count)
    assert everything.session_ids == ids and everything.next_page_token == ""


@stores
async def test_a_negative_page_size_is_refused_by_the_store(
    tmp_path: Path, make: Callable[[Path], StateStore]
) -> None:
    store = make(tmp_path)
    await store.save("a", State.new("a", "start"))
    with pytest.raises(InvalidInput, match=r"page_size must be 0 \(all\) or positive, got -1"):
        await store.list(page_size=-1)
    assert (await store.list(page_size=0)).session_ids == ["a"]


@stores
async def test_a_refused_save_says_which_conflict_it_was(
    tmp_path: Path, make: Callable[[Path], StateStore]
) -> None:
    store = make(tmp_path)
    revision = await store.save("s", State.new("s", "start"))
    with pytest.raises(ConflictError, match=rf"session 's' already exists \(revision {revision}\)"):
        await store.save("s", State.new("s", "start"), expected_revision=0)
    with pytest.raises(ConflictError, match="session 'ghost' expected at revision 3 but does not exist"):
        await store.save("ghost", State.new("ghost", "start"), expected_revision=3)
    stale = revision + 7
    someone_else = rf"session 's' is at revision {revision}, not {stale}: someone else saved it first"
    with pytest.raises(ConflictError, match=someone_else):
        await store.save("s", State.new("s", "start"), expected_revision=stale)
    # None of them changed what is stored.
    assert (await store.load("s")).revision == revision
    assert (await store.list()).session_ids == ["s"]


def test_a_valid_id_is_returned_as_it_is() -> None:
    assert check_session_id("Ada Lovelace #1") == "Ada Lovelace #1"


async def test_the_memory_store_counts_revisions_one_by_one_across_sessions() -> None:
    store = MemoryStore()
    assert [await store.save(sid, State.new(sid, "start")) for sid in ("a", "b", "a")] == [1, 2, 3]
    await store.delete("a")
    assert await store.save("a", State.new("a", "start")) == 4  # never reused after a delete
