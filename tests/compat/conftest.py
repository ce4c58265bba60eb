"""The compat tests run twice: over an in-process SessionManager, and through a real
server's Sessions service with the SDK (``open_manager`` in compat_flows.py serves the
flow). Tests that drive no sessions carry ``@pytest.mark.in_process_only(reason=...)``
(see tests/support/transports.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support import compat_flows, transports

SESSIONS = "sessions"


def pytest_configure(config: pytest.Config) -> None:
    transports.register(config)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    transports.parametrize(metafunc, SESSIONS)


def _install(servers: compat_flows.ServedFlows | None) -> None:
    compat_flows.served_flows = servers


@pytest.fixture(autouse=True)
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The transport of this run; through Sessions, the servers it started stop at teardown."""
    async for name in transports.run(request, SESSIONS, compat_flows.ServedFlows, _install):
        yield name
