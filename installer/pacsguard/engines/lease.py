"""One leader among any number of `pacsguard watch` instances: a lease document in the cluster.

The lease is one document in the pack's state index. Its holder rewrites it on every tick
with optimistic concurrency (if_seq_no / if_primary_term), so a write by anyone else makes
the holder's next renewal fail with 409 and it knows at once that it lost the lease. A
standby reads the document on every tick and takes it over when it has not changed for
`ttl` seconds of the standby's OWN monotonic clock: no instance compares its clock with
another's, so skewed host clocks cannot hand the lease to two. Every acquisition raises the
lease's epoch; the leader stamps its epoch on what it claims (deliveries), so a claim of an
older epoch is known to belong to an instance that is gone or no longer leads.

The holder counts itself leader only until `renewed + ttl * SAFE_FRACTION` of its own clock
after the last renewal it saw succeed: a standby takes over no sooner than `ttl` after that
renewal was written, so the two never lead at once.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pacsguard.core.connection import ApiError, Cluster
from pacsguard.core.errors import PacsguardError

LEASE_DOC = "watch-lease"
SAFE_FRACTION = 0.75


def instance_id() -> str:
    """Who holds a lease, for a person reading `status`: host, pid and a random part."""
    import os

    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Seen:
    """The lease document as a standby last saw it, and since when (its own clock)."""

    version: tuple[int, int] | None
    since: float


class Lease:
    def __init__(self, cluster: Cluster, index: str, ttl: float, holder: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cluster = cluster
        self.path = f"/{index}/_doc/{LEASE_DOC}"
        self.ttl = ttl
        self.holder = holder or instance_id()
        self.clock = clock
        self.epoch: int | None = None      # set while this instance holds the lease
        self.acquired_at = 0.0             # own clock, when it last became leader
        self.took_over = False             # True when it took the lease from a holder that stopped renewing
        self._version: tuple[int, int] | None = None
        self._valid_until = 0.0
        self._seen = Seen(None, clock())
        self._lock = threading.Lock()

    def valid(self) -> bool:
        """True while this instance may act as the leader (send, write alerts)."""
        return self.epoch is not None and self.clock() < self._valid_until

    def tick(self) -> bool:
        """Renew the lease when held, else try to take it if free or stale. Returns valid()."""
        with self._lock:
            return self._tick()

    def _tick(self) -> bool:
        started = self.clock()
        try:
            if self.epoch is not None:
                self._write(self.epoch, self._version, started)
            else:
                self._try_acquire(started)
        except ApiError as exc:
            if exc.status != 409:
                raise
            self.epoch = None  # someone else wrote the lease: it is theirs now
        except PacsguardError:
            pass  # the cluster is away: the lease runs out on its own (valid() turns False)
        return self.valid()

    def _try_acquire(self, started: float) -> None:
        res = self.cluster.request("GET", self.path, ok_missing=True)
        if not res or not res.get("found"):
            self._write(1, None, started)
            self.took_over = False
            return
        version = (int(res["_seq_no"]), int(res["_primary_term"]))
        if version != self._seen.version:
            self._seen = Seen(version, started)
            return
        if started - self._seen.since >= self.ttl:
            self._write(int(res["_source"].get("epoch", 0)) + 1, version, started)
            self.took_over = True

    def _write(self, epoch: int, version: tuple[int, int] | None, started: float) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        body = {"kind": "watch-lease", "holder": self.holder, "epoch": epoch,
                "renewed_at": now.isoformat(timespec="milliseconds"),
                "expires_at": (now + dt.timedelta(seconds=self.ttl)).isoformat(timespec="milliseconds")}
        if version is None:
            res = self.cluster.request("PUT", self.path, params={"op_type": "create"}, body=body)
        else:
            res = self.cluster.request("PUT", self.path, body=body,
                                       params={"if_seq_no": version[0], "if_primary_term": version[1]})
        if self.epoch != epoch:
            self.acquired_at = started
        self.epoch = epoch
        self._version = (int(res["_seq_no"]), int(res["_primary_term"]))
        self._valid_until = started + self.ttl * SAFE_FRACTION

    def release(self) -> None:
        """Give the lease up at a clean stop, so a standby takes over on its next tick."""
        with self._lock:
            self._release()

    def _release(self) -> None:
        if self.epoch is None or self._version is None:
            return
        self.epoch = None
        try:
            self.cluster.request("DELETE", self.path, ok_missing=True,
                                 params={"if_seq_no": self._version[0], "if_primary_term": self._version[1]})
        except PacsguardError:
            pass  # taken over already, or the cluster is away: the lease runs out on its own


def read_lease(cluster: Cluster, index: str) -> dict[str, Any] | None:
    """The lease document, for `status`: holder, epoch, renewed_at, expires_at."""
    res = cluster.request("GET", f"/{index}/_doc/{LEASE_DOC}", ok_missing=True)
    return dict(res["_source"]) if res and res.get("found") else None
