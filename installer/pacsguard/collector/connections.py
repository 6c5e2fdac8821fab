"""Stream servers that close together with the connections they accepted."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator
from typing import Any

from pacsguard.collector.limits import Gate, Ticket


def peer_host(writer: asyncio.StreamWriter) -> str:
    address = writer.get_extra_info("peername")
    return address[0] if isinstance(address, tuple) else str(address)


async def start_tls(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, context: ssl.SSLContext,
                    timeout: float) -> bool:
    """The TLS handshake of an admitted connection (the listener itself is plain TCP, so the gate
    decides before any TLS state exists); False when it failed or did not finish in time."""
    if getattr(reader, "_buffer", b""):
        return False  # bytes read before the handshake began: the stream cannot be TLS from its start
    try:
        if hasattr(writer, "start_tls"):  # Python 3.11+
            await writer.start_tls(context, ssl_handshake_timeout=timeout)
        else:  # Python 3.10: the steps StreamWriter.start_tls takes in 3.11
            protocol: Any = writer.transport.get_protocol()
            transport = await asyncio.get_running_loop().start_tls(
                writer.transport, protocol, context, server_side=True, ssl_handshake_timeout=timeout)
            writer._transport = transport  # type: ignore[attr-defined]
            protocol._transport, protocol._over_ssl = transport, True
    except (ssl.SSLError, ConnectionError, OSError, asyncio.TimeoutError):
        return False
    return True


class TrackedServer:
    """Base of the TCP/TLS syslog and HTTP servers: close() stops accepting,
    cancels the open connections and waits for them, so a shutdown flushes
    what they already handed over and loses nothing mid-frame."""

    def __init__(self) -> None:
        self.server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def admit(self, gate: Gate, writer: asyncio.StreamWriter) -> Ticket | str:
        """Count the connection against the input's limits before anything else (TLS included)."""
        return gate.admit(peer_host(writer), asyncio.current_task())

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
