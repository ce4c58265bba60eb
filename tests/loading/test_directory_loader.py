"""DirectoryLoader: discovery, IDs, entry helpers (docs/engine.md, "Graphs and node IDs"), safety,
caching and watching."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import weakref
from pathlib import Path

import pytest

from tests.loading.writers import write_definition
from trellis.adapters.directory_loader import DirectoryLoader, entry_node_id, has_default_error_node
from trellis.errors import GraphError, NodeDefinitionError, NodeNotFound
from trellis.ports.loader import GraphChange
from trellis.streams import QueueStream


def write(root: Path, rel: str, text: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def graph(tmp_path: Path) -> Path:
    root = tmp_path / "flow"
    root.mkdir()
    return root


# --- discovery -------------------------------------------------------------------------------------


async def test_every_node_format_is_discovered_and_other_extensions_are_ignored(graph: Path) -> None:
    write(graph, "a.md", "A")
    write(graph, "b.json", "{}")
    write(graph, "c.yaml", "type: text\n")
    write(graph, "d.yml", "type: text\n")
    write(graph, "e.csv", "x,y\n")
    write(graph, "notes.txt", "x")
    write(graph, "README", "x")
    assert await DirectoryLoader(graph).list_nodes() == ["a", "b", "c", "d"]


async def test_hidden_files_and_every_hidden_directory_are_skipped(graph: Path) -> None:
    write(graph, "start.md", "Hi")
    write(graph, ".draft.md", "hidden file")
    write(graph, ".git/HEAD.md", "git")
    write(graph, ".loam/x.json", "{}")
    write(graph, ".trellis/sessions/s1.json", '{"session_id": "s1"}')
    write(graph, "sub/.hidden/y.md", "y")
    loader = DirectoryLoader(graph)
    assert await loader.list_nodes() == ["start"]
    with pytest.raises(NodeNotFound):
        await loader.get_node(".trellis/sessions/s1")


async def test_a_missing_root_lists_with_a_clear_error_and_finds_nothing(tmp_path: Path) -> None:
    loader = DirectoryLoader(tmp_path / "absent")
    with pytest.raises(GraphError, match="absent' does not exist"):
        await loader.list_nodes()
    with pytest.raises(NodeNotFound):
        await loader.get_node("start")


# --- IDs -------------------------------------------------------------------------------------------


async def test_ids_are_root_relative_paths_without_extension(graph: Path) -> None:
    write(graph, "start.md", "Hi")
    write(graph, "choice.json", "{}")
    write(graph, "modules/checkout/start.md", "Checkout")
    loader = DirectoryLoader(graph)
    assert await loader.list_nodes() == ["choice", "modules/checkout/start", "start"]
    node = await loader.get_node("modules/checkout/start")
    assert node.id == "modules/checkout/start"
    assert node.content == "Checkout"
    assert node.source == "flow/modules/checkout/start.md"


async def test_explicit_id_with_extension_matching_the_path(graph: Path) -> None:
    write(graph, "choice.json", '{"id": "choice.json", "content": "J"}')
    loader = DirectoryLoader(graph)
    assert await loader.list_nodes() == ["choice"]
    assert (await loader.get_node("choice")).id == "choice"


async def test_a_node_whose_explicit_id_differs_from_its_path_is_found_by_that_id(graph: Path) -> None:
    # docs/engine-differences.md, fix #17: the original listed `welcome` but could not load it.
    write(graph, "pages/one.md", "---\nid: welcome\n---\nHello\n")
    loader = DirectoryLoader(graph)
    assert await loader.list_nodes() == ["welcome"]
    node = await loader.get_node("welcome")
    assert (node.id, node.content) == ("welcome", "Hello\n")
    with pytest.raises(NodeNotFound, match="declares id 'welcome'"):
        await loader.get_node("pages/one")


async def test_lookup_without_extension_follows_md_json_yaml_yml_priority(graph: Path) -> None:
    write(graph, "n.yml", "content: yml\n")
    write(graph, "n.yaml", "content: yaml\n")
    loader = DirectoryLoader(graph)
    assert (await loader.get_node("n")).content == "yaml"
    write(graph, "n.json", '{"content": "json"}')
    assert (await loader.get_node("n")).content == "json"
    write(graph, "n.md", "md")
    assert (await loader.get_node("n")).content == "md"


async def test_lookup_with_extension_opens_that_file_and_strips_the_extension(graph: Path) -> None:
    write(graph, "n.md", "md")
    write(graph, "n.json", '{"content": "json"}')
    node = await DirectoryLoader(graph).get_node("n.json")
    assert (node.id, node.content) == ("n", "json")


async def test_two_files_with_one_id_make_listing_fail_naming_both(graph: Path) -> None:
    write(graph, "foo.md", "md")
    write(graph, "foo.json", "{}")
    loader = DirectoryLoader(graph)
    with pytest.raises(GraphError) as caught:
        await loader.list_nodes()
    message = str(caught.value)
    assert "collision detected" in message and "'foo'" in message
    assert "foo.md" in message and "foo.json" in message
    assert (await loader.get_node("foo")).content == "md"  # direct lookup still works


async def test_an_explicit_id_equal_to_another_files_id_is_a_collision(graph: Path) -> None:
    write(graph, "end.md", "end")
    write(graph, "other.md", "---\nid: end\n---\nimpostor\n")
    with pytest.raises(
        GraphError, match=r"collision detected: node ID 'end' is defined by end\.md and other\.md"
    ):
        await DirectoryLoader(graph).list_nodes()


# --- safety: nothing outside the root is read ------------------------------------------------------


@pytest.mark.parametrize(
    "node_id",
    [
        "../secret",
        "../secret.md",
        "sub/../../secret",
        "/etc/passwd",
        "..\\secret",
        "./start",
        "a//b",
        "nul\x00",
    ],
)
async def test_ids_escaping_the_root_are_not_found(tmp_path: Path, graph: Path, node_id: str) -> None:
    write(tmp_path, "secret.md", "top secret")
    write(graph, "start.md", "Hi")
    write(graph, "sub/x.md", "x")
    with pytest.raises(NodeNotFound):
        await DirectoryLoader(graph).get_node(node_id)


async def test_symlinks_pointing_outside_the_root_are_not_followed(tmp_path: Path, graph: Path) -> None:
    secret = write(tmp_path, "outside/secret.md", "top secret")
    os.symlink(secret, graph / "link.md")
    os.symlink(secret.parent, graph / "linked_dir")
    write(graph, "start.md", "Hi")
    loader = DirectoryLoader(graph)
    assert await loader.list_nodes() == ["start"]
    for node_id in ("link", "linked_dir/secret"):
        with pytest.raises(NodeNotFound):
            await loader.get_node(node_id)


# --- bad files -------------------------------------------------------------------------------------


async def test_a_file_over_the_size_limit_is_refused_by_name(graph: Path) -> None:
    write(graph, "big.md", "x" * 2000)
    loader = DirectoryLoader(graph, max_file_bytes=1000)
    with pytest.raises(
        NodeDefinitionError, match=r"flow/big\.md: file is larger than the limit of 1000 bytes"
    ):
        await loader.get_node("big")


def test_the_default_size_limit_is_one_mebibyte(graph: Path) -> None:
    assert DirectoryLoader(graph).max_file_bytes == 1024 * 1024


@pytest.mark.parametrize(
    ("rel", "text", "match"),
    [
        pytest.param(
            "latin.md",
            "---\ntype: text\n---\nol\xe1\n".encode("latin-1"),
            r"flow/latin\.md: file is not valid UTF-8 \(bad byte at line 4",
            id="not-utf8",
        ),
        pytest.param(
            "bad.yaml",
            "type: text\nto: [a\nwait: true\n",
            r"flow/bad\.yaml: invalid YAML at line \d",
            id="yaml",
        ),
        pytest.param(
            "bad.json", '{\n  "to": "x",\n}\n', r"flow/bad\.json: invalid JSON at line 3", id="json"
        ),
        pytest.param(
            "open.md",
            "---\ntype: text\nHello\n",
            r"flow/open\.md: frontmatter .* never closed",
            id="unclosed-frontmatter",
        ),
    ],
)
async def test_an_unreadable_file_is_refused_naming_the_file_and_where(
    graph: Path, rel: str, text: str | bytes, match: str
) -> None:
    write(graph, rel, text)
    with pytest.raises(NodeDefinitionError, match=match):
        await DirectoryLoader(graph).get_node(rel.rsplit(".", 1)[0])


async def test_a_wrongly_typed_field_names_the_file_and_field(graph: Path) -> None:
    write(graph, "x.md", '---\nwait: "true"\n---\n')
    with pytest.raises(NodeDefinitionError) as caught:
        await DirectoryLoader(graph).get_node("x")
    assert str(caught.value) == "flow/x.md: field 'wait': expected a boolean, got string \"true\""
    assert caught.value.node_id == "x"


async def test_a_broken_file_stays_listed_and_fails_only_when_requested(graph: Path) -> None:
    write(graph, "good.md", "ok")
    write(graph, "broken.json", "{")
    write(graph, "typed.md", "---\nid: named\nwait: 1\n---\n")
    loader = DirectoryLoader(graph)
    assert await loader.list_nodes() == ["broken", "good", "named"]
    assert (await loader.get_node("good")).content == "ok"
    with pytest.raises(NodeDefinitionError, match=r"broken\.json"):
        await loader.get_node("broken")
    with pytest.raises(NodeDefinitionError, match="field 'wait'"):
        await loader.get_node("named")


async def test_a_broken_tool_library_is_named_by_its_importer(graph: Path) -> None:
    write(graph, "lib.yaml", "tools: [{description: no name}]\n")
    write(graph, "agent.md", "---\ntools: [lib]\n---\n")
    with pytest.raises(
        NodeDefinitionError, match=r"flow/agent\.md: field 'tools': cannot import tools from 'lib'"
    ):
        await DirectoryLoader(graph).get_node("agent")


async def test_tool_imports_may_name_a_file_with_its_extension(graph: Path) -> None:
    write(graph, "tools.yaml", "tools:\n  - name: echo\n    command: go\n    description: Echo\n")
    write(graph, "start.md", "---\ntools: [tools.yaml, {name: local}]\n---\n")
    node = await DirectoryLoader(graph).get_node("start")
    assert [(t.name, t.description) for t in node.tools] == [("echo", "Echo"), ("local", "")]


# --- caching ---------------------------------------------------------------------------------------


async def test_a_rewritten_file_is_served_fresh_without_any_watch(graph: Path) -> None:
    loader = DirectoryLoader(graph)
    for version in range(5):
        # same length each time, written back to back: a stat-based cache could miss these
        write(graph, "n.md", f"v{version}")
        assert (await loader.get_node("n")).content == f"v{version}"


async def test_an_unchanged_file_is_not_parsed_again(graph: Path) -> None:
    write(graph, "n.md", "---\ntype: text\n---\nHi")
    loader = DirectoryLoader(graph)
    first = await loader.get_node("n")
    again = await loader.get_node("n")
    assert again is first  # same parsed node object, served from the cache


# --- entry point helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "entry"),
    [
        (["start.md", "main.md", "index.md"], "start"),
        (["main.yaml", "index.md"], "main"),
        (["index.json", "other.md"], "index"),
        (["flow.md", "other.md"], "flow"),
        (["main.yml", "other.md"], "start"),
        (["sub/start.md"], "start"),
    ],
)
def test_entry_node_follows_the_cli_priority(graph: Path, files: list[str], entry: str) -> None:
    for rel in files:
        write(graph, rel, "x")
    assert entry_node_id(graph) == entry


def test_default_error_node_exists_only_at_the_root(graph: Path) -> None:
    assert not has_default_error_node(graph)
    write(graph, "sub/error.md", "x")
    write(graph, "error.yml", "x")
    assert not has_default_error_node(graph)
    write(graph, "error.yaml", "x")
    assert has_default_error_node(graph)


# --- watching --------------------------------------------------------------------------------------

WATCH_BOUND = 15.0


async def _live(loader: DirectoryLoader) -> QueueStream[GraphChange]:
    """A watch stream seen to deliver an event (so later writes are certainly observed)."""
    stream = loader.watch()
    await asyncio.sleep(0)
    async with asyncio.timeout(WATCH_BOUND):
        for attempt in range(100):
            write_definition(loader.root, {"id": "warmup", "content": f"w{attempt}"}, ".md")
            try:
                async with asyncio.timeout(0.5):
                    await anext(stream)
                return stream
            except TimeoutError:
                continue
    raise AssertionError("watch never delivered an event")


async def _next_naming(stream: QueueStream[GraphChange], predicate: object) -> GraphChange:
    async with asyncio.timeout(WATCH_BOUND):
        while True:
            change = await anext(stream)
            if callable(predicate) and predicate(change):
                return change


async def test_a_broken_file_does_not_stop_the_watch(graph: Path) -> None:
    write(graph, "start.md", "Hi")
    loader = DirectoryLoader(graph)
    stream = await _live(loader)
    try:
        write(graph, "start.md", "---\nwait: [\n---\n")
        await _next_naming(stream, lambda c: "start" in c.node_ids)
        with pytest.raises(NodeDefinitionError):
            await loader.get_node("start")
        write(graph, "start.md", "Fixed")
        await _next_naming(stream, lambda c: "start" in c.node_ids)
        assert (await loader.get_node("start")).content == "Fixed"
    finally:
        await stream.aclose()


async def test_changes_in_hidden_directories_and_other_files_raise_no_event(graph: Path) -> None:
    write(graph, "start.md", "Hi")
    loader = DirectoryLoader(graph)
    stream = await _live(loader)
    try:
        write(graph, ".trellis/sessions/s1.json", "{}")
        write(graph, "notes.txt", "x")
        write(graph, ".start.md.swp", "x")
        write(graph, "start.md", "Changed")
        # The first event after the ignored writes is the node's own (warm-up echoes aside).
        change = await _next_naming(stream, lambda c: c.node_ids != {"warmup"})
        assert "start" in change.node_ids
        assert change.node_ids <= {"start", "warmup"}  # nothing from the ignored files
    finally:
        await stream.aclose()


async def test_changing_an_explicit_id_reports_the_old_and_the_new_id(graph: Path) -> None:
    write(graph, "page.md", "---\nid: old\n---\n")
    loader = DirectoryLoader(graph)
    assert await loader.list_nodes() == ["old"]
    stream = await _live(loader)
    try:
        write(graph, "page.md", "---\nid: new\n---\n")
        seen = await _ids_until(stream, "new")
        assert seen is None or "old" in seen
    finally:
        await stream.aclose()


async def test_renaming_a_directory_reports_an_unknown_change(graph: Path) -> None:
    write(graph, "modules/a.md", "A")
    loader = DirectoryLoader(graph)
    assert await loader.list_nodes() == ["modules/a"]
    stream = await _live(loader)
    try:
        (graph / "modules").rename(graph / "parts")
        await _next_naming(stream, lambda c: not c.node_ids or "modules/a" in c.node_ids)
        assert await loader.list_nodes() == ["parts/a", "warmup"]
    finally:
        await stream.aclose()


async def test_closing_the_loader_ends_its_watch_streams(graph: Path) -> None:
    loader = DirectoryLoader(graph)
    stream = loader.watch()
    await asyncio.sleep(0)
    await loader.aclose()
    async with asyncio.timeout(WATCH_BOUND):
        assert [change async for change in stream] == []


async def test_an_id_with_extension_names_exactly_one_file(graph: Path) -> None:
    write(graph, "n.md", "md")
    with pytest.raises(NodeNotFound):
        await DirectoryLoader(graph).get_node("n.json")


async def test_yaml_aliases_that_explode_are_refused_quickly(graph: Path) -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 9):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    write(graph, "bomb.yaml", "\n".join(lines) + "\ndefault_context: {boom: *a8}\nmetadata: {boom: *a8}\n")
    with pytest.raises(
        NodeDefinitionError, match=r"flow/bomb\.yaml: field 'default_context.*too many values"
    ):
        await DirectoryLoader(graph).get_node("bomb")


@pytest.mark.parametrize(
    "field", ["default_context: {loop: &x [*x]}", "metadata: {loop: &x [*x]}", "context_schema: {t: &x [*x]}"]
)
async def test_recursive_yaml_values_are_refused(graph: Path, field: str) -> None:
    write(graph, "loop.yaml", field + "\n")
    with pytest.raises(NodeDefinitionError, match="nested more than 64 levels"):
        await DirectoryLoader(graph).get_node("loop")


async def test_a_fifo_named_like_a_node_is_never_opened(graph: Path) -> None:
    os.mkfifo(graph / "pipe.md")
    write(graph, "start.md", "Hi")
    loader = DirectoryLoader(graph)
    async with asyncio.timeout(WATCH_BOUND):  # opening the FIFO would block forever
        assert await loader.list_nodes() == ["start"]
        with pytest.raises(NodeNotFound):
            await loader.get_node("pipe")


async def test_dropping_a_watch_stream_stops_its_watcher(graph: Path) -> None:
    loader = DirectoryLoader(graph)
    stream = loader.watch()
    await asyncio.sleep(0)
    ref = weakref.ref(stream)
    del stream
    gc.collect()
    assert ref() is None
    async with asyncio.timeout(WATCH_BOUND):
        await loader.aclose()  # returns once the (already stopped) watcher task has finished


async def test_watching_a_missing_directory_reports_it_once_it_exists(tmp_path: Path) -> None:
    loader = DirectoryLoader(tmp_path / "later")
    stream = loader.watch()
    try:
        await asyncio.sleep(0)
        write(tmp_path / "later", "start.md", "Here")
        await _next_naming(stream, lambda c: not c.node_ids)  # a full reload
        assert (await loader.get_node("start")).content == "Here"
    finally:
        await stream.aclose()


async def _ids_until(stream: QueueStream[GraphChange], wanted: str) -> set[str] | None:
    """Union of the IDs of the changes up to the one naming ``wanted``; None for "everything"."""
    seen: set[str] = set()
    async with asyncio.timeout(WATCH_BOUND):
        while wanted not in seen:
            change = await anext(stream)
            if not change.node_ids:
                return None
            seen |= change.node_ids
    return seen


async def test_two_watches_of_one_loader_both_report_the_old_id(graph: Path) -> None:
    write(graph, "page.md", "---\nid: old\n---\n")
    loader = DirectoryLoader(graph)
    assert await loader.list_nodes() == ["old"]
    first = await _live(loader)
    second = await _live(loader)
    try:
        write(graph, "page.md", "---\nid: new\n---\n")
        for stream in (first, second):
            # (a half-written file may show up as an event of its own, hence the union)
            seen = await _ids_until(stream, "new")
            assert seen is None or "old" in seen
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_file_named_with_extension_whose_id_differs_is_not_that_node(graph: Path) -> None:
    write(graph, "choice.json", '{"id": "crossroads"}')
    loader = DirectoryLoader(graph)
    with pytest.raises(NodeNotFound, match=r"choice\.json declares id 'crossroads'"):
        await loader.get_node("choice.json")
    assert (await loader.get_node("crossroads")).id == "crossroads"


# --- one watcher per directory (issue 8.3) ------------------------------------------------------


def _inotify_instances() -> int:
    """inotify instances this process holds (each is one of the user's limited ones)."""
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd) == "anon_inode:inotify"
        except OSError:
            continue  # closed while listing
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts inotify instances through /proc")
async def test_many_watch_streams_share_one_file_watcher(graph: Path) -> None:
    write(graph, "start.md", "Hi")
    loader = DirectoryLoader(graph)
    before = _inotify_instances()
    first = await _live(loader)
    streams = [loader.watch() for _ in range(40)]
    try:
        assert loader.watcher_count() == 1
        assert _inotify_instances() - before <= 1
        write(graph, "start.md", "Changed")
        for stream in (first, *streams):
            await _next_naming(stream, lambda c: "start" in c.node_ids)
        for stream in streams:
            await stream.aclose()
        assert loader.watcher_count() == 1  # the first stream still watches
    finally:
        await first.aclose()
    assert loader.watcher_count() == 0
    for _ in range(300):  # bounded: the instance goes with the last subscriber
        if _inotify_instances() <= before:
            break
        await asyncio.sleep(0.05)
    assert _inotify_instances() <= before


