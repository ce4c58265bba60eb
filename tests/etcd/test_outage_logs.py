"""During an etcd outage a request whose caller gave up still ends (it fails after its
own timeout); its error must be collected, not left to asyncio's "Task exception was
never retrieved" (an ERROR log line per abandoned request)."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging

import pytest

from tests.support.etcd_process import EtcdCluster
from tests.support.tcp_proxy import TcpProxy
from trellis.adapters.etcd import EtcdClient, EtcdConfig
from trellis.adapters.etcd.locker import EtcdLocker


async def test_a_lock_request_abandoned_during_an_outage_leaves_no_unretrieved_error(
    etcd_server: EtcdCluster, etcd_config: EtcdConfig, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = etcd_server.endpoints[0].split(":")
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    client = EtcdClient(dataclasses.replace(etcd_config, endpoints=(proxy.endpoint,), request_timeout=1.0))
    try:
        await client.connect()
        await client.lease(30)  # granted before the outage
        await proxy.cut()
        caplog.set_level(logging.ERROR, logger="asyncio")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):  # the caller gives up long before etcd's timeout
                await EtcdLocker(client).acquire("k", 30)
        # The queue-entry transaction runs on until its own timeout, then fails; its key is
        # then deleted in the background (retried until etcd is back or the client closes).
        async with asyncio.timeout(30):
            while not client._background:  # noqa: ASYNC110 - set by the transaction's end
                await asyncio.sleep(0.02)
        gc.collect()
        unretrieved = [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]
        assert not unretrieved, unretrieved
    finally:
        await client.close()
        await proxy.cut()
