"""Broken StateStores: each is MemoryStore with one mistake an author could make."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from trellis.adapters.memory_store import MemoryStore
from trellis.adapters.rules import check_expected_revision
from trellis.contracts.store import StateStoreContract
from trellis.domain import State
from trellis.ports.store import SessionPage, StateStore

LIMIT = 64 * 1024


class AwaitBetweenCompareAndWrite(MemoryStore):
    async def save(self, session_id: str, state: State, **kwargs: Any) -> int:
        stored = self._sessions.get(session_id)
        check_expected_revision(session_id, stored[0] if stored else 0, kwargs.get("expected_revision"))
        await asyncio.sleep(0)  # the mistake: other writers compare against the same revision meanwhile
        return await super().save(session_id, state, fence=kwargs.get("fence"))


class CountsRevisionsPerSession(MemoryStore):
    async def save(self, session_id: str, state: State, **kwargs: Any) -> int:
        stored = self._sessions.get(session_id)
        self._last_revision = stored[0] if stored else 0  # the mistake: a new session starts at 1 again
        return await super().save(session_id, state, **kwargs)


class StdlibJson(MemoryStore):
    """Keeps the contexts as stdlib JSON, which takes 2**64 and NaN without complaint."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._contexts: dict[str, str] = {}

    async def save(self, session_id: str, state: State, **kwargs: Any) -> int:
        contexts = json.dumps([state.context, state.system_context])
        bare = state.clone()
        bare.context, bare.system_context = {}, {}
        revision = await super().save(session_id, bare, **kwargs)
        self._contexts[session_id] = contexts
        return revision

    async def load(self, session_id: str) -> State:
        state = await super().load(session_id)
        state.context, state.system_context = json.loads(self._contexts[session_id])
        return state


class SortsCaseInsensitively(MemoryStore):
    async def list(self, page_size: int = 0, page_token: str = "") -> SessionPage:
        ordered = sorted(self._sessions, key=str.casefold)  # the mistake: not code-point order
        start = ordered.index(page_token) + 1 if page_token in ordered else 0
        page = ordered[start : start + page_size] if page_size else ordered[start:]
        more = page_size and start + page_size < len(ordered)
        return SessionPage(page, page[-1] if more else "")


class OffsetPageTokens(MemoryStore):
    async def list(self, page_size: int = 0, page_token: str = "") -> SessionPage:
        ordered = sorted(self._sessions)
        start = int(page_token or 0)  # the mistake: a position shifts when sessions are created
        end = start + page_size if page_size else len(ordered)
        return SessionPage(ordered[start:end], str(end) if end < len(ordered) else "")


class _Contract(StateStoreContract):
    max_state_bytes = LIMIT
    store_class: type[MemoryStore] = MemoryStore
    limit: int | None = LIMIT

    async def make_store(self, tmp_path: Path) -> StateStore:
        return self.store_class(max_state_bytes=self.limit)


class TestBaseline(_Contract):
    pass


class TestAwaitBetweenCompareAndWrite(_Contract):
    store_class = AwaitBetweenCompareAndWrite


class TestIgnoresTheSizeLimit(_Contract):
    limit = None  # the mistake: the store is built without the limit it declares


class TestCountsRevisionsPerSession(_Contract):
    store_class = CountsRevisionsPerSession


class TestStdlibJson(_Contract):
    store_class = StdlibJson


class TestSortsCaseInsensitively(_Contract):
    store_class = SortsCaseInsensitively


class TestOffsetPageTokens(_Contract):
    store_class = OffsetPageTokens


CAUGHT_BY = {
    "TestAwaitBetweenCompareAndWrite": ["test_concurrent_compare_and_set_has_exactly_one_winner"],
    "TestIgnoresTheSizeLimit": ["test_a_state_over_the_size_limit_is_refused"],
    "TestCountsRevisionsPerSession": ["test_revisions_are_never_reused_even_after_a_delete"],
    "TestStdlibJson": [
        "test_numbers_json_cannot_hold_are_refused[18446744073709551616]",
        "test_numbers_json_cannot_hold_are_refused[nan]",
        "test_numbers_json_cannot_hold_are_refused[inf]",
    ],
    "TestSortsCaseInsensitively": ["test_list_orders_ids_by_code_point"],
    "TestOffsetPageTokens": ["test_pagination_neither_repeats_nor_skips_while_sessions_are_created"],
}