async def test_a_new_subscriber_after_the_last_left_gets_a_new_watcher(graph: Path) -> None:
    write(graph, "start.md", "Hi")
    loader = DirectoryLoader(graph)
    stream = await _live(loader)
    await stream.aclose()
    assert loader.watcher_count() == 0
    again = await _live(loader)
    try:
        assert loader.watcher_count() == 1
        write(graph, "start.md", "Again")
        await _next_naming(again, lambda c: "start" in c.node_ids)
    finally:
        await again.aclose()


async def test_a_removed_and_recreated_directory_resumes_reloads(graph: Path) -> None:
    write(graph, "start.md", "Before")
    loader = DirectoryLoader(graph)
    stream = await _live(loader)
    try:
        await asyncio.to_thread(shutil.rmtree, graph)
        await asyncio.to_thread(write, graph, "start.md", "After")
        # The return of the directory is a full reload (nothing can tell what changed meanwhile).
        await _next_naming(stream, lambda c: not c.node_ids)
        assert (await loader.get_node("start")).content == "After"
        # And edits in the new directory are seen again, one by one.
        write(graph, "start.md", "Edited")
        await _next_naming(stream, lambda c: "start" in c.node_ids)
        assert (await loader.get_node("start")).content == "Edited"
        assert loader.watcher_count() == 1
    finally:
        await stream.aclose()


