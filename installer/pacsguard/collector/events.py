"""One event on its way to the cluster, and the ids that make retries safe.

Every event gets its ``_id`` when it is received. The sender writes with
op_type create, so sending the same event twice (a retry after a timeout whose
first attempt did land, a spool replayed after a crash, a file re-read from an
older offset) ends in a 409 "already exists" instead of a duplicate.

How the id is made depends on what makes an event the same event:
- network sources (syslog, HTTP): a random run id + a receive sequence number,
  so two identical messages sent twice by a device stay two events; ids of two
  collector instances (or two runs of one) never meet: each run draws its own;
- an HTTP request with an ``Idempotency-Key`` header: the key + the SHA-256 of
  the body + the entry's place in it, so the sender's retry of a request whose
  answer it lost gets the same ids on whichever instance behind a balancer
  takes it, and lands once (docs/collector.md, several collectors); the same
  key with another body gives other ids: a reused key never loses an event;
- files: device + inode + truncation generation + byte offset + the line,
  so re-reading a file after a restart gives the same ids.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field


def make_id(*parts: str | bytes | int) -> str:
    """20 url-safe characters (120 bits of SHA-256) over the parts."""
    digest = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big"))  # length-prefixed: ("ab","c") != ("a","bc")
        digest.update(data)
    return base64.urlsafe_b64encode(digest.digest()[:15]).decode("ascii")


class NetworkIds:
    """Ids for events that arrive over the network in this run."""

    def __init__(self) -> None:
        self.run_id = secrets.token_hex(12)
        self._seq = itertools.count()

    def next(self, source: str) -> str:
        return make_id("net", self.run_id, source, next(self._seq))


def idempotent_ids(key: str, body: bytes, count: int) -> list[str]:
    """The ids of the ``count`` events of a request sent with ``Idempotency-Key: key``."""
    body_hash = hashlib.sha256(body).digest()
    return [make_id("http-key", key, body_hash, n) for n in range(count)]


def decode(data: bytes) -> tuple[str, bool]:
    """UTF-8 text and whether bytes had to be replaced (counted as decode_errors)."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), True


@dataclass(eq=False)
class Event:
    """The document is always ``{"message": <text>}``: the router reads the rest."""

    id: str
    message: str
    source: str
    # Called once when the event is settled, with ``final``: False when it was
    # refused only for now (shutting down, spool full). The file tailer moves
    # its persisted offset past final events only, so such a line is read
    # again next run instead of being lost.
    on_settled: Callable[[bool], None] | None = None
    # A file line: (the tailer's key, (dev, inode, generation, offset after the line)), journaled with
    # the event so a restart resumes the file after it (journal.py, file checkpoints).
    checkpoint: tuple[str, tuple[int, int, int, int]] | None = None
    settled: bool = field(default=False)
    _line: str | None = field(default=None, repr=False)

    @property
    def doc_line(self) -> str:
        """The bulk source line, serialized once and reused by every retry."""
        if self._line is None:
            self._line = json.dumps({"message": self.message}, ensure_ascii=False)
        return self._line

    @property
    def size(self) -> int:
        return len(self.message) + 64

    def mark_settled(self, final: bool = True) -> None:
        if self.settled:
            return
        self.settled = True
        if self.on_settled is not None:
            self.on_settled(final)
