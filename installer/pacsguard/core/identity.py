"""Account keys: the one spelling of an account the rules count by (docs/identity.md).

The enrich pipeline keys every event's names at ingest (pipelines/enrich, painless); the jobs
that write names of their own (the directory) key them here the same way, so an account in the
directory is the account in the events.
"""

from __future__ import annotations

import unicodedata

from pacsguard.core.settings import Identity


def identity_key(value: str, how: Identity) -> str:
    """value keyed as `how` says: Unicode normalization, trim, domain, case (that order, as in enrich)."""
    text = value if how.unicode == "none" else unicodedata.normalize(how.unicode, value)
    if how.trim:
        text = _trim(text)
    if how.domain == "strip":
        text = text[text.find("\\") + 1:] if text.find("\\") > 0 else text
        text = text[:text.find("@")] if text.find("@") > 0 else text
    return text.lower() if how.case == "insensitive" else text


def _blank(ch: str) -> bool:
    # what enrich trims: control characters and spaces up to U+0020, and every Unicode space
    # separator (Zs, Zl, Zp: no-break space, em space, ...), as Java's Character.isSpaceChar
    return ord(ch) <= 0x20 or unicodedata.category(ch) in ("Zs", "Zl", "Zp")


def _trim(text: str) -> str:
    start, end = 0, len(text)
    while start < end and _blank(text[start]):
        start += 1
    while end > start and _blank(text[end - 1]):
        end -= 1
    return text[start:end]
