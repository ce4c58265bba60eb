"""Running a test directory's tests over two transports: in process, and through a real
server on 127.0.0.1. The directory's conftest calls ``register`` and ``parametrize`` and
gives an autouse ``transport`` fixture that sets the remote mode up with ``run``. A test that cannot
go over the wire carries ``@pytest.mark.in_process_only(reason=...)`` and is generated
for the in-process transport only (never skipped).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol, TypeVar

import pytest

IN_PROCESS = "in-process"
MARKER = "in_process_only"


def register(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(reason): a test that runs in process only, not also through a server"
    )


def parametrize(metafunc: pytest.Metafunc, remote: str) -> None:
    """Run the test for [in-process, ``remote``], or in process only when marked."""
    if "transport" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is not None and not marker.kwargs.get("reason"):
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: {MARKER} needs a reason=")
    runs = [IN_PROCESS] if marker is not None else [IN_PROCESS, remote]
    metafunc.parametrize("transport", runs, indirect=True)


def fail_if_unused(remote: str, started: int) -> None:
    """A remote run that started no server tested nothing over the wire."""
    if started == 0:
        pytest.fail(f"the {remote} run of this test started no server: mark it {MARKER}", pytrace=False)


class Servers(Protocol):
    """The servers one remote run of a test started (counted), all stopped by ``aclose``."""

    started: int

    async def aclose(self) -> None: ...


S = TypeVar("S", bound=Servers)


async def run(
    request: pytest.FixtureRequest, remote: str, make: Callable[[], S], install: Callable[[S | None], None]
) -> AsyncIterator[str]:
    """The body of a ``transport`` fixture: yields this run's transport name. For the remote
    run it makes the test's Servers, installs them where the test helpers look for them, and
    at teardown uninstalls and stops them, then fails the test if it started none."""
    name: str = request.param
    if name == IN_PROCESS:
        yield name
        return
    servers = make()
    install(servers)
    try:
        yield name
    finally:
        install(None)
        await servers.aclose()
    fail_if_unused(remote, servers.started)