async def test_a_directory_that_is_gone_for_a_while_resumes_reloads(graph: Path) -> None:
    write(graph, "start.md", "Before")
    loader = DirectoryLoader(graph)
    stream = await _live(loader)
    try:
        await asyncio.to_thread(graph.rename, graph.with_name("elsewhere"))
        # Gone long enough for the watcher to notice (it passes either way: a directory
        # re-created under the same name is another inode, which the watcher notices too).
        await asyncio.sleep(1.5)
        await asyncio.to_thread(write, graph, "start.md", "After")
        await _next_naming(stream, lambda c: not c.node_ids)
        assert (await loader.get_node("start")).content == "After"
    finally:
        await stream.aclose()


# --- a flow directory behind a swapped link (git-sync, issue 10) -------------------------------


# Counting inotify instances needs /proc (Linux, where the watcher uses inotify).
COUNTS_WATCHERS = Path("/proc/self/fd").is_dir()


def _git_sync(git: Path, name: str, files: dict[str, str]) -> Path:
    """One sync the way git-sync publishes it: a new worktree, a new link to it, and that
    link renamed over ``current`` in one step. Returns the new worktree."""
    worktree = git / ".worktrees" / name
    for rel, text in files.items():
        write(worktree, rel, text)
    link = git / f".current-{name}"
    os.symlink(worktree.relative_to(git), link)
    os.replace(link, git / "current")
    return worktree


