"""Which share recipients are external: the same rule as the enrich pipeline.

A share is flagged pacs.share.external when at least one recipient is outside
internal_domains, so an external share can still list internal colleagues;
the jobs count only the recipients that are external themselves.
"""

from __future__ import annotations

from collections.abc import Iterable


def internal_set(domains: Iterable[str]) -> frozenset[str]:
    return frozenset(d.strip().lower().lstrip("@") for d in domains if d.strip())


def is_external(recipient: str, internal: frozenset[str]) -> bool:
    text = recipient.strip().lower()
    at = text.rfind("@")
    domain = text[at + 1:] if at >= 0 else ""
    # No domain (a bare id or phone number) cannot be proven internal.
    return domain == "" or domain not in internal
