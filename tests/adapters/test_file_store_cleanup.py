"""FileStore housekeeping in detail: which leftover temporaries it removes (and says
so), and the tombstone that keeps a deleted session's revisions going up."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from trellis.adapters.file_store import LEFTOVER_AGE, FileStore
from trellis.domain import State
from trellis.errors import SessionNotFound


def age(path: Path, seconds: float) -> None:
    """Make ``path`` (itself, not what it links to) look ``seconds`` older than now-ish."""
    stamp = os.lstat(path).st_mtime - seconds
    os.utime(path, (stamp, stamp), follow_symlinks=False)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_directory_not_created_yet_has_no_leftovers(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "not-yet")
    assert store.remove_leftovers() == 0
    assert store.remove_leftovers(older_than=-1) == 0
    assert not (tmp_path / "not-yet").exists()


def test_a_link_named_like_a_temporary_is_not_removed_nor_what_it_points_to(tmp_path: Path) -> None:
    base = tmp_path / "sessions"
    base.mkdir()
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    link = base / ".tmp-0123456789abcdef"
    link.symlink_to(target)
    age(target, LEFTOVER_AGE + 10)
    age(link, LEFTOVER_AGE + 10)
    store = FileStore(base)
    assert store.remove_leftovers(older_than=-1) == 0
    assert link.is_symlink() and target.exists()


async def test_a_session_saved_once_then_deleted_comes_back_at_revision_two(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    assert await store.save("s", State.new("s", "start")) == 1
    await store.delete("s")
    # A client holding revision 1 from before the delete can never mistake the new session for it.
    assert await FileStore(tmp_path).save("s", State.new("s", "start"), expected_revision=0) == 2


async def test_deleting_a_damaged_file_removes_it_and_the_id_starts_again(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await store.save("s", State.new("s", "start"))
    (tmp_path / "s.json").write_text("{half")
    await store.delete("s")
    assert names(tmp_path) == []  # no tombstone either: there is no revision to remember
    assert await store.save("s", State.new("s", "start")) == 1


async def test_a_session_file_without_a_revision_is_deleted_too(tmp_path: Path) -> None:
    """Such a file loads at revision 0 (test_file_store.py); delete must not leave it behind."""
    store = FileStore(tmp_path)
    await store.save("s", State.new("s", "start"))
    document = json.loads((tmp_path / "s.json").read_text())
    del document["revision"]
    (tmp_path / "s.json").write_text(json.dumps(document))
    assert (await store.load("s")).revision == 0
    await store.delete("s")
    assert names(tmp_path) == []
    assert (await store.list()).session_ids == []
    with pytest.raises(SessionNotFound):
        await store.load("s")


async def test_deleting_a_session_that_does_not_exist_leaves_no_trace(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await store.save("kept", State.new("kept", "start"))
    await store.delete("never-saved")
    assert names(tmp_path) == ["kept.json"]
    await FileStore(tmp_path / "missing").delete("never-saved")
    assert names(tmp_path) == ["kept.json"]
