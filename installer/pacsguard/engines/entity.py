"""Entity values as the alerts index can hold them, whatever a sender put in an event.

An alert's entity.value is a keyword term; Lucene refuses a term over 32,766 bytes (HTTP 400,
"immense term"), and a long one makes every message unreadable. A value longer than
MAX_CHARS (or MAX_BYTES in UTF-8) is kept as its first PREFIX_CHARS characters, an ellipsis
and a hash of the whole value: still unique per value, so one alert per (rule, entity)
holds, and short. The alert keeps the full value in a field that is not indexed.
"""

from __future__ import annotations

import hashlib

MAX_CHARS = 256
MAX_BYTES = 1024
PREFIX_CHARS = 120


def bounded(value: str) -> str:
    """The value itself when short, else its prefix, '…' and 'sha256:' with 16 hex digits of its hash."""
    if len(value) <= MAX_CHARS and len(value.encode()) <= MAX_BYTES:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    return f"{value[:PREFIX_CHARS]}…sha256:{digest}"


def is_bounded(value: str) -> bool:
    return bounded(value) != value
