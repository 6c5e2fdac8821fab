"""Stream servers that close together with the connections they accepted, and the PROXY
protocol header a load balancer puts before a connection's bytes.

PROXY protocol version 1 (HAProxy's specification, section 2.1; what nginx ``stream`` sends
with ``proxy_protocol on;``): one line ``PROXY TCP4|TCP6 <source> <destination> <source port>
<destination port>\r\n`` of at most 107 bytes, or ``PROXY UNKNOWN ...\r\n``. It is read only
from the balancers' addresses (``--proxy-from``) and only on TCP syslog inputs; from them it is
required, and a connection without it is refused (``proxy_header`` in the input's refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
from collections.abc import Iterator
from typing import Any

from pacsguard.collector.limits import Gate, Ticket

PROXY_V1_MAX = 107  # bytes, CRLF included


def parse_proxy_v1(line: bytes) -> tuple[str, int] | None:
    """The sender (address, port) a PROXY protocol v1 line names; None for ``UNKNOWN``; ValueError if malformed."""
    if not line.startswith(b"PROXY ") or not line.endswith(b"\r\n") or len(line) > PROXY_V1_MAX:
        raise ValueError("not a PROXY protocol v1 header")
    parts = line[:-2].decode("ascii").split(" ")
    if parts[1] == "UNKNOWN":
        return None  # the balancer does not know (a health check of its own): the connection is its own
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ValueError(f"malformed PROXY header {line[:60]!r}")
    source, destination = ipaddress.ip_address(parts[2]), ipaddress.ip_address(parts[3])
    if {source.version, destination.version} != {4 if parts[1] == "TCP4" else 6}:
        raise ValueError(f"PROXY header addresses do not match {parts[1]}")
    if not all(p.isdigit() and len(p) <= 5 and int(p) <= 65535 for p in parts[4:]):
        raise ValueError(f"malformed PROXY header ports {parts[4:]}")
    return str(source), int(parts[4])


def peer_host(writer: asyncio.StreamWriter) -> str:
    address = writer.get_extra_info("peername")
    return address[0] if isinstance(address, tuple) else str(address)


def peer_label(writer: asyncio.StreamWriter) -> str:
    address = writer.get_extra_info("peername")
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)


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

    async def admit(self, gate: Gate, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    proxy_header: bool = False) -> tuple[Ticket | str, str]:
        """Count the connection against the input's limits before anything else (TLS included).

        Returns the ticket (or why it was refused) and the sender (``host:port``, for logs). From a
        balancer (``gate.limits.proxies``): with ``proxy_header`` its PROXY header names the sender,
        who is counted; without, the balancer's own connection is not held to the per-address limit.
        """
        host, label = peer_host(writer), peer_label(writer)
        if not gate.limits.trusts(host):
            return gate.admit(host, asyncio.current_task()), label
        if not proxy_header:
            return gate.admit(host, asyncio.current_task(), capped=False), label
        try:
            async def header() -> bytes:
                start = await reader.readexactly(6)  # not "PROXY ": refused now, not after a timeout
                return start + await reader.readuntil(b"\n") if start == b"PROXY " else start
            sender = parse_proxy_v1(await asyncio.wait_for(header(), gate.limits.handshake_timeout))
        except (ValueError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            return gate.refuse("proxy_header"), label
        if sender is None:
            return gate.admit(host, asyncio.current_task(), capped=False), label
        return gate.admit(sender[0], asyncio.current_task()), f"{sender[0]}:{sender[1]}"

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
