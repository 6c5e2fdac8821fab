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
import heapq
import itertools
import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings, duration_seconds
from pacsguard.core.vocabulary import vocabulary
from pacsguard.engines.core import INGESTED
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
from pacsguard.jobs.writer import BULK_DOCS, BulkWriter, finish_run, job_stamp, refresh, sweep_stale

MIN_LOOKBACK_SECONDS = 15 * 60
MAX_ID_BYTES = 256  # OpenSearch refuses ids over 512 bytes; long ones are hashed well before that
USER, VALUE = "user", "value"
CHECKPOINT_ID = "job:profiles"  # in the state index: what the last run covered
CHECKPOINT_FORMAT = 1  # raise when the documents a run writes change shape: the next run is full
ARRIVAL_OVERLAP_SECONDS = 60  # arrivals looked at again: an event indexed just before a run, not yet visible
CHUNK_USERS = 10_000  # users per terms filter in an incremental run (a terms filter takes at most 65,536)


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
    first = iso_ms(s.first_ms)
    return {
        # Dated when the value first appeared in the history window: a marker is found by a
        # monitor in its own window, and "recipients first seen in the last 24 h" (5b) is a range.
        "@timestamp": first,
        "user": {"name": user},
        "profile": {"kind": kind.name, "value": s.value, "first_seen": first,
                    "last_seen": iso_ms(s.last_ms), "count": s.count, "new": new, "window": window},
        "job": job_stamp(clock.run_id, clock.now_iso, doc_id),
    }


def feed_query() -> dict[str, Any]:
    """The events any profile kind is made of (a successful login, an external share)."""
    return {"bool": {"should": [{"bool": {"filter": k.filters}} for k in kinds()], "minimum_should_match": 1}}


@dataclass
class _Pass:
    """What one run writes the profiles with: its clock, windows, writer and report."""

    cluster: Cluster
    events: str
    clock: RunClock
    window: str
    start_ms: int
    lookback_start_ms: int
    internal: frozenset[str]
    page_size: int
    stop: threading.Event | None
    writer: BulkWriter
    report: JobReport
    counter: PageCounter

    def write(self, users: list[str] | None) -> None:
        """Rewrite the profiles of `users` (None: of everyone) from the history window."""
        aggs = {"first": {"min": {"field": "@timestamp"}}, "last": {"max": {"field": "@timestamp"}}}
        for kind in kinds():
            only = [] if users is None else [{"terms": {"user.name": users}}]
            query = {"bool": {"filter": [*kind.filters, *only,
                                         time_range("@timestamp", self.start_ms, self.clock.now_ms, include_end=True)]}}
            sources = [{USER: {"terms": {"field": "user.name"}}}, {VALUE: {"terms": {"field": kind.field}}}]
            buckets = iter_composite(self.cluster, self.events, query, sources, aggs, self.page_size, self.counter,
                                     self.stop)
            n_users = 0
            for user, group in by_user(buckets, USER):
                seen = _seen(group, kind, self.internal)
                fresh = new_values(seen, self.lookback_start_ms)
                for s in seen:
                    doc_id = profile_id(kind.name, user, s.value)
                    self.writer.put(doc_id, _document(self.clock, kind, user, s, s.value in fresh, self.window,
                                                      doc_id))
                self.report.markers += len(fresh)
                n_users += 1 if seen else 0
            self.report.users[kind.name] = self.report.users.get(kind.name, 0) + n_users


def run_profiles(cluster: Cluster, settings: Settings, *, now: dt.datetime | None = None,
                 lookback_seconds: int | None = None, page_size: int = MAX_PAGE_SIZE,
                 stop: threading.Event | None = None, users: list[str] | None = None,
                 full: bool = False) -> JobReport:
    """Bring every user's profile up to date with the history window and mark values new in the lookback.

    A full run rewrites every profile and deletes what it did not rewrite. An incremental run
    (the default once a full run left its checkpoint, docs/baselines.md) rewrites only the users
    whose profiles can differ from what a full run would write now, and deletes their values gone
    from the window: the same documents, for a fraction of the work. full=True forces a full run.
    lookback_seconds defaults to default_lookback() for a single run. users: only theirs (as
    `watch` makes before the rules that read profiles); it deletes nothing and leaves the checkpoint.
    """
    began = time.monotonic()
    if lookback_seconds is None:
        lookback_seconds = default_lookback(settings, None)
    clock = start_run(now)
    events, target = settings.index("events_data_stream"), settings.index("profiles")
    require_index(cluster, events, "events data stream")
    require_index(cluster, target, "profiles index", ("job.run_id", "job.key", "profile.new"))
    window = settings.thresholds.profile_history_window
    report = JobReport("profiles", clock.run_id, clock.now_iso)
    run = _Pass(cluster, events, clock, window, clock.now_ms - duration_seconds(window) * 1000,
                clock.now_ms - lookback_seconds * 1000, internal_set(settings.internal_domains), page_size, stop,
                BulkWriter(cluster, target, flush_every=min(page_size, BULK_DOCS), background=True), report, PageCounter())
    if users is not None:
        report.mode = "users"
        run.write(users)
        return finish_run(cluster, run.writer, target, clock.run_id, report, run.counter.pages, began, page_size,
                          sweep=False)
    state = settings.index("state")
    recorded = cluster.exists(f"/{state}")
    marks = _marks(settings, lookback_seconds, cluster, target)
    since = None if full or not recorded else _incremental_since(cluster, state, marks, clock, settings)
    if since is None:
        run.write(None)
        finish_run(cluster, run.writer, target, clock.run_id, report, run.counter.pages, began, page_size)
        full_at = clock.now_ms
    else:
        report.mode = "incremental"
        for chunk in _chunks(_to_refresh(run, target, since), CHUNK_USERS):
            run.write(chunk)
            run.writer.flush()
            refresh(cluster, target)
            report.deleted += sweep_stale(cluster, run.writer, clock.run_id, page_size,
                                          within={"terms": {"user.name": chunk}})
        finish_run(cluster, run.writer, target, clock.run_id, report, run.counter.pages, began, page_size,
                   sweep=False)
        full_at = since[1]
    if recorded:
        cluster.request("PUT", f"/{state}/_doc/{CHECKPOINT_ID}", params={"refresh": "true"},
                        body={**marks, "now_ms": clock.now_ms, "run_at": clock.now_iso, "full_at_ms": full_at})
    report.seconds = round(time.monotonic() - began, 3)
    return report


