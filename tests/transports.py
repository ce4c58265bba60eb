"""Running a test directory's tests over two transports: in process, and through a real
server on 127.0.0.1. The directory's conftest calls ``register`` and ``parametrize`` and
gives an autouse ``transport`` fixture that sets the remote mode up. A test that cannot
go over the wire carries ``@pytest.mark.in_process_only(reason=...)`` and is generated
for the in-process transport only (never skipped).
"""

from __future__ import annotations

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