@pytest.mark.parametrize("below", ["", "flows"], ids=["link-is-the-flow", "flow-below-the-link"])
async def test_a_swapped_link_is_followed_and_reported_as_a_full_reload(tmp_path: Path, below: str) -> None:
    git = tmp_path / "git"
    first = _git_sync(git, "one", {f"{below}/start.md".lstrip("/"): "One"})
    loader = DirectoryLoader(git / "current" / below)
    assert (await loader.get_node("start")).content == "One"
    before = _inotify_instances() if COUNTS_WATCHERS else 0
    stream = await _live(loader)
    try:
        await asyncio.to_thread(_git_sync, git, "two", {f"{below}/start.md".lstrip("/"): "Two"})
        await asyncio.to_thread(shutil.rmtree, first)  # git-sync then deletes the old worktree
        await _next_naming(stream, lambda c: not c.node_ids)  # everything may have changed
        assert (await loader.get_node("start")).content == "Two"
        assert await loader.list_nodes() == ["start"]
        # The watch now covers the new worktree: its edits are seen one by one.
        write(git / "current" / below, "start.md", "Edited")
        await _next_naming(stream, lambda c: "start" in c.node_ids)
        assert (await loader.get_node("start")).content == "Edited"
        assert loader.watcher_count() == 1
        if COUNTS_WATCHERS:
            assert _inotify_instances() - before <= 1  # the old worktree's watch was closed
    finally:
        await stream.aclose()


