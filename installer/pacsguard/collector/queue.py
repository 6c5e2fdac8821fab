"""A queue bounded by event count AND bytes, so memory stays bounded.

A count bound alone is not enough: 10 000 events of 1 MiB each would be 10 GiB.
Stream sources (TCP, TLS, files, HTTP) wait in ``put`` when it is full, which
pushes back on the sender (TCP window, HTTP client); UDP cannot wait and uses
``try_put``, whose refusal the caller counts as rejected.
"""

from __future__ import annotations

import asyncio
import collections

from pacsguard.collector.events import Event


class EventQueue:
    """Used from one event loop only, so no lock: a waiter sleeps on ``_changed``,
    an asyncio.Event that every change sets and replaces."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._items: collections.deque[Event] = collections.deque()
        self._bytes = 0
        self._closed = False
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def bytes(self) -> int:
        return self._bytes

    def _fits(self, event: Event) -> bool:
        # An event larger than the byte bound still passes when the queue is
        # empty, or it could never be queued at all.
        if not self._items:
            return True
        return len(self._items) < self.max_events and self._bytes + event.size <= self.max_bytes

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(self, timeout: float | None = None) -> None:
        changed = self._changed
        if timeout is None:
            await changed.wait()
        else:
            try:
                await asyncio.wait_for(changed.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def try_put(self, event: Event) -> bool:
        if self._closed or not self._fits(event):
            return False
        self._items.append(event)
        self._bytes += event.size
        self._notify()
        return True

    async def put(self, event: Event) -> bool:
        """Wait for room; False if the queue was closed (shutting down)."""
        while not self._closed and not self._fits(event):
            await self._wait()
        return self.try_put(event)

    async def get_batch(self, max_events: int, max_bytes: int, linger: float) -> list[Event]:
        """Up to max_events / max_bytes events; waits up to ``linger`` s to fill a batch.

        Returns [] when the queue is closed and empty, or nothing came in time.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + linger
        while len(self._items) < max_events and self._bytes < max_bytes and not self._closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await self._wait(remaining)
        batch: list[Event] = []
        size = 0
        while self._items and len(batch) < max_events:
            event = self._items[0]
            if batch and size + event.size > max_bytes:
                break
            self._items.popleft()
            self._bytes -= event.size
            size += event.size
            batch.append(event)
        if batch:
            self._notify()
        return batch

    def drain(self) -> list[Event]:
        """Everything still queued (shutdown: it goes to the spool)."""
        items = list(self._items)
        self._items.clear()
        self._bytes = 0
        self._notify()
        return items

    def close(self) -> None:
        self._closed = True
        self._notify()
