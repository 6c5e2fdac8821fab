"""Baselines job: per-user export and share statistics and the threshold the rules use.

Signals 4b (exports far above the user's own baseline) and 5b (a rise in
distinct external recipients) compare the last hour or day against these
documents. The window is [now - baseline_window, now - 1h): the last hour is
what a rule looks at, so it must not raise the baseline it is compared with.
See docs/baselines.md for the statistic and why.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from collections.abc import Callable, Iterable
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
from pacsguard.jobs.stats import baseline
from pacsguard.jobs.writer import BULK_DOCS, BulkWriter, finish_run, job_stamp

USER = "user"


@dataclass(frozen=True)
class Series:
    """One metric: which events, how they are bucketed, and each bucket's value per unit."""

    metric: str
    unit_seconds: int
    unit: str  # the vocabulary's unit name: hour | day
    filters: list[dict[str, Any]]
    extra_sources: list[dict[str, Any]]
    aggs: dict[str, Any] | None
    # Turns one user's consecutive buckets into the values of its active units.
    unit_values: Callable[[Iterable[dict[str, Any]]], list[float]]


def _studies_per_hour(buckets: Iterable[dict[str, Any]]) -> list[float]:
    # distinct Study Instance UIDs, as the rules count them (4a, 4b): one export audited by the
    # archive and by FHIR is one export, not two
    return [float(b["studies"]["value"]) for b in buckets]


def _events_per_hour(buckets: Iterable[dict[str, Any]]) -> list[float]:
    return [float(b["doc_count"]) for b in buckets]


def _external_recipients_per_day(internal: frozenset[str]) -> Callable[[Iterable[dict[str, Any]]], list[float]]:
    def values(buckets: Iterable[dict[str, Any]]) -> list[float]:
        # Buckets are (day, recipient) sorted by day: one distinct recipient per bucket.
        return [float(sum(1 for b in day if is_external(str(b["key"]["recipient"]), internal)))
                for _, day in itertools.groupby(buckets, key=lambda b: b["key"]["t"])]
    return values


def _histogram(unit_seconds: int, interval: str, end_ms: int) -> dict[str, Any]:
    # The offset aligns buckets on the window's end, so the last bucket is a full
    # unit ending exactly where the rule's own window starts.
    offset = end_ms % (unit_seconds * 1000)
    return {"t": {"date_histogram": {"field": "@timestamp", "fixed_interval": interval, "offset": f"+{offset}ms"}}}


def unit_seconds(settings: Settings, unit: str) -> int:
    """Length of a baseline unit. The hourly unit is the window signal 4b compares with the
    baseline, and the daily one the window of 5b, so a baseline counts what its rule counts."""
    t = settings.thresholds
    return duration_seconds(t.baseline_recent_window if unit == "hour" else t.new_external_recipients_window)


def series_for(settings: Settings, end_ms: int) -> list[Series]:
    """One Series per baseline metric of the vocabulary (pack/schema.yaml baseline_metrics)."""
    not_failed = {"bool": {"must_not": [{"term": {"event.outcome": "failure"}}]}}
    internal = internal_set(settings.internal_domains)
    out = []
    for name, metric in vocabulary().baseline_metrics.items():
        unit = unit_seconds(settings, metric.unit)
        histogram = _histogram(unit, f"{unit}s", end_ms)
        filters: list[dict[str, Any]] = [{"terms": {"event.action": list(metric.actions)}}, not_failed]
        if metric.value == "distinct_studies":
            out.append(Series(name, unit, metric.unit, filters, [histogram],
                              {"studies": {"cardinality": {"field": "pacs.study.uids"}}}, _studies_per_hour))
        elif metric.value == "events":
            out.append(Series(name, unit, metric.unit, filters, [histogram], None, _events_per_hour))
        else:
            out.append(Series(name, unit, metric.unit, [*filters, {"term": {"pacs.share.external": True}}],
                              [histogram, {"recipient": {"terms": {"field": "pacs.share.recipients"}}}], None,
                              _external_recipients_per_day(internal)))
    return out


