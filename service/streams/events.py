"""A stream's events: a bounded log with increasing ids, read as Server-Sent Events.

A client that reconnects with ``Last-Event-ID`` gets the events after that id still held (the
newest ``FBIL_STREAM_EVENT_BUFFER``); older ones are gone (a ``gap`` event says how many).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

KEEPALIVE_S = 15.0  # an SSE comment this often keeps proxies from closing an idle stream


@dataclass(frozen=True)
class Event:
    id: int | None  # None: a gap (events no longer held)
    kind: str  # keyframe | rule | state | gap
    data: dict[str, Any]

    def sse(self) -> str:
        """The event as SSE text (one ``data`` line: JSON has no newline)."""
        text = json.dumps(self.data, separators=(",", ":"), allow_nan=False)
        line = "" if self.id is None else f"id: {self.id}\n"
        return f"{line}event: {self.kind}\ndata: {text}\n\n"

    def message(self) -> dict[str, Any]:
        """The event as a WebSocket message: ``{"id", "event", "data"}``."""
        return {"id": self.id, "event": self.kind, "data": self.data}


class EventLog:
    """The newest ``size`` events of a stream; readers wait for new ones on the event loop.
    :meth:`close` (the stream ended) lets every reader finish once it has read all."""

    def __init__(self, size: int) -> None:
        self.events: deque[Event] = deque(maxlen=size)
        self.last_id = 0
        self.closed = False
        self._changed = asyncio.Event()

    def add(self, kind: str, data: dict[str, Any]) -> Event:
        self.last_id += 1
        event = Event(self.last_id, kind, data)
        self.events.append(event)
        self._wake()
        return event

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def after(self, last_id: int) -> list[Event]:
        """The events held with an id above ``last_id``."""
        return [e for e in self.events if e.id > last_id]

    async def watch(
        self, last_id: int, keepalive_s: float = KEEPALIVE_S
    ) -> AsyncIterator[Event | None]:
        """The events after ``last_id`` as they come (first a ``gap`` event, without id, when
        some are no longer held), None after each ``keepalive_s`` without one, until the log
        is closed and read to its end."""
        first = self.events[0].id if self.events else self.last_id + 1
        if last_id + 1 < first and last_id < self.last_id:
            yield Event(None, "gap", {"missed": first - last_id - 1})
        while True:
            changed = self._changed
            for event in self.after(last_id):
                last_id = event.id  # type: ignore[assignment]
                yield event
            if self.closed:
                return
            try:
                await asyncio.wait_for(changed.wait(), keepalive_s)
            except TimeoutError:
                yield None

    async def follow(self, last_id: int, keepalive_s: float = KEEPALIVE_S) -> AsyncIterator[str]:
        """:meth:`watch` as Server-Sent Events text (a comment to keep the connection)."""
        yield "retry: 1000\n\n"
        async for event in self.watch(last_id, keepalive_s):
            yield ": keep-alive\n\n" if event is None else event.sse()


def last_event_id(header: str | None) -> int:
    """The id a resuming client sent (0: from the oldest held)."""
    try:
        return max(int((header or "0").strip()), 0)
    except ValueError:
        return 0
