"""Every engine test runs twice: against the in-process Engine, and against a real
server's gRPC Engine service (``make_engine`` in helpers.py serves the same nodes).

A test that needs the in-process object itself (lifecycle hook recorders, the compiled
cache, options a server cannot be given) or that builds no engine at all carries
``@pytest.mark.in_process_only(reason=...)`` and is generated for the in-process
transport only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.engine import helpers

IN_PROCESS = "in-process"
GRPC = "grpc"
MARKER = "in_process_only"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(reason): an engine test that does not also run through the gRPC Engine service"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "transport" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is not None and not marker.kwargs.get("reason"):
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: {MARKER} needs a reason=")
    transports = [IN_PROCESS] if marker is not None else [IN_PROCESS, GRPC]
    metafunc.parametrize("transport", transports, indirect=True)


@pytest.fixture(autouse=True)
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The transport of this run; over gRPC, the servers it started stop at teardown."""
    name: str = request.param
    if name == IN_PROCESS:
        yield name
        return
    servers = helpers.ServedEngines()
    helpers.served_engines = servers
    try:
        yield name
    finally:
        helpers.served_engines = None
        await servers.aclose()
    if servers.started == 0:
        pytest.fail(f"the {GRPC} run of this test built no served engine: mark it {MARKER}", pytrace=False)
