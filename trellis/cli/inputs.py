"""Everything the runner waits for, as one stream of events: typed lines, end of
input, Ctrl+C, an input deadline passing, and flow files changing (``--watch``).

Standard input is read by a daemon thread (a blocking read cannot be cancelled,
so a deadline must not abandon a half-read line: the thread keeps it for the
next wait). Lines are decoded as UTF-8 with invalid bytes kept as surrogates,
so the sanitiser can reject them instead of the decoder crashing.
"""

from __future__ import annotations

import asyncio
import enum
import os
import signal
import threading
from dataclasses import dataclass
from typing import BinaryIO


class EventKind(enum.Enum):
    LINE = "line"
    EOF = "eof"
    INTERRUPT = "interrupt"
    TIMEOUT = "timeout"
    RELOAD = "reload"


@dataclass(frozen=True, slots=True)
class InputEvent:
    kind: EventKind
    text: str = ""


class InputSource:
    """Use as ``async with InputSource(stream) as inputs``: installs the Ctrl+C handler."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._queue: asyncio.Queue[InputEvent] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._eof = False
        self._waiting = False
        self._pending_interrupts = 0
        self._main_task: asyncio.Task[object] | None = None

    async def __aenter__(self) -> InputSource:
        self._loop = asyncio.get_running_loop()
        self._main_task = asyncio.current_task()
        try:
            self._loop.add_signal_handler(signal.SIGINT, self._on_interrupt)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signal support
            pass
        threading.Thread(target=self._read_lines, name="trellis-stdin", daemon=True).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._loop is not None:
            try:
                self._loop.remove_signal_handler(signal.SIGINT)
            except (NotImplementedError, RuntimeError):
                pass

    def _read_lines(self) -> None:
        # os.read on the descriptor, not the buffered file object: a daemon thread blocked
        # inside a BufferedReader holds its lock, and Python aborts at exit on that lock.
        fd = self._stream.fileno()
        pending = b""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except InterruptedError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                if pending:
                    self._put_line(pending)
                self._put_threadsafe(InputEvent(EventKind.EOF))
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                self._put_line(line)

    def _put_line(self, raw: bytes) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        self._put_threadsafe(InputEvent(EventKind.LINE, raw.decode("utf-8", errors="surrogateescape")))

    def _put_threadsafe(self, event: InputEvent) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the loop is closed: the program is exiting
            pass

    def _on_interrupt(self) -> None:
        # Ctrl+C while a prompt waits becomes the `interrupt` signal. Pressed while a
        # tool runs, it is kept for the next prompt; pressed again, it stops the program.
        if not self._waiting and self._pending_interrupts and self._main_task is not None:
            self._main_task.cancel()
            return
        if not self._waiting:
            self._pending_interrupts += 1
        self._queue.put_nowait(InputEvent(EventKind.INTERRUPT))

    def notify_reload(self) -> None:
        self._queue.put_nowait(InputEvent(EventKind.RELOAD))

    def drop_reloads(self) -> None:
        """Forget reload events already queued (the caller just re-read the flow)."""
        kept = [e for e in self._drain() if e.kind is not EventKind.RELOAD]
        for event in kept:
            self._queue.put_nowait(event)

    def _drain(self) -> list[InputEvent]:
        events: list[InputEvent] = []
        while not self._queue.empty():
            events.append(self._queue.get_nowait())
        return events

    async def next(self, deadline: float = 0.0) -> InputEvent:
        """The next event; TIMEOUT when ``deadline`` (seconds, 0 = none) passes first."""
        if self._eof:
            return InputEvent(EventKind.EOF)
        self._waiting = True
        try:
            if deadline > 0:
                try:
                    event = await asyncio.wait_for(self._queue.get(), deadline)
                except TimeoutError:
                    return InputEvent(EventKind.TIMEOUT)
            else:
                event = await self._queue.get()
        finally:
            self._waiting = False
        if event.kind is EventKind.INTERRUPT:
            self._pending_interrupts = 0
        if event.kind is EventKind.EOF:
            self._eof = True
        return event
