"""Profiles job: what each user normally logs in from and shares with.

Signals 2a/2b (login from a new country, region or device), 4c (escalation
after such a login) and 5b (new external recipients) ask "has this user been
seen with this value in the history window?". A monitor cannot answer that
join in one query at scale, so this job writes one document per
(user, kind, value) and marks profile.new on a value first seen within the
lookback for a user who already had another value of that kind before it
(docs/design.md). A brand-new user's first login is not "a new country": there is
nothing it differs from.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings, duration_seconds
from pacsguard.core.vocabulary import vocabulary
from pacsguard.jobs.clock import RunClock, start_run
from pacsguard.jobs.composite import (
    MAX_PAGE_SIZE,
    PageCounter,
    by_user,
    iter_composite,
    require_index,
    time_range,
)
from pacsguard.jobs.recipients import internal_set, is_external
from pacsguard.jobs.report import JobReport, iso_ms
from pacsguard.jobs.writer import BulkWriter, finish_run, job_stamp

MIN_LOOKBACK_SECONDS = 15 * 60
MAX_ID_BYTES = 256  # OpenSearch refuses ids over 512 bytes; long ones are hashed well before that
USER, VALUE = "user", "value"


@dataclass(frozen=True)
class Kind:
    name: str
    field: str
    filters: list[dict[str, Any]]


@dataclass(frozen=True)
class Seen:
    value: str
    first_ms: int
    last_ms: int
    count: int


def kinds() -> list[Kind]:
    """One Kind per profile kind of the vocabulary (pack/schema.yaml profile_kinds)."""
    feeds: dict[str, list[dict[str, Any]]] = {
        "login": [{"term": {"event.action": "user-login"}}, {"term": {"event.outcome": "success"}}],
        "external_share": [{"term": {"event.action": "share-create"}}, {"term": {"pacs.share.external": True}},
                           {"bool": {"must_not": [{"term": {"event.outcome": "failure"}}]}}],
    }
    return [Kind(name, kind.field, feeds[kind.events]) for name, kind in vocabulary().profile_kinds.items()]


def profile_id(kind: str, user: str, value: str) -> str:
    plain = f"{kind}:{user}:{value}"
    if len(plain.encode()) <= MAX_ID_BYTES:
        return plain
    return f"{kind}:sha256:{hashlib.sha256(plain.encode()).hexdigest()}"


def new_values(seen: list[Seen], lookback_start_ms: int) -> set[str]:
    """Values first seen in the lookback while the user already had an earlier one of the same kind.

    A value seen earlier in the history window (a returning country) has an old
    first_seen and is not new; a user's very first value has nothing before it.
    """
    if not seen:
        return set()
    earliest = min(s.first_ms for s in seen)
    return {s.value for s in seen if s.first_ms >= lookback_start_ms and s.first_ms > earliest}


def _seen(buckets: Iterable[dict[str, Any]], kind: Kind, internal: frozenset[str]) -> list[Seen]:
    out = []
    for b in buckets:
        value = str(b["key"][VALUE])
        if kind.name == "recipient" and not is_external(value, internal):
            continue  # an internal colleague on an external share is not an external recipient
        out.append(Seen(value, int(b["first"]["value"]), int(b["last"]["value"]), int(b["doc_count"])))
    return out


def _document(clock: RunClock, kind: Kind, user: str, s: Seen, new: bool, window: str,
              doc_id: str) -> dict[str, Any]:
    return {
        # Dated when the value first appeared in the history window: a marker is found by a
        # monitor in its own window, and "recipients first seen in the last 24 h" (5b) is a range.
        "@timestamp": iso_ms(s.first_ms),
        "user": {"name": user},
        "profile": {"kind": kind.name, "value": s.value, "first_seen": iso_ms(s.first_ms),
                    "last_seen": iso_ms(s.last_ms), "count": s.count, "new": new, "window": window},
        "job": job_stamp(clock.run_id, clock.now_iso, doc_id),
    }


def feed_query() -> dict[str, Any]:
    """The events any profile kind is made of (a successful login, an external share)."""
    return {"bool": {"should": [{"bool": {"filter": k.filters}} for k in kinds()], "minimum_should_match": 1}}


def run_profiles(cluster: Cluster, settings: Settings, *, now: dt.datetime | None = None,
                 lookback_seconds: int | None = None, page_size: int = MAX_PAGE_SIZE,
                 stop: threading.Event | None = None, users: list[str] | None = None) -> JobReport:
    """Rewrite every user's profile from the history window and mark values new in the lookback.

    lookback_seconds defaults to default_lookback() for a single run. users: only theirs, from
    the same history (an incremental run for the users with new events, as `watch` makes before
    the rules that read profiles); it deletes nothing: the full run keeps the rest.
    """
    began = time.monotonic()
    if lookback_seconds is None:
        lookback_seconds = default_lookback(settings, None)
    clock = start_run(now)
    events, target = settings.index("events_data_stream"), settings.index("profiles")
    require_index(cluster, events, "events data stream")
    require_index(cluster, target, "profiles index", ("job.run_id", "job.key", "profile.new"))
    window = settings.thresholds.profile_history_window
    start_ms = clock.now_ms - duration_seconds(window) * 1000
    lookback_start_ms = clock.now_ms - lookback_seconds * 1000
    internal = internal_set(settings.internal_domains)
    report = JobReport("profiles", clock.run_id, clock.now_iso)
    counter = PageCounter()
    writer = BulkWriter(cluster, target, flush_every=page_size)
    aggs = {"first": {"min": {"field": "@timestamp"}}, "last": {"max": {"field": "@timestamp"}}}
    for kind in kinds():
        only = [] if users is None else [{"terms": {"user.name": users}}]
        query = {"bool": {"filter": [*kind.filters, *only,
                                     time_range("@timestamp", start_ms, clock.now_ms, include_end=True)]}}
        sources = [{USER: {"terms": {"field": "user.name"}}}, {VALUE: {"terms": {"field": kind.field}}}]
        buckets = iter_composite(cluster, events, query, sources, aggs, page_size, counter, stop)
        n_users = 0
        for user, group in by_user(buckets, USER):
            seen = _seen(group, kind, internal)
            fresh = new_values(seen, lookback_start_ms)
            for s in seen:
                doc_id = profile_id(kind.name, user, s.value)
                writer.put(doc_id, _document(clock, kind, user, s, s.value in fresh, window, doc_id))
            report.markers += len(fresh)
            n_users += 1 if seen else 0
        report.users[kind.name] = n_users
    return finish_run(cluster, writer, target, clock.run_id, report, counter.pages, began, page_size,
                      sweep=users is None)


def default_lookback(settings: Settings, every_seconds: int | None) -> int:
    """How long a new value stays marked: twice the job interval, at least 15 minutes,
    and at least the escalation window.

    Twice the interval lets a marker survive one missed or late run. The
    escalation window matters too: rule 4c raises an export to critical when a
    new-device/country marker exists up to escalation_window (60m) before it, so
    a marker cleared after 15 minutes would hide a login 40 minutes earlier.
    """
    escalation = duration_seconds(settings.thresholds.escalation_window)
    return max(MIN_LOOKBACK_SECONDS, escalation, 2 * every_seconds if every_seconds else 0)
