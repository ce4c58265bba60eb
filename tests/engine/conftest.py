"""Every engine test runs twice: against the in-process Engine, and against a real
server's gRPC Engine service (``make_engine`` in helpers.py serves the same nodes).

Lifecycle hooks given to ``make_engine`` receive, over gRPC, the events each reply (or
failed call's status) carries, replayed by the RemoteEngine. A test that needs the
in-process object itself (the compiled cache, options a server cannot be given) or that
builds no engine at all carries ``@pytest.mark.in_process_only(reason=...)``
(see tests/support/transports.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.engine import helpers
from tests.support import transports

GRPC = "grpc"


def pytest_configure(config: pytest.Config) -> None:
    transports.register(config)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    transports.parametrize(metafunc, GRPC)


def _install(servers: helpers.ServedEngines | None) -> None:
    helpers.served_engines = servers


@pytest.fixture(autouse=True)
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The transport of this run; over gRPC, the servers it started stop at teardown."""
    async for name in transports.run(request, GRPC, helpers.ServedEngines, _install):
        yield name
