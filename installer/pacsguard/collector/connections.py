"""Stream servers that close together with the connections they accepted."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any


class TrackedServer:
    """Base of the TCP/TLS syslog and HTTP servers: close() stops accepting,
    cancels the open connections and waits for them, so a shutdown flushes
    what they already handed over and loses nothing mid-frame."""

    def __init__(self) -> None:
        self.server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @contextlib.contextmanager
    def tracked(self) -> Iterator[None]:
        """Wrap a connection handler so close() can cancel it."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            yield
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()
