"""FileStore beyond the contract: the file format, hostile IDs, leftovers and damaged files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from trellis.adapters.file_store import LEFTOVER_AGE, FileStore
from trellis.domain import State
from trellis.errors import InvalidSessionId, TrellisError


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
