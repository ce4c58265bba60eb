"""QueueStream: the watch stream every loader and session watch hands out."""

from __future__ import annotations

import asyncio
import gc

import pytest

from trellis.ports.loader import GraphChange
from trellis.streams import QueueStream


def change(revision: int) -> GraphChange:
    return GraphChange(node_ids=frozenset({f"n{revision}"}), revision=revision)


async def test_queued_changes_come_out_in_order_then_the_end_stays_the_end() -> None:
    stream = QueueStream[GraphChange]()
    stream.publish(change(1))
    stream.publish(change(2))
    assert not stream.closed
    stream.end()
    assert stream.closed
    stream.publish(change(3))  # after the end: dropped
    async with asyncio.timeout(10):
        assert [c.revision async for c in stream] == [1, 2]
        with pytest.raises(StopAsyncIteration):
            await anext(stream)  # and again: still ended
        with pytest.raises(StopAsyncIteration):
            await anext(stream)


async def test_aclose_ends_the_stream_releases_the_source_once_and_waits_for_it() -> None:
    released: list[QueueStream[GraphChange]] = []
    waited: list[bool] = []

    async def wait_closed() -> None:
        await asyncio.sleep(0)
        waited.append(True)

    stream = QueueStream[GraphChange](on_close=released.append, wait_closed=wait_closed)
    await stream.aclose()
    assert stream.closed and released == [stream] and waited == [True]
    await stream.aclose()
    assert released == [stream] and waited == [True]  # only once
    async with asyncio.timeout(10):
        assert [c async for c in stream] == []


async def test_a_dropped_stream_releases_its_source() -> None:
    released: list[object] = []
    QueueStream[GraphChange](on_close=released.append)
    gc.collect()
    assert len(released) == 1

    def broken(stream: QueueStream[GraphChange]) -> None:
        raise RuntimeError("source gone")

    QueueStream[GraphChange](on_close=broken)  # its failure is swallowed: nothing to tell during collection
    gc.collect()
