"""`trellis graph push|pull` through the command line, against a real etcd on loopback."""

from __future__ import annotations

import filecmp
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import EXAMPLES, run_cli
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