def _document(settings: Settings, clock: RunClock, series: Series, user: str, values: list[float],
              start_ms: int, end_ms: int, doc_id: str, ongoing: int = 0) -> dict[str, Any]:
    t = settings.thresholds
    stats = baseline(values, series.unit_seconds, (end_ms - start_ms) // 1000, t.baseline_multiplier,
                     t.baseline_floor)
    body: dict[str, Any] = {
        "metric": series.metric,
        "unit": series.unit,
        "window": t.baseline_window,
        "window_start": iso_ms(start_ms),
        "window_end": iso_ms(end_ms),
        "samples": stats.samples,
        "ongoing_units": ongoing,
        "total": stats.total,
        "hourly_mean": round(stats.hourly_mean, 6),
        "daily_mean": round(stats.daily_mean, 6),
        "p95": stats.p95,
        "max": stats.max,
        "threshold": stats.threshold,
        "multiplier": t.baseline_multiplier,
        "floor": t.baseline_floor,
    }
    if series.unit == "hour":
        body.update(hourly_p95=stats.p95, hourly_p99=stats.p99)
    else:
        body.update(daily_p95=stats.p95)
    return {"@timestamp": clock.now_iso, "user": {"name": user}, "baseline": body,
            "job": job_stamp(clock.run_id, clock.now_iso, doc_id)}


def settled(buckets: list[dict[str, Any]], end_ms: int, unit_ms: int,
            max_units: int) -> tuple[list[dict[str, Any]], int]:
    """One user's buckets without the activity still going on at the window's end, and how
    many units that activity covered.

    Units active back to back up to the end of the window belong to the episode the rule is
    looking at (an export burst that began 70 minutes ago has its first hour in the window):
    counting them would make a burst the baseline it is measured against (a first-ever
    40-study export would be "5 x its own first hour"). The baseline is what the user did
    before it; a user with nothing before it has no baseline, and 4a watches them. At most
    max_units are left out (thresholds.baseline_ongoing_window): an account active every hour
    keeps a baseline from before them."""
    starts = {int(b["key"]["t"]) for b in buckets}
    ongoing, unit_start = set(), end_ms - unit_ms
    while unit_start in starts and len(ongoing) < max_units:
        ongoing.add(unit_start)
        unit_start -= unit_ms
    return [b for b in buckets if int(b["key"]["t"]) not in ongoing], len(ongoing)


def baseline_id(metric: str, user: str) -> str:
    return f"{metric}:{user}"


def run_baselines(cluster: Cluster, settings: Settings, *, now: dt.datetime | None = None,
                  page_size: int = MAX_PAGE_SIZE, stop: threading.Event | None = None) -> JobReport:
    """Recompute every user's baselines, then delete those of users with nothing left in the window."""
    began = time.monotonic()
    clock = start_run(now)
    events, target = settings.index("events_data_stream"), settings.index("baselines")
    require_index(cluster, events, "events data stream")
    require_index(cluster, target, "baselines index", ("job.run_id", "job.key", "baseline.threshold"))
    start_ms = clock.now_ms - duration_seconds(settings.thresholds.baseline_window) * 1000
    # the baseline ends where the rule's own recent window starts
    end_ms = clock.now_ms - unit_seconds(settings, "hour") * 1000
    report = JobReport("baselines", clock.run_id, clock.now_iso)
    counter = PageCounter()
    writer = BulkWriter(cluster, target, flush_every=min(page_size, BULK_DOCS), background=True)
    max_ongoing = duration_seconds(settings.thresholds.baseline_ongoing_window) // unit_seconds(settings, "hour")
    for series in series_for(settings, end_ms):
        query = {"bool": {"filter": [*series.filters, time_range("@timestamp", start_ms, end_ms)]}}
        sources = [{USER: {"terms": {"field": "user.name"}}}, *series.extra_sources]
        buckets = iter_composite(cluster, events, query, sources, series.aggs, page_size, counter, stop)
        users = 0
        for user, group in by_user(buckets, USER):
            before, ongoing = list(group), 0
            if series.unit == "hour":  # the unit 4b compares with (a daily series has no ongoing episode)
                before, ongoing = settled(before, end_ms, series.unit_seconds * 1000, max_ongoing)
            if not before:
                continue  # all of it is still going on: no baseline yet (and an old one is deleted as stale)
            doc_id = baseline_id(series.metric, user)
            writer.put(doc_id, _document(settings, clock, series, user, series.unit_values(before),
                                         start_ms, end_ms, doc_id, ongoing))
            users += 1
        report.users[series.metric] = users
    return finish_run(cluster, writer, target, clock.run_id, report, counter.pages, began, page_size)
