"""`trellis graph push|pull` through the command line, against a real etcd on loopback."""

from __future__ import annotations

import filecmp
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import EXAMPLES, run_cli, write_flow
from tests.support.etcd_process import EtcdCluster, running_cluster


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    yield from running_cluster(1)


def test_push_then_pull_gives_back_the_same_flow(etcd: EtcdCluster, tmp_path: Path) -> None:
    common = ["--etcd", ",".join(etcd.endpoints), "--graph", "tour", "--prefix", f"/t-{uuid.uuid4().hex[:8]}"]
    pushed = run_cli("graph", "push", str(EXAMPLES / "tour"), *common)
    assert pushed.code == 0, pushed.err
    assert "published graph 'tour'" in pushed.out
    # The tour's tools.yaml names a process tool: push says where it must run.
    assert "names process tools (word_stats)" in pushed.err and "trellis dispatcher" in pushed.err

    copy = tmp_path / "tour"
    pulled = run_cli("graph", "pull", str(copy), *common)
    assert pulled.code == 0, pulled.err
    node_files = sorted(
        str(p.relative_to(EXAMPLES / "tour"))
        for p in (EXAMPLES / "tour").rglob("*")
        if p.suffix in (".md", ".yaml", ".json") and ".trellis" not in p.parts
    )
    for name in node_files:
        assert filecmp.cmp(EXAMPLES / "tour" / name, copy / name, shallow=False), name
    # The pulled flow is the same flow: same drawing.
    assert run_cli("graph", str(copy)).out == run_cli("graph", str(EXAMPLES / "tour")).out


def test_push_without_etcd_options_is_a_usage_error() -> None:
    result = run_cli("graph", "push", str(EXAMPLES / "tour"))
    assert result.code == 2
    assert "--etcd" in result.err


def test_push_refuses_a_flow_with_errors_unless_forced(etcd: EtcdCluster, tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path / "broken",
        {"start.md": "---\nto: nowhere\n---\nHi\n", "orphan.md": "Alone\n"},
    )
    prefix = f"/t-{uuid.uuid4().hex[:8]}"
    common = ["--etcd", ",".join(etcd.endpoints), "--graph", "broken", "--prefix", prefix]
    refused = run_cli("graph", "push", str(flow), *common)
    assert refused.code == 1
    assert "transitions[0].to: target node 'nowhere' does not exist" in refused.err
    assert "refusing to publish" in refused.err and "--force" in refused.err
    # Nothing was published: pulling finds no graph.
    assert run_cli("graph", "pull", str(tmp_path / "out"), *common).code == 1

    forced = run_cli("graph", "push", str(flow), *common, "--force")
    assert forced.code == 0, forced.err
    assert "published graph 'broken'" in forced.out


def test_dry_run_prints_the_diff_and_publishes_nothing(etcd: EtcdCluster, tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path / "flow",
        {"start.md": "---\nto: a\n---\nHi\n", "a.md": "---\nto: b\n---\nA\n", "b.md": "B\n"},
    )
    common = ["--etcd", ",".join(etcd.endpoints), "--graph", "g", "--prefix", f"/t-{uuid.uuid4().hex[:8]}"]
    first = run_cli("graph", "push", str(flow), *common, "--dry-run")
    assert first.code == 0, first.err
    assert "would be published for the first time (3 nodes)" in first.out
    assert "  + a\n  + b\n  + start\n" in first.out
    assert run_cli("graph", "pull", str(tmp_path / "out"), *common).code == 1  # still nothing there

    assert run_cli("graph", "push", str(flow), *common).code == 0
    write_flow(flow, {"a.md": "---\nto: c\n---\nA again\n", "c.md": "C\n"})
    (flow / "b.md").unlink()
    diff = run_cli("graph", "push", str(flow), *common, "--dry-run")
    assert diff.code == 0, diff.err
    assert "  + c\n  ~ a\n  - b\n1 added, 1 changed, 1 removed" in diff.out
    pulled = run_cli("graph", "pull", str(tmp_path / "out"), *common)
    assert pulled.code == 0
    assert (tmp_path / "out" / "a.md").read_text() == "---\nto: b\n---\nA\n"  # unchanged by the dry run


def test_push_checks_the_entry_only_when_one_is_named(etcd: EtcdCluster, tmp_path: Path) -> None:
    # Replicas may serve a graph with their own --entry: no start node is not an error...
    flow = write_flow(tmp_path / "flow", {"first.md": "---\nto: second\n---\n1\n", "second.md": "2\n"})
    common = ["--etcd", ",".join(etcd.endpoints), "--graph", "g", "--prefix", f"/t-{uuid.uuid4().hex[:8]}"]
    assert run_cli("graph", "push", str(flow), *common, "--dry-run").code == 0
    # ... but a named entry must exist.
    named = run_cli("graph", "push", str(flow), *common, "--entry", "zeroth", "--dry-run")
    assert named.code == 1
    assert "entry node 'zeroth' not found" in named.err
    assert run_cli("graph", "push", str(flow), *common, "--entry", "first", "--dry-run").code == 0
