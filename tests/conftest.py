"""Markers for the tests that start real backends, so a quick inner loop can leave
them out (``scripts/test -m "not etcd and not slow"``); the README's test command
runs everything.

* ``etcd``: starts etcd servers (any test using an etcd fixture, and the etcd folders);
* ``slow``: starts trellis server processes, Node.js, or builds a virtual environment.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ETCD_FIXTURES = frozenset({"etcd_server", "private_etcd", "etcd_cluster3", "etcd"})
ETCD_FOLDERS = ("etcd", "etcd_system")
SLOW_MODULES = frozenset(
    {
        "grpc_clients/test_node_client.py",
        "polyglot/test_node_from_protos.py",
        "grpc_clients/test_node_retries.py",
        "grpc_clients/test_remote_run.py",
        "grpc_clients/test_shutdown.py",
        "cli/test_readme_commands.py",
        "cli/test_serve_busy_port.py",
        "http/test_readme_walk.py",
        "http/test_node_connect.py",
        "http/test_connect_web.py",
        "inspector/test_browser_walk.py",
        "grpc_server/test_serve_process.py",
        "grpc_server/test_codegen.py",
        "mcp/test_mcp_server.py",
        "packaging/test_no_extras.py",
        "packaging/test_plugins.py",
        "contracts/test_mutants.py",
        "packaging/test_example_adapter.py",
        "packaging/test_typed.py",
        "sidecars/test_python_sidecars.py",
        "sidecars/test_node_sidecar.py",
        "etcd_system/test_sidecar_fencing.py",
        "etcd_system/test_durable_timers.py",
        "deploy/test_local_pod.py",
        "deploy/test_local_etcd.py",
        "deploy/test_local_git_flow.py",
        "replication/test_watch_across_replicas.py",
    }
)
_TESTS = Path(__file__).parent

# The etcd fixtures (etcd_server, private_etcd, etcd_cluster3, etcd_config, etcd_client),
# for every folder that needs a real etcd.
pytest_plugins = ["tests.support.etcd_fixtures"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "etcd: starts etcd servers on loopback")
    config.addinivalue_line("markers", "slow: starts server processes, Node.js or a virtual environment")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        relative = Path(str(item.path)).relative_to(_TESTS).as_posix()
        if relative.split("/")[0] in ETCD_FOLDERS or ETCD_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.etcd)
        if relative in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
