"""The collector's counters and the invariant they always satisfy.

    received = indexed + failed + spooled + rejected + in_flight

Every event is counted once as received and is, at any moment, in exactly one
of the five states on the right. Moves between states go through the methods
below, which change two numbers together under one lock, so a snapshot taken
from any thread (tests, the progress line, the HTTP /health answer) always
reconciles.

- indexed:   the cluster stored it in the data stream (a 409 "already exists"
             on create counts too: an earlier, ambiguous attempt stored it).
- failed:    the cluster stored it in the failure index (the pipeline refused it).
- spooled:   it waits in the on-disk spool for the cluster to come back.
- rejected:  the collector refused it (too big, not syslog, not an AuditEvent,
             spool full, ...): a log line and ``rejected_by_reason`` say why.
- in_flight: received, not yet settled (in the queue or in a bulk request).

Events left in the spool by a previous run are counted as received (and
``resumed``) at start, so the invariant holds across restarts too.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any, Literal

Outcome = Literal["indexed", "failed", "rejected", "spooled"]
Origin = Literal["in_flight", "spooled"]


class Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received = 0
        self.indexed = 0
        self.failed = 0
        self.spooled = 0
        self.rejected = 0
        self.in_flight = 0
        # Facts outside the invariant: they explain it, they are not states.
        self.resumed = 0
        self.rejected_by_reason: Counter[str] = Counter()
        self.received_by_source: Counter[str] = Counter()
        self.decode_errors = 0  # events whose bytes were not UTF-8 (decoded with U+FFFD)
        self.atna_errors = 0  # ATNA frames whose XML did not parse (sent on to the failure index)
        self.skipped = 0  # file lines that are not events (Keycloak server noise); never received
        self.retries = 0  # bulk attempts repeated after a 429 or a connection error
        self.started = time.monotonic()

    # ------------------------------------------------------------ moves

    def receive(self, source: str, count: int = 1) -> None:
        with self._lock:
            self.received += count
            self.in_flight += count
            self.received_by_source[source] += count

    def reject_new(self, source: str, reason: str, count: int = 1) -> None:
        """Received and refused at once (never in flight)."""
        with self._lock:
            self.received += count
            self.rejected += count
            self.received_by_source[source] += count
            self.rejected_by_reason[reason] += count

    def settle(self, origin: Origin, outcome: Outcome, count: int = 1, reason: str | None = None) -> None:
        """Move events from in_flight or spooled to their outcome."""
        if count <= 0 or origin == outcome:
            return
        with self._lock:
            setattr(self, origin, getattr(self, origin) - count)
            setattr(self, outcome, getattr(self, outcome) + count)
            if outcome == "rejected":
                self.rejected_by_reason[reason or "unknown"] += count

    def resume(self, count: int) -> None:
        """Events a previous run left in the spool."""
        with self._lock:
            self.received += count
            self.spooled += count
            self.resumed += count
            self.received_by_source["spool"] += count

    def note(self, name: str, count: int = 1) -> None:
        """Bump a side fact (decode_errors, atna_errors, skipped, retries)."""
        with self._lock:
            setattr(self, name, getattr(self, name) + count)

    # ------------------------------------------------------------ reading

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "received": self.received,
                "indexed": self.indexed,
                "failed": self.failed,
                "spooled": self.spooled,
                "rejected": self.rejected,
                "in_flight": self.in_flight,
                "resumed": self.resumed,
                "rejected_by_reason": dict(self.rejected_by_reason),
                "received_by_source": dict(self.received_by_source),
                "decode_errors": self.decode_errors,
                "atna_errors": self.atna_errors,
                "skipped": self.skipped,
                "retries": self.retries,
                "uptime_seconds": round(time.monotonic() - self.started, 3),
            }

    def reconciles(self) -> bool:
        snap = self.snapshot()
        return snap["received"] == sum(snap[k] for k in ("indexed", "failed", "spooled", "rejected", "in_flight"))


class Throughput:
    """events/s of settled events (indexed + failed) since the previous call."""

    def __init__(self, counters: Counters) -> None:
        self._counters = counters
        self._last_time = time.monotonic()
        self._last_done = 0

    def rate(self) -> float:
        now = time.monotonic()
        snap = self._counters.snapshot()
        done = snap["indexed"] + snap["failed"]
        elapsed = max(now - self._last_time, 1e-9)
        rate = (done - self._last_done) / elapsed
        self._last_time, self._last_done = now, done
        return rate


def progress_line(snap: dict[str, Any], rate: float) -> str:
    line = (f"received {snap['received']}  indexed {snap['indexed']}  failed {snap['failed']}  "
            f"spooled {snap['spooled']}  rejected {snap['rejected']}  in_flight {snap['in_flight']}  "
            f"| {rate:.1f} events/s")
    if snap["rejected_by_reason"]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(snap["rejected_by_reason"].items()))
        line += f"  (rejected: {reasons})"
    return line
