"""Paging through events with a composite aggregation, one bounded page at a time.

A terms aggregation over user.name would hold every user in one response (and
hit search.max_buckets on a large site); a composite aggregation returns at
most `page_size` buckets per request plus an `after_key` to resume from, sorted
by its sources. The jobs rely on that order: buckets of one user arrive
consecutively, so itertools.groupby over this iterator sees each user exactly
once, even when a user's buckets straddle two pages.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pacsguard.core.connection import Cluster
from pacsguard.core.errors import PacsguardError
from pacsguard.jobs.report import JobStopped

# docs/design.md: pages of at most 10,000 buckets, well under search.max_buckets (65,535). Every page
# scans all the events its query matches to find the next buckets, so the page count sets a run's
# time: at 10^5 users one kind of profile is 111 pages of 1000 (5.4 s) or 12 of 10,000 (1.8 s).
MAX_PAGE_SIZE = 10_000


@dataclass
class PageCounter:
    pages: int = 0


def time_range(field: str, start_ms: int, end_ms: int, include_end: bool = False) -> dict[str, Any]:
    upper = "lte" if include_end else "lt"
    return {"range": {field: {"gte": start_ms, upper: end_ms, "format": "epoch_millis"}}}


def iter_composite(
    cluster: Cluster,
    index: str,
    query: dict[str, Any],
    sources: list[dict[str, Any]],
    aggs: dict[str, Any] | None = None,
    page_size: int = MAX_PAGE_SIZE,
    counter: PageCounter | None = None,
    stop: threading.Event | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield every composite bucket of `query` over `index`, in source order."""
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise PacsguardError(f"page size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
    after: dict[str, Any] | None = None
    while True:
        if stop is not None and stop.is_set():
            raise JobStopped()
        composite: dict[str, Any] = {"size": page_size, "sources": sources}
        if after is not None:
            composite["after"] = after
        body: dict[str, Any] = {
            "size": 0,
            "track_total_hits": False,
            "query": query,
            "aggs": {"page": {"composite": composite, **({"aggs": aggs} if aggs else {})}},
        }
        res = cluster.request("POST", f"/{index}/_search", body=body)
        if counter is not None:
            counter.pages += 1
        page = res.get("aggregations", {}).get("page", {})
        buckets: list[dict[str, Any]] = page.get("buckets", [])
        yield from buckets
        after = page.get("after_key")
        # A short page is the last one: saves the empty request at the end.
        if after is None or len(buckets) < page_size:
            return


def require_index(cluster: Cluster, name: str, what: str, fields: tuple[str, ...] = ()) -> None:
    """Fail with a clear line instead of auto-creating an unmapped index or writing
    fields an older mapping ignores (the reference indices are dynamic: false)."""
    if not cluster.exists(f"/{name}"):
        raise PacsguardError(f"{what} {name} does not exist at {cluster.url}: run `pacsguard install` first")
    if fields:
        res = cluster.request("GET", f"/{name}/_mapping/field/{','.join(fields)}")
        mapped = {f for body in res.values() for f in body.get("mappings", {})}
        missing = sorted(set(fields) - mapped)
        if missing:
            raise PacsguardError(f"{what} {name} lacks the mapping of {', '.join(missing)} (installed by an "
                                 "older pack): run `pacsguard install` to update it")


def by_user(buckets: Iterator[dict[str, Any]], source: str = "user") -> Iterator[tuple[str, Iterator[dict[str, Any]]]]:
    """(user, that user's buckets) in order: the user source comes first, so each user's buckets are consecutive."""
    for user, group in itertools.groupby(buckets, key=lambda b: b["key"][source]):
        yield str(user), group
