"""follow_graph: the one loop that keeps an engine's compiled nodes in step with its loader.

Used by the server's hot reload and by ``trellis run --watch``. A watch stream
that ends or fails is not the end of hot reload: the loop opens a new one with
capped exponential backoff and, since changes made while no watch was open were
not seen, drops every compiled node first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

from trellis.errors import WatchNotSupported
from trellis.ports.engine import EnginePort
from trellis.ports.loader import GraphChange, Watchable

LOG = logging.getLogger("trellis.engine")

FIRST_RETRY_DELAY: Final = 0.5
MAX_RETRY_DELAY: Final = 30.0


async def follow_graph(
    engine: EnginePort,
    loader: Watchable,
    *,
    on_change: Callable[[GraphChange], None] | None = None,
    on_watching: Callable[[bool], None] | None = None,
    first_delay: float = FIRST_RETRY_DELAY,
) -> None:
    """Until cancelled: invalidate the nodes each change names (all of them when it
    names none), then call ``on_change``. ``on_watching(False)`` is called when the
    watch is lost and ``on_watching(True)`` when a new one is open again, so a host
    can report the loader unhealthy meanwhile. Raises WatchNotSupported at once for a
    loader that cannot watch (retrying would never help)."""
    if not callable(getattr(loader, "watch", None)):
        raise WatchNotSupported(f"loader {type(loader).__name__} does not support watching")
    delay = first_delay
    lost = False
    while True:
        stream: Any = None
        try:
            stream = loader.watch()
            if lost and on_watching is not None:
                on_watching(True)
            lost = False
            async for change in stream:
                delay = first_delay
                engine.invalidate(change.node_ids or None)
                if on_change is not None:
                    on_change(change)
            LOG.warning("graph watch ended; re-opening it in %.1fs", delay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            LOG.warning("graph watch failed (%s); re-opening it in %.1fs", _reason(exc), delay)
        finally:
            if stream is not None and hasattr(stream, "aclose"):
                await stream.aclose()
        lost = True
        if on_watching is not None:
            on_watching(False)
        engine.invalidate(None)
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_RETRY_DELAY)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
