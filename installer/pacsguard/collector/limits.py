"""What one input lets a sender hold: connections, time and buffered bytes.

Without these a few slow senders grow the collector without bound (the issue
measured 80 MB -> 750 MB RSS from 200 TCP connections holding 1 MB partial
frames and 30 HTTP requests holding 15 MB partial bodies). Per input:

- at most ``max_connections`` open connections, and ``max_connections_per_address``
  from one source address; further connections are closed at once and counted;
- a connection that sends nothing for ``idle_timeout`` seconds is closed;
- a frame (TCP/TLS) or an HTTP request (headers and body) must complete within
  ``request_timeout`` seconds of its first byte: trickling bytes does not reset it;
- partial frames and HTTP bodies of all connections of the input together hold
  at most ``max_buffered_bytes``; a connection that would go over is refused
  (HTTP 503) or closed (syslog), and counted.

So an input's memory is bounded by ``max_buffered_bytes`` plus one read
buffer per connection, whatever the senders do.

TLS is admitted before its handshake (issue 16, item 6): a connection is
counted against these limits as soon as it is accepted, and only an admitted
one gets a TLS handshake (with its buffers, about 256 KiB each), so 3,000
pending handshakes from one address cost 64 handshakes, not 3,000.

A few addresses cannot lock the others out: when the input is full, a newcomer
from an address holding fewer connections than the busiest one is let in by
closing the busiest address's connection that has been silent longest (at
least ``evict_silent_after`` seconds without a byte). Counted as
``evicted_silent`` in the input's ``refused``.

Behind a load balancer every connection comes from the balancer's address, which would make
the per-address limit one limit for all senders together. Connections from ``proxies`` (the
balancers' addresses, ``--proxy-from``) are therefore not held to it: a TCP syslog one names
its sender in a PROXY protocol header (connections.py), which is counted instead; an HTTP
or TLS one (nginx's http proxy sends no such header) is counted under the balancer's address
without the per-address cap, and the balancer limits each client (nginx ``limit_conn``).

Connection-level refusals (limits, timeouts, a frame or request never
completed) are facts of the input (``refused`` in /health's ``inputs``), not
events: no complete event arrived, so ``received`` does not count them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import Counter
from dataclasses import dataclass, field

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_connections: int = 512
    max_connections_per_address: int = 64
    idle_timeout: float = 600.0
    request_timeout: float = 60.0
    max_buffered_bytes: int = 64 * MiB
    evict_silent_after: float = 2.0
    proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  # load balancers (--proxy-from)

    def trusts(self, address: str) -> bool:
        """Whether ``address`` is one of the load balancers in front of the collector."""
        if not self.proxies:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.proxies if network.version == ip.version)

    @property
    def handshake_timeout(self) -> float:
        return min(30.0, self.request_timeout)


@dataclass(eq=False)
class Ticket:
    """One admitted connection: its address, its handler task (closed by eviction), when it last sent."""

    address: str
    task: asyncio.Task[object] | None
    last_active: float = field(default_factory=time.monotonic)
    closed: bool = False
    busy: bool = False  # handing events to the journal: never evicted then (they would be lost)

    def touch(self) -> None:
        self.last_active = time.monotonic()


class Gate:
    """The live accounting of one input against its Limits (event loop only)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.open = 0
        self.by_address: Counter[str] = Counter()
        self._tickets: dict[str, set[Ticket]] = {}
        self.buffered = 0
        self.refused: Counter[str] = Counter()  # reason -> connections or requests refused

    def admit(self, address: str, task: asyncio.Task[object] | None = None, capped: bool = True) -> Ticket | str:
        """A Ticket when the connection may proceed (give it back with ``leave``), else the reason it may not.

        ``capped=False``: a balancer's own connection, not held to the per-address limit."""
        if capped and self.by_address[address] >= self.limits.max_connections_per_address:
            return self.refuse("too_many_connections_from_address")
        if self.open >= self.limits.max_connections:
            victim = self._silent_of_busiest(address)
            if victim is None:
                return self.refuse("too_many_connections")
            self.leave(victim)
            self.refused["evicted_silent"] += 1
            if victim.task is not None:
                victim.task.cancel()
        ticket = Ticket(address, task)
        self.open += 1
        self.by_address[address] += 1
        self._tickets.setdefault(address, set()).add(ticket)
        return ticket

    def _silent_of_busiest(self, newcomer: str) -> Ticket | None:
        busiest, held = self.by_address.most_common(1)[0] if self.by_address else ("", 0)
        if held <= self.by_address[newcomer] + 1:
            return None  # the newcomer already holds about as many as anyone: the input is simply full
        quiet_since = time.monotonic() - self.limits.evict_silent_after
        silent = [t for t in self._tickets.get(busiest, ()) if t.last_active <= quiet_since and not t.busy]
        return min(silent, key=lambda t: t.last_active) if silent else None

    def leave(self, ticket: Ticket) -> None:
        if ticket.closed:
            return
        ticket.closed = True
        self.open -= 1
        self.by_address[ticket.address] -= 1
        self._tickets.get(ticket.address, set()).discard(ticket)
        if self.by_address[ticket.address] <= 0:
            del self.by_address[ticket.address]
            self._tickets.pop(ticket.address, None)

    def refuse(self, reason: str) -> str:
        """Count a connection-level refusal (not an event: nothing complete arrived)."""
        self.refused[reason] += 1
        return reason

    def reserve(self, size: int) -> bool:
        """Claim ``size`` buffered bytes; False when the input's budget would be exceeded (the caller refuses)."""
        if size > 0 and self.buffered + size > self.limits.max_buffered_bytes:
            return False
        self.buffered += size
        return True

    def release(self, size: int) -> None:
        self.buffered = max(0, self.buffered - size)

    def state(self) -> dict[str, object]:
        return {"open": self.open, "buffered_bytes": self.buffered, "refused": dict(self.refused)}
