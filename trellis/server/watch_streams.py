"""WatchStreams: a server's budget of concurrent watch streams (GraphLoader.Watch and
Sessions.Watch together).

A watch stream is cheap for its caller and lives for as long as the caller
likes, while the server holds a queue, a subscription and an HTTP/2 stream for
it; without a bound any caller can open them until the server (or, for graph
watches before they were shared, the user's inotify instances) runs out. Beyond
the limit a new stream is refused with RESOURCE_EXHAUSTED / TOO_MANY_WATCH_STREAMS
and the open ones keep working.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from trellis.errors import TooManyWatchStreams

DEFAULT_MAX_WATCH_STREAMS: Final = 256


class WatchStreams:
    """Counts open watch streams; one instance per server, shared by its services.
    Used from the event loop only, so a plain counter is enough."""

    def __init__(self, limit: int = DEFAULT_MAX_WATCH_STREAMS) -> None:
        self.limit = limit
        self._open = 0

    @property
    def open(self) -> int:
        return self._open

    @contextmanager
    def slot(self, rpc: str) -> Iterator[None]:
        """Hold one stream's place for the ``with`` block; TooManyWatchStreams when full."""
        if self._open >= self.limit:
            raise TooManyWatchStreams(
                f"{rpc}: this server already serves {self._open} watch streams, its limit "
                f"(max_watch_streams={self.limit}); close one or retry later"
            )
        self._open += 1
        try:
            yield
        finally:
            self._open -= 1
