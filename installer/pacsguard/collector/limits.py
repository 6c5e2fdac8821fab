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
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_connections: int = 512
    max_connections_per_address: int = 64
    idle_timeout: float = 600.0
    request_timeout: float = 60.0
    max_buffered_bytes: int = 64 * MiB


class Gate:
    """The live accounting of one input against its Limits (event loop only)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.open = 0
        self.by_address: Counter[str] = Counter()
        self.buffered = 0
        self.refused: Counter[str] = Counter()  # reason -> connections or requests refused

    def admit(self, address: str) -> str | None:
        """None when the connection may proceed (then call ``leave``), else the reason it may not."""
        if self.open >= self.limits.max_connections:
            reason = "too_many_connections"
        elif self.by_address[address] >= self.limits.max_connections_per_address:
            reason = "too_many_connections_from_address"
        else:
            self.open += 1
            self.by_address[address] += 1
            return None
        self.refused[reason] += 1
        return reason

    def leave(self, address: str) -> None:
        self.open -= 1
        self.by_address[address] -= 1
        if self.by_address[address] <= 0:
            del self.by_address[address]

    def reserve(self, size: int) -> bool:
        """Claim ``size`` buffered bytes; False (and counted) when the input's budget would be exceeded."""
        if size > 0 and self.buffered + size > self.limits.max_buffered_bytes:
            self.refused["buffer_budget"] += 1
            return False
        self.buffered += size
        return True

    def release(self, size: int) -> None:
        self.buffered = max(0, self.buffered - size)

    def state(self) -> dict[str, object]:
        return {"open": self.open, "buffered_bytes": self.buffered, "refused": dict(self.refused)}
