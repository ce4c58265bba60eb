"""What the watch stream logs when etcd refuses a watch: always a reason."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aetcd import rpc

from trellis.adapters.etcd.watch import WatchMux


async def never_opened() -> Any:
    raise AssertionError("the stream is not opened in this test")


@pytest.mark.parametrize("reason", ["", "etcdserver: permission denied"])
def test_a_refused_watch_is_logged_with_a_reason(caplog: pytest.LogCaptureFixture, reason: str) -> None:
    mux = WatchMux(never_opened)
    caplog.set_level(logging.WARNING)
    # What etcd sends when it refuses a create: canceled, watch ID -1, maybe no reason.
    refused = rpc.WatchResponse(watch_id=-1, canceled=True, cancel_reason=reason)
    assert mux._dispatch(refused) is False  # the stream is reopened
    (line,) = [r.getMessage() for r in caplog.records]
    assert "()" not in line and "refused a watch (" in line
    assert (reason or "no reason given") in line
