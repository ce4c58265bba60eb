"""FileStore beyond the contract: the file format, hostile IDs, leftovers and damaged files."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

import pytest

from trellis.adapters.file_store import LEFTOVER_AGE, FileStore
from trellis.adapters.local_locker import LocalLocker
from trellis.domain import State
from trellis.errors import BackendUnavailable, InvalidSessionId, LockLost, TrellisError


def every_file(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


async def test_the_file_is_pretty_json_of_the_state_with_its_revision(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "sessions")
    state = State.new("s1", "start")
    state.context["count"] = 42
    await store.save("s1", state)
    revision = await store.save("s1", state)
    text = (tmp_path / "sessions" / "s1.json").read_text(encoding="utf-8")
    assert text.startswith('{\n  "session_id": "s1",\n')
    document = json.loads(text)
    assert document["revision"] == revision == 2
    assert document["context"] == {"count": 42}
    assert document["history"] == ["start"]


@pytest.mark.parametrize(
    "hostile",
    ["../outside", "../../etc/passwd", "sub/dir", "..\\win", "/absolute", ".", "..", "a\nb", "\x1b[31m"],
)
async def test_hostile_ids_never_touch_the_disk(tmp_path: Path, hostile: str) -> None:
    base = tmp_path / "deep" / "sessions"
    store = FileStore(base)
    await store.save("ok", State.new("ok", "start"))
    before = every_file(tmp_path)
    with pytest.raises(InvalidSessionId) as caught:
        await store.save(hostile, State.new("x", "start"))
    assert "session ID" in str(caught.value)
    with pytest.raises(InvalidSessionId):
        await store.delete(hostile)
    assert every_file(tmp_path) == before


async def test_leftovers_and_other_files_are_not_listed(tmp_path: Path) -> None:
    base = tmp_path / "sessions"
    store = FileStore(base)
    await store.save("real", State.new("real", "start"))
    (base / ".tmp-0123456789abcdef").write_text("{half a write")
    (base / ".tmp-leftover.json").write_text("{}")
    (base / "notes.txt").write_text("not a session")
    (base / "folder.json").mkdir()
    (base / "bad\x01name.json").write_text("{}")
    assert (await store.list()).session_ids == ["real"]


async def test_a_missing_directory_lists_nothing(tmp_path: Path) -> None:
    assert (await FileStore(tmp_path / "nowhere").list()).session_ids == []


async def test_a_damaged_file_is_a_clear_error_naming_it(tmp_path: Path) -> None:
    base = tmp_path / "sessions"
    base.mkdir()
    (base / "broken.json").write_text('{"session_id": "broken", "status": "dancing"}')
    (base / "garbage.json").write_text("not json")
    store = FileStore(base)
    with pytest.raises(TrellisError) as caught:
        await store.load("broken")
    assert "broken.json" in str(caught.value) and "status" in str(caught.value)
    with pytest.raises(TrellisError) as caught:
        await store.load("garbage")
    assert "garbage.json" in str(caught.value) and "not valid JSON" in str(caught.value)


async def test_a_save_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    for n in range(5):
        await store.save("s", State.new("s", f"n{n}"))
    assert every_file(tmp_path) == {"s.json"}


def test_temporaries_left_by_a_crash_are_removed_at_start(tmp_path: Path) -> None:
    tmp_path.joinpath("kept.json").write_text("{}")
    old = tmp_path / ".tmp-0123456789abcdef"
    old.write_bytes(b'{"half": ')
    fresh = tmp_path / ".tmp-fedcba9876543210"
    fresh.write_bytes(b"{")
    # Pretend the old one is from before a crash (mtime far in the past): a file's age, not a clock.
    stamp = os.stat(fresh).st_mtime - LEFTOVER_AGE - 1
    os.utime(old, (stamp, stamp))
    store = FileStore(tmp_path)
    assert not old.exists()
    assert fresh.exists(), "a temporary another process may be writing right now must stay"
    assert tmp_path.joinpath("kept.json").exists()
    assert store.remove_leftovers(older_than=-1) == 1 and not fresh.exists()


@pytest.mark.parametrize("revision", [-1, True, "3", 1.5])
async def test_a_file_with_an_impossible_revision_is_damaged(tmp_path: Path, revision: object) -> None:
    store = FileStore(tmp_path)
    await store.save("s", State.new("s", "start"))
    document = json.loads((tmp_path / "s.json").read_text())
    document["revision"] = revision
    (tmp_path / "s.json").write_text(json.dumps(document))
    problem = f"field 'revision' must be a non-negative integer, got {revision!r}"
    with pytest.raises(TrellisError, match=re.escape(problem)):
        await store.load("s")
    with pytest.raises(TrellisError, match=re.escape(problem)):
        await store.save("s", State.new("s", "start"))


async def test_a_file_without_a_revision_is_at_revision_zero(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await store.save("s", State.new("s", "start"))
    document = json.loads((tmp_path / "s.json").read_text())
    del document["revision"]
    (tmp_path / "s.json").write_text(json.dumps(document))
    assert (await store.load("s")).revision == 0
    assert await store.save("s", State.new("s", "start"), expected_revision=0) == 1


async def test_a_directory_that_cannot_be_used_is_a_backend_error(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the directory should be")
    store = FileStore(blocked)
    with pytest.raises(BackendUnavailable, match="cannot list session directory"):
        await store.list()
    with pytest.raises(BackendUnavailable, match="cannot read session file"):
        await store.load("s")
    with pytest.raises(BackendUnavailable, match="cannot read session file"):
        await store.save("s", State.new("s", "start"))
    # A dangling link: nothing to read, and no directory can be made there.
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "gone")
    with pytest.raises(BackendUnavailable, match="cannot write session file"):
        await FileStore(dangling).save("s", State.new("s", "start"))


async def test_a_session_file_that_is_a_directory_is_a_backend_error(tmp_path: Path) -> None:
    (tmp_path / "s.json").mkdir()
    store = FileStore(tmp_path)
    with pytest.raises(BackendUnavailable, match="cannot read session file"):
        await store.load("s")
    with pytest.raises(BackendUnavailable, match="cannot delete session file"):
        await store.delete("s")
    assert (tmp_path / "s.json").is_dir()


class FlakyFence:
    """A lock handle that is held when asked first and lost by the time of the write."""

    def __init__(self) -> None:
        self.asked = 0

    @property
    def key(self) -> str:
        return "locks/s"

    @property
    def token(self) -> int:
        return 1

    def held(self) -> bool:
        self.asked += 1
        return self.asked == 1

    async def unlock(self) -> None:
        pass


async def test_a_lock_lost_during_the_write_leaves_the_old_file(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await store.save("s", State.new("s", "old"))
    fence = FlakyFence()
    with pytest.raises(LockLost, match="lock 'locks/s' was lost; session 's' not saved"):
        await store.save("s", State.new("s", "new"), fence=fence)  # type: ignore[arg-type]
    assert fence.asked == 2
    assert (await store.load("s")).current_node_id == "old"
    assert every_file(tmp_path) == {"s.json"}


async def test_a_save_refused_for_a_lost_lock_says_so_before_writing(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    assert store.base_dir == tmp_path
    locker = LocalLocker()
    handle = await locker.acquire("s", ttl=30)
    await handle.unlock()
    with pytest.raises(LockLost, match="lock 's' is no longer held; session 's' not saved"):
        await store.save("s", State.new("s", "start"), fence=handle)
    assert every_file(tmp_path) == set()


async def test_links_are_not_listed_as_sessions(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "sessions")
    await store.save("real", State.new("real", "start"))
    (tmp_path / "sessions" / "link.json").symlink_to(tmp_path / "sessions" / "real.json")
    assert (await store.list()).session_ids == ["real"]


def open_descriptors() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open descriptors in /proc")
async def test_saves_and_deletes_leave_no_descriptor_open(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await store.save("warm-up", State.new("warm-up", "start"))
    before = open_descriptors()
    for n in range(20):
        await store.save(f"s{n}", State.new(f"s{n}", "start"))
        await store.delete(f"s{n}")
    assert open_descriptors() == before


async def test_a_cancelled_save_returns_only_once_its_write_is_done(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    saving = asyncio.create_task(store.save("s", State.new("s", "written")))
    await asyncio.sleep(0)  # the save now waits for its thread
    saving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await saving
    # The lock was held until the thread finished: the file is complete, not half there.
    assert (await store.load("s")).current_node_id == "written"
    assert every_file(tmp_path) == {"s.json"}


async def test_a_deleted_session_continues_its_revisions_after_a_restart(tmp_path: Path) -> None:
    base = tmp_path / "sessions"
    first = FileStore(base)
    for _ in range(3):
        last = await first.save("s1", State.new("s1", "start"))
    await first.delete("s1")
    assert (await first.list()).session_ids == []  # the tombstone is never listed
    restarted = FileStore(base)
    again = await restarted.save("s1", State.new("s1", "start"), expected_revision=0)
    assert again == last + 1
    assert every_file(base) == {"s1.json"}  # the tombstone went with the new save
