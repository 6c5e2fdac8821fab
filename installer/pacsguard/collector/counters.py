"""The collector's counters and the invariant they always satisfy.

    received = indexed + failed + spooled + rejected + in_flight

Every event is counted once as received and is, at any moment, in exactly one
of the five states on the right.

- indexed:   the cluster stored it in the data stream (a 409 "already exists"
             on create counts too: an earlier, ambiguous attempt stored it).
- failed:    the cluster stored it in the failure index (the pipeline refused it).
- rejected:  the collector refused it (too big, not syslog, not an AuditEvent,
             journal full, ...): a log line and ``rejected_by_reason`` say why.
- in_flight: in the write-ahead journal, on its way to the cluster.
- spooled:   in the journal while the cluster is unavailable (or the
             collector stopped): it is sent when the cluster (or the next run)
             comes back. In_flight and spooled are one state on disk, named
             by whether the cluster currently takes events.

The counters survive restarts and ``kill -9``: the outcomes of settled events
are saved in the journal's state file together with the journal offsets they
belong to (journal.py), and what the journal still holds is counted as
received (and ``resumed``) at start. Rejections at intake are saved within a
second; a ``kill -9`` in that second can forget their count, never an event.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any, Literal

Outcome = Literal["indexed", "failed", "rejected"]
SIDE_FACTS = ("decode_errors", "atna_errors", "skipped", "retries", "framing_errors", "udp_kernel_drops")


class Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received = 0
        self.indexed = 0
        self.failed = 0
        self.rejected = 0
        self.pending = 0  # in the journal, not settled
        self.parked = False  # pending events wait for the cluster (or the next run): report them as spooled
        # Facts outside the invariant: they explain it, they are not states.
        self.resumed = 0
        self.rejected_by_reason: Counter[str] = Counter()
        self.received_by_source: Counter[str] = Counter()
        self.pending_by_source: Counter[str] = Counter()
        self.decode_errors = 0  # events whose bytes were not UTF-8 (decoded with U+FFFD)
        self.atna_errors = 0  # ATNA frames whose XML did not parse (sent on to the failure index)
        self.skipped = 0  # file lines that are not events (Keycloak server noise); never received
        self.retries = 0  # bulk attempts repeated after a 429 or a connection error
        self.framing_errors = 0  # octet counts that did not frame a syslog message (resynchronised)
        self.udp_kernel_drops = 0  # datagrams the kernel dropped (receive buffer full), read from the kernel
        self.runs = 1
        self.version = 0  # bumped on every change: the saver writes only when it moved
        self.started = time.monotonic()

    # ------------------------------------------------------------ moves

    def receive(self, source: str, count: int = 1) -> None:
        """Events written to the journal."""
        with self._lock:
            self.received += count
            self.pending += count
            self.received_by_source[source] += count
            self.pending_by_source[source] += count
            self.version += 1

    def reject_new(self, source: str, reason: str, count: int = 1) -> None:
        """Received and refused at once (never journaled)."""
        with self._lock:
            self.received += count
            self.rejected += count
            self.received_by_source[source] += count
            self.rejected_by_reason[reason] += count
            self.version += 1

    def settle(self, outcomes: dict[str, int], by_source: dict[str, int]) -> None:
        """Journaled events reached their outcome: {"indexed": n, "failed": n, "rejected:<reason>": n}."""
        with self._lock:
            for key, count in outcomes.items():
                if not count:
                    continue
                outcome, _, reason = key.partition(":")
                setattr(self, outcome, getattr(self, outcome) + count)
                self.pending -= count
                if outcome == "rejected":
                    self.rejected_by_reason[reason or "unknown"] += count
            for source, count in by_source.items():
                self.pending_by_source[source] -= count
                if self.pending_by_source[source] <= 0:
                    del self.pending_by_source[source]
            self.version += 1

    def note(self, name: str, count: int = 1) -> None:
        """Bump a side fact (decode_errors, atna_errors, skipped, retries, framing_errors)."""
        with self._lock:
            setattr(self, name, getattr(self, name) + count)
            self.version += 1

    def set_fact(self, name: str, value: int) -> None:
        with self._lock:
            if getattr(self, name) != value:
                setattr(self, name, value)
                self.version += 1

    # ------------------------------------------------------------ persistence

    def saved(self) -> dict[str, Any]:
        """What the journal's state file keeps: the counts of settled events and side facts."""
        with self._lock:
            settled_sources = self.received_by_source.copy()
            settled_sources.subtract(self.pending_by_source)
            return {"indexed": self.indexed, "failed": self.failed, "rejected": self.rejected,
                    "rejected_by_reason": dict(self.rejected_by_reason),
                    "settled_by_source": {k: v for k, v in settled_sources.items() if v > 0},
                    "runs": self.runs, **{name: getattr(self, name) for name in SIDE_FACTS}}

    def restore(self, saved: dict[str, Any], pending: int, pending_by_source: dict[str, int]) -> None:
        """Start from a previous run: its settled counts, plus what its journal still holds."""
        with self._lock:
            for name in ("indexed", "failed", "rejected", *SIDE_FACTS):
                value = saved.get(name, 0)
                setattr(self, name, int(value) if isinstance(value, int) else 0)
            self.rejected_by_reason = Counter({str(k): int(v) for k, v in (saved.get("rejected_by_reason") or {}).items()})
            self.received_by_source = Counter({str(k): int(v) for k, v in (saved.get("settled_by_source") or {}).items()})
            self.received_by_source.update(pending_by_source)
            self.pending_by_source = Counter(pending_by_source)
            self.pending = pending
            self.resumed = pending
            self.received = self.indexed + self.failed + self.rejected + pending
            self.runs = int(saved.get("runs", 0) or 0) + 1 if saved else 1
            self.version += 1

    # ------------------------------------------------------------ reading

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "received": self.received,
                "indexed": self.indexed,
                "failed": self.failed,
                "spooled": self.pending if self.parked else 0,
                "rejected": self.rejected,
                "in_flight": 0 if self.parked else self.pending,
                "resumed": self.resumed,
                "rejected_by_reason": dict(self.rejected_by_reason),
                "received_by_source": dict(self.received_by_source),
                "decode_errors": self.decode_errors,
                "atna_errors": self.atna_errors,
                "skipped": self.skipped,
                "retries": self.retries,
                "framing_errors": self.framing_errors,
                "udp_kernel_drops": self.udp_kernel_drops,
                "runs": self.runs,
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