def _marks(settings: Settings, lookback_seconds: int, cluster: Cluster, target: str) -> dict[str, str]:
    """What a run's documents depend on besides the events: a checkpoint left under other marks
    (another window, lookback, internal domains or kinds, or a profiles index created anew)
    says nothing about the documents a run would write now."""
    defined = {"window": settings.thresholds.profile_history_window, "lookback_seconds": lookback_seconds,
               "internal": sorted(internal_set(settings.internal_domains)),
               "kinds": [[k.name, k.field, k.filters] for k in kinds()], "format": CHECKPOINT_FORMAT}
    uuid = next(iter(cluster.request("GET", f"/{target}/_settings/index.uuid").values()))
    return {"job": "profiles", "fingerprint": hashlib.sha256(json.dumps(defined, sort_keys=True).encode()).hexdigest(),
            "index_uuid": str(uuid["settings"]["index"]["uuid"])}


def _incremental_since(cluster: Cluster, state: str, marks: dict[str, str], clock: RunClock,
                       settings: Settings) -> tuple[int, int] | None:
    """(the previous run's now, its last full run) when this run may be incremental, else None: no
    checkpoint, one under other marks, a clock that went back, or the last full run older than
    engine.profiles_full_every (a full run also catches what no arrival time says: events removed
    or rewritten in place, or written without event.ingested)."""
    res = cluster.request("GET", f"/{state}/_doc/{CHECKPOINT_ID}", ok_missing=True)
    cp = (res or {}).get("_source") if res and res.get("found") else None
    if not isinstance(cp, dict) or any(cp.get(k) != v for k, v in marks.items()):
        return None
    previous, full_at = cp.get("now_ms"), cp.get("full_at_ms")
    if not isinstance(previous, int) or not isinstance(full_at, int) or clock.now_ms < previous:
        return None
    if clock.now_ms - full_at >= duration_seconds(settings.engine.profiles_full_every) * 1000:
        return None
    return previous, full_at


def _to_refresh(run: _Pass, target: str, since: tuple[int, int]) -> Iterator[str]:
    """The users whose profiles a full run would now write otherwise than they are, in order:

    - feed events that arrived (event.ingested) since a little before the previous run, or whose
      own time has passed the previous run's now since (a late login, a clock ahead);
    - a stored value first seen before the window's start: events of it left the window, so its
      first_seen and count change, or it goes (and with it, maybe, another value's marker);
    - a marker first seen before the lookback's start: it is cleared.
    Every other stored document has all its events in the window and would be written the same.
    """
    previous = since[0]
    arrived = {"bool": {"filter": [feed_query()], "should": [
        time_range(INGESTED, previous - ARRIVAL_OVERLAP_SECONDS * 1000, run.clock.now_ms, include_end=True),
        time_range("@timestamp", previous, run.clock.now_ms, include_end=True)], "minimum_should_match": 1}}
    changed = {"bool": {"should": [
        {"range": {"profile.first_seen": {"lt": run.start_ms, "format": "epoch_millis"}}},
        {"bool": {"filter": [{"term": {"profile.new": True}},
                             {"range": {"profile.first_seen": {"lt": run.lookback_start_ms,
                                                               "format": "epoch_millis"}}}]}}]}}
    sources = [{USER: {"terms": {"field": "user.name"}}}]
    streams = [(str(b["key"][USER]) for b in iter_composite(run.cluster, index, query, sources, None,
                                                            run.page_size, run.counter, run.stop))
               for index, query in ((run.events, arrived), (target, changed))]
    # both come sorted by user (keyword order is UTF-8 byte order, which is str order)
    return (user for user, _ in itertools.groupby(heapq.merge(*streams)))


def _chunks(users: Iterator[str], size: int) -> Iterator[list[str]]:
    while chunk := list(itertools.islice(users, size)):
        yield chunk


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