async def test_a_link_swapped_while_the_old_worktree_stays_is_still_noticed(tmp_path: Path) -> None:
    git = tmp_path / "git"
    _git_sync(git, "one", {"start.md": "One"})
    loader = DirectoryLoader(git / "current")
    stream = await _live(loader)
    try:
        # Nothing happens in the old worktree, so only the watcher's own check can tell.
        await asyncio.to_thread(_git_sync, git, "two", {"start.md": "Two"})
        await _next_naming(stream, lambda c: not c.node_ids)
        assert (await loader.get_node("start")).content == "Two"
        write(git / "current", "start.md", "Edited")
        await _next_naming(stream, lambda c: "start" in c.node_ids)
    finally:
        await stream.aclose()


async def test_lookups_follow_a_swapped_link_without_any_watch(tmp_path: Path) -> None:
    git = tmp_path / "git"
    first = _git_sync(git, "one", {"start.md": "One", "old.md": "Old"})
    loader = DirectoryLoader(git / "current")
    assert await loader.list_nodes() == ["old", "start"]
    _git_sync(git, "two", {"start.md": "Two", "new.md": "New"})
    assert await loader.list_nodes() == ["new", "start"]  # the old worktree is still there
    shutil.rmtree(first)
    assert (await loader.get_node("start")).content == "Two"
    with pytest.raises(NodeNotFound):
        await loader.get_node("old")
