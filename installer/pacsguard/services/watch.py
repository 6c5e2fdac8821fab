"""`pacsguard watch`: the alerting loop where OpenSearch Alerting does not run the rules.

Every enabled rule whose engine is pacsguard runs on its schedule with core
search (the same compiled monitor body Alerting would run, engines/core.py);
event rules (signal 3) every few seconds. Firing entities become alerts with
Alerting's lifecycle (engines/alerts.py): one alert per (rule, entity) while
the condition holds, COMPLETED when it clears, severity raised when an
escalation trigger (4c) fires for an open alert. New and escalated alerts are
delivered to the routed channels (engines/delivery.py) in one lane per channel,
each delivery recorded on the alert before and after it is sent, with a stable
delivery id, so a restart neither loses nor repeats a message. The baseline and
profile jobs run on their own interval beside the rules.

Event time without gaps: each rule keeps a checkpoint in the state index (the
period it last evaluated, and up to when it has looked at arrivals); every run
first evaluates again the past periods whose windows hold events that arrived
since (late events, or events that came while no engine ran), oldest first and
bounded in time, then the live period (engines/catchup.py).

Any number of instances may run; one leads through a lease in the state index
(engines/lease.py). Only the leader runs rules and sends; every delivery is
claimed on its alert with the leader's epoch, so a new leader sends again only
what the old one cannot still be sending.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from typing import Any

from pacsguard.core.connection import ApiError, Cluster
from pacsguard.core.errors import PacsguardError
from pacsguard.core.models import Progress, quiet
from pacsguard.core.settings import Channel, Settings, duration_seconds
from pacsguard.engines import catchup, core
from pacsguard.engines.alerts import (
    ACTIVE,
    COMPLETED,
    ERROR,
    OPEN,
    SEVERITY_NAMES,
    SEVERITY_RANK,
    Alert,
    AlertStore,
    now_iso,
)
from pacsguard.engines.channels.inbox import inbox_channel
from pacsguard.engines.delivery import AlertMessage, DeliveryResult, Lanes, deliver
from pacsguard.engines.entity import bounded, is_bounded
from pacsguard.engines.lease import Lease, read_lease
from pacsguard.engines.result import Bucket, MonitorRun
from pacsguard.jobs import run_job, run_profiles
from pacsguard.jobs.directory import directory_configured, lookup_names
from pacsguard.jobs.profiles import feed_query
from pacsguard.jobs.schedule import all_jobs
from pacsguard.rules.compiler import (
    CompiledRule,
    compile_rules,
    evidence_query,
    message_template,
    rule_events,
    rule_window,
    subject,
)
from pacsguard.services.exceptions import snoozed_delivery
from pacsguard.services.install import alerting_signals

ENGINE = "pacsguard"
WATCH_STATUS_PREFIX = "watch:"
# Arrivals are looked at up to this long before a run: a document the pipeline stamped with
# event.ingested is searchable within a refresh (1 s) of it; what comes later is looked at next run.
SETTLE_SECONDS = 5
# The lease runs out after this many ticks without renewal: a standby takes over within
# LEASE_TICKS + 1 ticks (9 s at the default tick of 1 s), well inside two schedule intervals.
LEASE_TICKS = 8
# The lease is renewed by a thread of its own (a long rule run must not cost the lease), but only
# while the loop shows signs of life: a loop that has not ticked for this long is hung, and lets
# the lease run out (the shortest rule schedule, Alerting's minimum: a standby then takes over
# within two schedule intervals).
HUNG_SECONDS = 60.0
# An arrival check counts events ingested this long before a rule's last run started: a document
# is searchable within a refresh (1 s) of its event.ingested stamp, so the run may not have seen it.
ARRIVAL_OVERLAP_SECONDS = 2
# Retries and reminders are looked for at least this often (more often where redeliver_after or
# renotify_every is shorter): what is due waits at most this long beyond its time.
SCAN_SECONDS = 15
# A run spends at most this share of the rule's interval on past periods; the rest next run.
CATCHUP_SHARE = 0.5
MAX_ENTITY_ERRORS = 20
ENTITIES_PER_SEARCH = 10_000  # a terms filter takes at most 65,536 values
# Rule types whose query joins state of every entity with no time bound (4b: the baselines of
# all users): the live run is narrowed to the entities with events in the rule's window, which
# are the only ones it can fire for, so its cost follows activity, not the number of users.
NARROWED_TYPES = frozenset({"baseline"})


class LeaseLost(PacsguardError):
    """This instance no longer leads: it stops writing alerts and sending."""


@dataclass
class RuleState:
    compiled: CompiledRule
    every: float
    next_run: float = 0.0
    last_run: str | None = None
    last_error: str | None = None
    last_took_ms: float = 0.0
    runs: int = 0
    running: Future[None] | None = None
    started_at: dt.datetime | None = None  # when its last run started (wall clock)
    # what the rule has evaluated (kept in its status document, so it survives restarts)
    checkpoint: dict[str, Any] = field(default_factory=dict)
    entity_errors: list[dict[str, str]] = field(default_factory=list)
    # how many open alerts this instance knows the rule has (None: unknown, search); a run that
    # fires nothing while none is open has nothing to look up, clear or refresh
    open_known: int | None = None
    # the lease epoch under which this instance last wrote the checkpoint: while it still holds
    # that epoch, no other instance has led since, and the checkpoint in memory is the one stored
    written_epoch: int | None = None


@dataclass
class Pending:
    alert_id: str
    delivery_id: str
    channel: str
    kind: str
    future: Future[DeliveryResult]


@dataclass
class WatchReport:
    runs: int = 0
    opened: int = 0
    completed: int = 0
    escalated: int = 0
    delivered: int = 0
    failed_deliveries: int = 0
    errors: list[str] = field(default_factory=list)


def pacsguard_rules(settings: Settings, plugins: set[str]) -> list[CompiledRule]:
    """The enabled rules a cluster with these plugins runs on the pacsguard engine: never one that
    Alerting runs, so no rule alerts twice."""
    on_alerting = alerting_signals(settings, plugins)
    return [c for c in compile_rules(settings) if c.rule.enabled and c.signal not in on_alerting]


def _firing(run: MonitorRun) -> dict[str, tuple[str, Bucket, str]]:
    """entity -> (severity name, bucket, trigger name): the most severe trigger that fired for it."""
    out: dict[str, tuple[str, Bucket, str]] = {}
    for trigger in run.triggers:
        severity = SEVERITY_NAMES.get(trigger.severity, "high")
        for bucket in trigger.buckets:
            current = out.get(bucket.entity)
            if current is None or SEVERITY_RANK[severity] < SEVERITY_RANK[current[0]]:
                out[bucket.entity] = (severity, bucket, trigger.name)
    return out


class Watcher:
    """One engine instance: call tick() in a loop (run_forever does)."""

    def __init__(self, cluster: Cluster, settings: Settings, progress: Progress = quiet,
                 run_jobs: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        self.cluster = cluster
        self.settings = settings
        self.progress = progress
        self.store = AlertStore(cluster, settings.index("alerts"))
        # no channel configured: alerts go to the local inbox file, never to nobody
        self.channels: dict[str, Channel] = {c.name: c for c in settings.notifications.channels
                                             or [inbox_channel(settings)]}
        self.clock = clock
        event_every = duration_seconds(settings.detection.event_rule_every)
        self.rules = [RuleState(c, event_every if c.rule.detection.type == "event"
                                else duration_seconds(c.rule.schedule))
                      for c in pacsguard_rules(settings, cluster.installed_components()[0])]
        self.lanes = Lanes()
        self.lease = Lease(cluster, settings.index("state"), ttl=LEASE_TICKS * settings.engine.tick_seconds,
                           clock=clock)
        self.leading = False
        self.led_once = False
        self.heartbeat = clock()
        self._renewer: threading.Thread | None = None
        self._stop_renewing = threading.Event()
        # Rules run in workers of their own, so a slow windowed rule never holds back the
        # event rules due every few seconds; alert documents change under one lock.
        self.rule_pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="pacsguard-rule")
        # event rules (signal 3) in workers of their own: windowed rules started by their arrivals
        # all at once never queue ahead of them
        self.event_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pacsguard-event-rule")
        self.lock = threading.RLock()
        self.pending: list[Pending] = []
        self.report = WatchReport()
        self.run_jobs = run_jobs
        self.jobs_every = duration_seconds(settings.engine.jobs_every)
        self.next_jobs = 0.0
        self.jobs_thread: threading.Thread | None = None
        # profiles rewritten for the users with new logins or shares before the rules that read
        # them (_fresh_profiles); never beside the full profiles job, whose sweep would delete them
        self.profiles_lock = threading.Lock()
        self.full_profiles = threading.Event()
        self.profiles_since: dt.datetime | None = None
        self.renotify = duration_seconds(settings.engine.renotify_every)
        self.redeliver = duration_seconds(settings.engine.redeliver_after)
        self.named: dict[tuple[str, tuple[str, ...]], dict[str, str]] = {}
        self.arrival_every = duration_seconds(settings.engine.arrival_check_every)
        # the alerts that may need a retry or a reminder are looked up this often, and at the next
        # tick after a delivery failed or this instance took the lease (None: at the next tick)
        self.scan_every = min(s for s in (SCAN_SECONDS, self.redeliver, self.renotify) if s > 0)
        self.next_scan: dt.datetime | None = None
        self.next_arrival_check = 0.0

    # ------------------------------------------------------------ one tick

    def tick(self, now: dt.datetime | None = None, wait: bool = True) -> None:
        """Start the rules that are due (each in a worker), deliver, remind.

        wait=True (tests, --once) returns once the rules started here have run;
        the loop passes False and picks up their results on later ticks.
        """
        self.heartbeat = self.clock()
        with self.lock:
            self._collect_deliveries()
        if not self._lead():
            return
        mono = self.clock()
        if self.run_jobs and mono >= self.next_jobs and not (self.jobs_thread and self.jobs_thread.is_alive()):
            self.next_jobs = mono + self.jobs_every
            self.jobs_thread = threading.Thread(target=self._jobs, name="pacsguard-jobs", daemon=True)
            self.jobs_thread.start()
        if self.arrival_every and mono >= self.next_arrival_check:
            self.next_arrival_check = mono + self.arrival_every
            self._run_on_arrival(mono)
        started = []
        for state in self.rules:
            if mono >= state.next_run and (state.running is None or state.running.done()):
                state.next_run = mono + state.every
                state.started_at = now or dt.datetime.now(dt.timezone.utc)
                pool = self.event_pool if state.compiled.rule.detection.type == "event" else self.rule_pool
                state.running = pool.submit(self.run_rule, state, now)
                started.append(state.running)
        while wait and started:
            self.heartbeat = self.clock()
            _, running = futures_wait(started, timeout=1.0)
            started = list(running)
        with self.lock:
            self._retry_and_remind(now)

    def _run_on_arrival(self, mono: float) -> None:
        """Make due now every rule with events it reads that arrived (event.ingested) since its last
        run started: one search for all of them. An alert then waits for this check, not for the
        rule's schedule (1 minute; 5 s for event rules); the schedule still runs the rule (a
        condition that clears)."""
        waiting = {s.compiled.signal: s for s in self.rules if s.every > self.arrival_every and s.started_at
                   and mono < s.next_run and (s.running is None or s.running.done())}
        filters: dict[str, Any] = {}
        for signal, state in waiting.items():
            rule = state.compiled.rule
            # rules that read only profiles (2a, 2b, 5b) are made of logins and shares
            events = rule_events(rule, self.settings) or feed_query()
            since = state.started_at - dt.timedelta(seconds=ARRIVAL_OVERLAP_SECONDS)
            filters[signal] = {"bool": {"filter": [events, {"range": {core.INGESTED: {
                "gt": int(since.timestamp() * 1000), "format": "epoch_millis"}}}]}}
        if not filters:
            return
        res = self.cluster.request("POST", f"/{self.settings.index('events_data_stream')}/_search",
                                   params={"ignore_unavailable": "true"},
                                   body={"size": 0, "query": {"bool": {"should": list(filters.values())}},
                                         "aggregations": {"arrived": {"filters": {"filters": filters}}}})
        buckets = res.get("aggregations", {}).get("arrived", {}).get("buckets", {})
        for signal, bucket in buckets.items():
            if bucket.get("doc_count"):
                waiting[signal].next_run = mono

    def _lead(self) -> bool:
        """Whether this instance holds the lease (the renewing thread starts on the first call);
        a standby, or a leader that lost it, does nothing else."""
        if self._renewer is None:
            self.lease.tick()
            self._renewer = threading.Thread(target=self._renew, name="pacsguard-lease", daemon=True)
            self._renewer.start()
        leading = self.lease.valid()
        if leading and not self.leading:
            self.progress(f"leading (lease epoch {self.lease.epoch}, {self.lease.holder})")
            for state in self.rules:
                state.next_run = 0.0  # take over at once: the checkpoints say what is left to do
                state.open_known = None  # the previous leader may have opened alerts
            self.next_scan = None  # and left deliveries to finish
        elif self.leading and not leading:
            self.progress("lost the lease: standing by (no rule runs, no deliveries)")
        self.leading = leading
        self.led_once = self.led_once or leading
        return leading

    def _renew(self) -> None:
        while not self._stop_renewing.wait(self.settings.engine.tick_seconds):
            if self.clock() - self.heartbeat < HUNG_SECONDS:
                self.lease.tick()

    def _may_act(self) -> bool:
        """Write alerts and send: the leader only (an instance that never ticked, e.g. a direct
        run_rule call, acts on its own behalf)."""
        return self.lease.valid() or not self.led_once

    def _guard(self) -> None:
        if not self._may_act():
            raise LeaseLost("this watch no longer holds the lease")

    def _jobs(self) -> None:
        for job in all_jobs(self.settings):
            profiles = job == "profiles"
            if profiles:
                self.full_profiles.set()
            try:
                with self.profiles_lock if profiles else contextlib.nullcontext():
                    run_job(self.cluster, self.settings, job)
            except PacsguardError as exc:
                self.report.errors.append(f"job {job}: {exc}")
                self.progress(f"error: job {job}: {exc}")
            finally:
                if profiles:
                    self.full_profiles.clear()

    def _fresh_profiles(self, at: dt.datetime) -> None:
        """Rewrite the profiles of the users whose logins or external shares arrived since the last
        time (by event.ingested), from the same history the profiles job reads: a rule that reads
        profiles (2a, 2b, 5b, and 4a/4b for 4c) then compares the new events with the stored
        history now, not at the next job run. The job keeps everyone else's."""
        if self.full_profiles.is_set():
            return  # the job is rewriting every profile; what it misses, the next rule run takes
        with self.profiles_lock:
            since = self.profiles_since or at - dt.timedelta(seconds=self.jobs_every)
            if at - since < dt.timedelta(seconds=1):
                return  # another rule of this tick has just done it
            users = core.entities(self.cluster, self.settings.index("events_data_stream"), feed_query(), "user.name",
                                  core.INGESTED, since - dt.timedelta(seconds=SETTLE_SECONDS), at,
                                  self.settings.detection.composite_page_size)
            for chunk in range(0, len(users), ENTITIES_PER_SEARCH):
                run_profiles(self.cluster, self.settings, now=at, users=users[chunk:chunk + ENTITIES_PER_SEARCH])
            self.profiles_since = at

    def run_rule(self, state: RuleState, now: dt.datetime | None = None) -> None:
        """Run one rule and apply what it found; an error is recorded, never raised (a worker runs this)."""
        compiled = state.compiled
        at = now or dt.datetime.now(dt.timezone.utc)
        try:
            state.checkpoint = self._read_checkpoint(state)
            state.entity_errors = []
            if self.settings.index("profiles") in compiled.monitor["inputs"][0]["search"]["indices"]:
                self._fresh_profiles(at)
            self._catch_up(state, at)
            run = self.live_run(state, at)
            with self.lock:
                self._guard()
                self._apply(state, run, at)
        except LeaseLost:
            return  # the new leader runs it from the checkpoint
        except Exception as exc:  # noqa: BLE001 - a worker must record every failure, not lose it
            state.last_error = str(exc) if isinstance(exc, PacsguardError) else f"{type(exc).__name__}: {exc}"
            self.report.errors.append(f"rule {compiled.signal}: {state.last_error}")
            self.progress(f"error: rule {compiled.signal}: {state.last_error}")
            try:
                self._record_status(state, at)
            except PacsguardError:
                pass  # the cluster is away: the next run records it

    def live_run(self, state: RuleState, at: dt.datetime) -> MonitorRun:
        """The monitor at `at`; a rule of NARROWED_TYPES for the entities with events in its window."""
        compiled = state.compiled
        rule = compiled.rule
        events = rule_events(rule, self.settings)
        if rule.detection.type not in NARROWED_TYPES or events is None:
            return core.run(self.cluster, compiled.monitor, at)
        since = at - dt.timedelta(seconds=duration_seconds(rule_window(rule, self.settings)))
        active = core.entities(self.cluster, self.settings.index("events_data_stream"), events,
                               rule.detection.entity, self.settings.detection.time_field, since, at,
                               self.settings.detection.composite_page_size)
        if len(active) > ENTITIES_PER_SEARCH:
            return core.run(self.cluster, compiled.monitor, at)  # most are active: a filter saves nothing
        return core.run(self.cluster, compiled.monitor, at, only=(rule.detection.entity, active))

    def _apply(self, state: RuleState, run: MonitorRun, at: dt.datetime) -> None:
        compiled = state.compiled
        state.last_error, state.last_run, state.last_took_ms = None, now_iso(at), run.took_ms
        state.runs += 1
        self.report.runs += 1
        firing = {bounded(entity): fired for entity, fired in _firing(run).items()}
        # nothing fires and no alert is open: nothing to look up, clear or make visible
        open_alerts = {} if not firing and state.open_known == 0 else self.store.open_alerts(compiled.object_id)
        changes = self.report.opened + self.report.completed
        for entity, (severity, bucket, trigger) in firing.items():
            alert = open_alerts.get(entity)
            try:
                if alert is None:
                    self._open(compiled, bucket.entity, severity, bucket, trigger, at)
                else:
                    self._still_firing(compiled, alert, severity, bucket, trigger, at)
            except (ApiError, ValueError) as exc:  # this entity's alert cannot be written: the others go on
                self._entity_error(state, entity, exc)
        kept = 0
        for entity, alert in open_alerts.items():
            if entity not in firing and alert.state != ERROR:
                self._clear(alert.id, at, "condition cleared")
            elif entity not in firing:
                kept += 1
        state.open_known = len(firing) + kept  # an entity whose alert could not be written: counted, so searched
        if self.report.opened + self.report.completed > changes:
            self.store.refresh()  # the next run's search must see the alerts opened and cleared
        state.checkpoint["evaluated_through"] = now_iso(at)
        state.checkpoint.setdefault("ingested_through", now_iso(at - dt.timedelta(seconds=SETTLE_SECONDS)))
        self._record_status(state, at)

    def _entity_error(self, state: RuleState, entity: str, exc: Exception) -> None:
        what = f"rule {state.compiled.signal}, entity {bounded(entity)}: {exc}"
        self.report.errors.append(what)
        self.progress(f"error: {what}")
        if len(state.entity_errors) < MAX_ENTITY_ERRORS:
            state.entity_errors.append({"entity": bounded(entity), "error": str(exc)[:500]})

    # ------------------------------------------------------------ event time: late events, downtime

    def _read_checkpoint(self, state: RuleState) -> dict[str, Any]:
        """The rule's checkpoint from its status document: another instance may have moved it
        (not while this one has held the lease since it wrote it)."""
        if self.lease.epoch is not None and state.written_epoch == self.lease.epoch:
            return state.checkpoint
        res = self.cluster.request("GET", f"/{self.settings.index('state')}/_doc/"
                                   f"{WATCH_STATUS_PREFIX}{state.compiled.signal}", ok_missing=True)
        found = (res or {}).get("_source", {}).get("checkpoint") if res and res.get("found") else None
        return dict(found) if isinstance(found, dict) else dict(state.checkpoint)

    def _catch_up(self, state: RuleState, at: dt.datetime) -> None:
        """Evaluate again the past periods whose windows hold events that arrived since the last run.

        Arrivals are (ingested_through, at - SETTLE]. Normally only events whose own time is
        more than one interval older than that checkpoint count (late ones: the live runs saw
        the others); after downtime (the last evaluated period more than an interval and a half
        back) every arrival older than one interval does. The batch is kept in the checkpoint
        until done, so a long backlog is worked off over several runs, oldest first."""
        compiled, cp = state.compiled, state.checkpoint
        rule = compiled.rule
        events = rule_events(rule, self.settings)
        last, since = cp.get("evaluated_through"), cp.get("ingested_through")
        if events is None or not last or not since:
            return  # the first run starts the checkpoint; the profiles rules read what the jobs wrote
        every = int(state.every)
        event_rule = rule.detection.type == "event"
        field_ = self.settings.detection.event_rule_time_field if event_rule else self.settings.detection.time_field
        window = duration_seconds(rule_window(rule, self.settings))
        # an event rule fires on any one event: windows side by side cover every event
        step = window if event_rule else every
        batch = cp.get("batch")
        if not batch:
            upto = at - dt.timedelta(seconds=SETTLE_SECONDS)
            if upto <= _time(since):
                return
            missed = (at - _time(last)).total_seconds() > 1.5 * every
            if not missed and field_ == core.INGESTED:
                cp["ingested_through"] = now_iso(upto)  # arrival-time windows see every arrival live
                return
            before = at - dt.timedelta(seconds=every) if missed else _time(since) - dt.timedelta(seconds=every)
            batch = {"from": since, "to": now_iso(upto), "before": now_iso(before), "done_through": None,
                     "until": now_iso(at - dt.timedelta(seconds=every))}
        found = core.arrivals(self.cluster, self.settings.index("events_data_stream"), events, rule.detection.entity,
                              field_, (_time(batch["from"]), _time(batch["to"])), _time(batch["before"]), step,
                              self.settings.detection.composite_page_size)
        done = _time(batch["done_through"]) if batch.get("done_through") else None
        periods = catchup.plan(found, step, window, _time(batch["until"]), after=done)
        deadline = self.clock() + CATCHUP_SHARE * every
        touched: dict[str, Alert] = {}
        for n, period in enumerate(periods):
            if self.clock() > deadline:
                cp["batch"], cp["behind_periods"] = batch, len(periods) - n
                self.progress(f"rule {compiled.signal}: catching up, {len(periods) - n} past period(s) left "
                              f"(evaluated through {batch['done_through']})")
                return
            names = sorted(period.entities)
            for chunk in range(0, len(names), ENTITIES_PER_SEARCH):
                run = core.run(self.cluster, compiled.monitor, period.end,
                               only=(rule.detection.entity, names[chunk:chunk + ENTITIES_PER_SEARCH]))
                with self.lock:
                    self._guard()
                    self._apply_late(state, run, period, at, window, touched)
            batch["done_through"] = now_iso(period.end)
        with self.lock:
            # an episode that ended before the live window: its condition no longer holds
            for alert in touched.values():
                if _span(alert.source)[1] < at - dt.timedelta(seconds=window):
                    self._clear(alert.id, at, "condition cleared (a past episode, found late)")
            if touched:
                self.store.refresh()
                state.open_known = None  # a late alert may still be open
        cp.pop("batch", None)
        cp["ingested_through"], cp["behind_periods"] = batch["to"], 0

    def _apply_late(self, state: RuleState, run: MonitorRun, period: catchup.Period, at: dt.datetime,
                    window: int, touched: dict[str, Alert]) -> None:
        """A past period evaluated again for the entities with late events in it: a firing entity
        opens an alert only if no alert of the rule already covers that episode (live or late)."""
        compiled = state.compiled
        for entity, (severity, bucket, trigger) in _firing(run).items():
            key = bounded(entity)
            own_time = period.entities.get(bucket.keys[0] if bucket.keys else entity)
            if own_time is None:
                continue
            try:
                # this run's own alerts first: the search does not see them before a refresh
                alert = next((a for a in touched.values() if a.entity == key
                              and _overlaps(a.source, period.end, window)), None) \
                    or self._episode(compiled, key, period.end, window)
                if alert is not None:
                    touched[alert.id] = self._extend(alert, period.end)
                    continue
                doc = self._doc(compiled, entity, severity, bucket, trigger, at, period_end=period.end,
                                event_time=own_time)
                try:
                    alert = self.store.create(doc)
                except ApiError as exc:
                    if exc.status != 409:
                        raise
                    continue  # another engine wrote this very episode
                touched[alert.id] = alert
                self.report.opened += 1
                self.progress(f"alert {alert.id}: {compiled.signal} {severity} {key} (late: events at "
                              f"{doc['event_time']}, detected {doc['detected_time']})")
                self._notify(alert, "new", at)
            except (ApiError, ValueError) as exc:
                self._entity_error(state, entity, exc)

    def _episode(self, compiled: CompiledRule, key: str, end: dt.datetime, window: int) -> Alert | None:
        """The alert (any state) whose firing windows overlap the window ending at `end`."""
        return next((a for a in self.store.of_entity(compiled.object_id, key) if _overlaps(a.source, end, window)),
                    None)

    def _extend(self, alert: Alert, end: dt.datetime) -> Alert:
        def widen(src: dict[str, Any]) -> bool:
            first, last = _span(src)
            if first <= end <= last:
                return False
            src["period_start"], src["period_end"] = now_iso(min(first, end)), now_iso(max(last, end))
            return True
        return self.store.update(alert.id, widen)

    def _clear(self, alert_id: str, at: dt.datetime, note: str) -> None:
        changed = False

        def complete(src: dict[str, Any]) -> bool:
            nonlocal changed
            if src.get("state") in (COMPLETED, ERROR):
                return False  # closed by a person in the meantime
            changed = True
            src["state"] = COMPLETED
            src["end_time"] = now_iso(at)
            src.setdefault("history", []).append({"at": now_iso(at), "state": COMPLETED, "by": ENGINE, "note": note})
            return True
        self.store.update(alert_id, complete)
        self.report.completed += int(changed)

    # ------------------------------------------------------------ lifecycle

    def _doc(self, compiled: CompiledRule, entity: str, severity: str, bucket: Bucket, trigger: str,
             at: dt.datetime, period_end: dt.datetime | None = None,
             event_time: dt.datetime | None = None) -> dict[str, Any]:
        """The alert document. period_end/event_time: a late alert, found in a past period
        (evaluated at `at`) for events that happened at event_time."""
        rule = compiled.rule
        escalated = severity == "critical" and rule.severity != "critical"
        route = self.settings.routing.route(rule.signal, severity)
        channels = route.channels if route.channels is not None else list(self.channels)
        shown = bounded(entity)
        period = period_end or at
        text = core.render_mustache(message_template(rule, self.settings, escalated), {"ctx": {
            "monitor": {"name": compiled.monitor["name"]}, "trigger": {"name": trigger, "severity": severity},
            "periodEnd": now_iso(period).replace("+00:00", "Z"),
            "newAlerts": [{"bucket_keys": shown, "count": _number(bucket.count)}]}})
        late = period_end is not None
        if late:
            head, _, rest = text.partition("\n")
            text = (f"{head}\nDetected late: the events happened at {now_iso(event_time or period)}, "
                    f"detected at {now_iso(at)} (they arrived after their window was evaluated)\n{rest}")
        names = self._names(compiled, bucket)
        text = with_names(text, names)
        first_key = bucket.keys[0] if bucket.keys else entity
        ent: dict[str, Any] = {"value": shown, "keys": [bounded(k) for k in bucket.keys],
                               "field": rule.detection.entity}
        if is_bounded(entity):
            ent["full_value"] = entity  # not indexed (the mapping is closed): kept, never a term
        if names:
            ent["names"] = names
        return {
            "@timestamp": now_iso(at), "engine": ENGINE, "state": ACTIVE, "status": OPEN, "severity": severity,
            "escalated": escalated, "owner": route.owner,
            "rule": {"id": str(rule.id), "signal": rule.signal, "name": rule.name, "version": rule.version,
                     "object_id": compiled.object_id},
            "trigger": {"name": trigger, "severity": severity},
            "entity": ent,
            "count": _number(bucket.count), "window": rule_window(rule, self.settings),
            "evidence_query": evidence_query(rule, bounded(first_key)),
            "start_time": now_iso(at), "last_seen_time": now_iso(at),
            "period_start": now_iso(period), "period_end": now_iso(period),
            "event_time": now_iso(event_time or period), "detected_time": now_iso(at), "late": late,
            "message": {"subject": subject(rule, escalated), "text": text},
            "channels": channels, "deliveries": [],
            "history": [{"at": now_iso(at), "state": ACTIVE, "by": ENGINE,
                         "note": f"{trigger} fired" + (f" (late, events at {now_iso(event_time or period)})"
                                                       if late else "")}],
        }

    def _names(self, compiled: CompiledRule, bucket: Bucket) -> dict[str, str]:
        """The accounts of an alert's entity named through the directory (docs/identity.md), at the
        moment the alert is raised: its field -> how the message names it. Remembered per entity,
        so a rule that keeps firing does not look them up on every run."""
        if not directory_configured(self.settings):
            return {}
        d = compiled.rule.detection
        wanted = {f: v for f, v in zip([d.entity, *d.group_by], bucket.keys, strict=False) if f in ACCOUNT_FIELDS and v}
        key = (compiled.object_id, bucket.keys)
        if wanted and key not in self.named:
            try:
                found = lookup_names(self.cluster, self.settings, list(wanted.values()))
            except PacsguardError as exc:
                self.progress(f"warning: names of {bucket.entity}: {exc}")
                return {}  # the alert goes out with the ids; naming them is not worth losing it
            if len(self.named) >= 10_000:
                self.named.clear()
            self.named[key] = {f: found[v].text() for f, v in wanted.items()}
        return self.named.get(key, {})

    def _open(self, compiled: CompiledRule, entity: str, severity: str, bucket: Bucket, trigger: str,
              at: dt.datetime) -> None:
        self._guard()
        alert = self.store.create(self._doc(compiled, entity, severity, bucket, trigger, at))
        self.report.opened += 1
        self.progress(f"alert {alert.id}: {compiled.signal} {severity} {entity} (owner {alert.source['owner']})")
        self._notify(alert, "new", at)

    def _still_firing(self, compiled: CompiledRule, alert: Alert, severity: str, bucket: Bucket, trigger: str,
                      at: dt.datetime) -> None:
        fresh = self._doc(compiled, alert.entity, severity, bucket, trigger, at)
        raised = False

        def refresh_alert(src: dict[str, Any]) -> None:
            nonlocal raised
            src["last_seen_time"] = src["period_end"] = now_iso(at)
            src["count"] = _number(bucket.count)
            if src.get("state") == ERROR:
                src["state"] = ACTIVE
            raised = SEVERITY_RANK[severity] < SEVERITY_RANK.get(src.get("severity", "info"), 5)
            if raised:
                src.update(severity=severity, escalated=fresh["escalated"], owner=fresh["owner"],
                           trigger=fresh["trigger"], message=fresh["message"], channels=fresh["channels"])
                src.setdefault("history", []).append({"at": now_iso(at), "state": src["state"], "by": ENGINE,
                                                      "note": f"severity raised to {severity}: {trigger}"})

        updated = self.store.update(alert.id, refresh_alert)
        if raised:
            self.report.escalated += 1
            self._notify(updated, "escalated", at)

    # ------------------------------------------------------------ delivery

    def _notify(self, alert: Alert, kind: str, at: dt.datetime) -> None:
        """Record a pending delivery per channel on the alert, then send in a worker thread."""
        sends: list[tuple[Channel, str]] = []
        # a snoozed rule's alert is recorded; its delivery waits for the snooze's end (services/exceptions.py)
        snooze = snoozed_delivery(self.cluster, self.settings, alert.source, at)
        status = "snoozed" if snooze else "pending"

        def add_pending(src: dict[str, Any]) -> None:
            sends.clear()
            n = sum(1 for d in src.get("deliveries", []) if d.get("kind") == kind)
            for name in src.get("channels", []):
                channel = self.channels.get(name)
                if channel is None:
                    continue
                delivery_id = f"{alert.id}.{kind}{n}.{name}"
                src.setdefault("deliveries", []).append({"delivery_id": delivery_id, "channel": name, "kind": kind,
                                                         "ok": False, "attempts": 0, "status": status,
                                                         "at": now_iso(at), "claim": self._claim()})
                sends.append((channel, delivery_id))
            src["last_notification_time"] = now_iso(at)

        updated = self.store.update(alert.id, add_pending)
        if snooze:
            self.progress(f"alert {alert.id}: {kind} delivery held back by snooze {snooze.id} until {snooze.expires}")
            return
        for channel, delivery_id in sends:
            self._send(updated, channel, delivery_id, kind)

    def _claim(self) -> dict[str, Any]:
        """Who sends a delivery: this instance, under its lease epoch (None: it never led)."""
        return {"by": self.lease.holder, "epoch": self.lease.epoch}

    def _send(self, alert: Alert, channel: Channel, delivery_id: str, kind: str) -> None:
        src = alert.source
        message = AlertMessage(subject=src["message"]["subject"], text=src["message"]["text"],
                               alert=_public(alert))
        future = self.lanes.submit(channel.name, self._deliver_as_leader, alert.id, channel, message, delivery_id)
        self.pending.append(Pending(alert.id, delivery_id, channel.name, kind, future))

    def _deliver_as_leader(self, alert_id: str, channel: Channel, message: AlertMessage,
                           delivery_id: str) -> DeliveryResult | None:
        """Send unless the lease was lost while the delivery waited in its lane (None: not sent; the
        claim stays, and the next leader sends it), and record the outcome on the alert at once:
        the shorter the time between an answer and its record, the less a successor sends again.
        A leader that lost its lease meanwhile still records what it did send: that is true."""
        if not self._may_act():
            return None
        result = deliver(channel, message, delivery_id=delivery_id, policy=self.settings.notifications.delivery)

        def record(src: dict[str, Any]) -> None:
            for d in src.get("deliveries", []):
                if d.get("delivery_id") == delivery_id:
                    d.update(ok=result.ok, attempts=int(d.get("attempts", 0)) + result.attempts,
                             status=result.status or result.reason, error=result.error,
                             at=now_iso(result.finished_at))

        try:
            self.store.update(alert_id, record)
        except PacsguardError as exc:  # the cluster is away: the record stays pending, sent again later
            self.progress(f"delivery {delivery_id}: outcome not recorded: {exc}")
        return result

    def _collect_deliveries(self, wait: bool = False) -> None:
        """Count the finished deliveries (their lanes recorded them on the alerts)."""
        still: list[Pending] = []
        for p in self.pending:
            if not (wait or p.future.done()):
                still.append(p)
                continue
            result = p.future.result()
            if result is None:
                continue
            if result.ok:
                self.report.delivered += 1
            else:
                self.report.failed_deliveries += 1
                self.next_scan = None
                self.progress(f"delivery {p.delivery_id} failed: {result.error or result.reason}")
        self.pending = still

    def _retry_and_remind(self, now: dt.datetime | None) -> None:
        at = now or dt.datetime.now(dt.timezone.utc)
        if self.next_scan is not None and at < self.next_scan:
            return
        self.next_scan = at + dt.timedelta(seconds=self.scan_every)
        in_flight = {p.delivery_id for p in self.pending}
        seen: set[str] = set()
        # a completed alert whose delivery failed is still owed its message
        for found in [*self.store.search(states=[ACTIVE, "ACKNOWLEDGED"], size=1000),
                      *self.store.undelivered([COMPLETED])]:
            if found.id in seen or found.source.get("engine") != ENGINE \
                    or not _needs_attention(found.source, at, self.renotify):
                continue
            seen.add(found.id)
            alert = self.store.get(found.id)  # a search may lag behind the last write: decide on the document
            # a snoozed rule's deliveries wait for the snooze's end (services/exceptions.py)
            snoozed = snoozed_delivery(self.cluster, self.settings, alert.source, at)
            due = [] if snoozed else [d["delivery_id"] for d in alert.source.get("deliveries", [])
                                      if d["delivery_id"] not in in_flight and self._due(d, at)]
            if due:
                alert, due = self._take(alert.id, due, at)
                for d in alert.source.get("deliveries", []):
                    if d["delivery_id"] in due:
                        self._send(alert, self.channels[d["channel"]], d["delivery_id"], d.get("kind", "new"))
                        in_flight.add(d["delivery_id"])
            src = alert.source
            last_note = src.get("last_notification_time")
            if (self.renotify and alert.state == ACTIVE and last_note and not snoozed
                    and (at - dt.datetime.fromisoformat(last_note)).total_seconds() >= self.renotify):
                self._notify(alert, "reminder", at)

    def _due(self, d: dict[str, Any], at: dt.datetime) -> bool:
        """Whether this leader should send a delivery that is not done.

        Its own claim: a failed try is retried after redeliver_after. Another instance's claim
        (an older epoch, or one from before leases): that instance may still be sending it, but
        it stops starting sends when its lease runs out and each send is bounded by the delivery
        policy; so once this leader has held the lease that long, the claim is stale. When the
        lease was handed over cleanly (released at a stop), the old holder had finished."""
        if d.get("ok") or d["channel"] not in self.channels:
            return False
        claim = d.get("claim") or {}
        mine = claim.get("by") == self.lease.holder and claim.get("epoch") == self.lease.epoch
        if not mine and self.lease.took_over:
            bound = self.settings.notifications.delivery.total_seconds + self.lease.ttl
            if self.clock() < self.lease.acquired_at + bound:
                return False
        # "pending": a send nobody finished (another instance's, or one this instance never made);
        # "snoozed": one that waited for its snooze to end
        last = dt.datetime.fromisoformat(str(d.get("at")))
        return d.get("status") in ("pending", "snoozed") or (at - last).total_seconds() >= self.redeliver

    def _take(self, alert_id: str, due: list[str], at: dt.datetime) -> tuple[Alert, set[str]]:
        """Claim deliveries on the alert document (optimistic concurrency): only those still not
        done and still as seen are taken, so two instances never both take one."""
        taken: set[str] = set()

        def claim(src: dict[str, Any]) -> bool:
            taken.clear()
            for d in src.get("deliveries", []):
                if d["delivery_id"] in due and self._due(d, at):
                    d["claim"] = self._claim()
                    taken.add(d["delivery_id"])
            return bool(taken)

        self._guard()
        return self.store.update(alert_id, claim), taken

    def _record_status(self, state: RuleState, at: dt.datetime) -> None:
        cp = state.checkpoint
        behind = cp.get("behind_periods") or 0
        self.cluster.request("PUT", f"/{self.settings.index('state')}/_doc/{WATCH_STATUS_PREFIX}{state.compiled.signal}",
                             body={"kind": "watch", "id": state.compiled.object_id, "engine": ENGINE,
                                   "signal": state.compiled.signal, "last_run": state.last_run,
                                   "last_error": state.last_error, "took_ms": round(state.last_took_ms, 1),
                                   "checkpoint": cp, "evaluated_through": cp.get("evaluated_through"),
                                   "catching_up": behind, "entity_errors": state.entity_errors,
                                   "leader": self.lease.holder, "written_at": now_iso(at)})
        state.written_epoch = self.lease.epoch

    def close(self) -> None:
        """Finish the rule runs and deliveries in flight (still leading meanwhile), then hand the
        lease over."""
        self.heartbeat = float("inf")
        self.rule_pool.shutdown(wait=True, cancel_futures=True)
        self.event_pool.shutdown(wait=True, cancel_futures=True)
        with self.lock:
            self._collect_deliveries(wait=True)
        self.lanes.shutdown(wait=True)
        self._stop_renewing.set()
        if self._renewer is not None:
            self._renewer.join()
        self.lease.release()


def _needs_attention(src: dict[str, Any], at: dt.datetime, renotify: int) -> bool:
    """A delivery not yet ok, or a reminder due (cheap pre-check on a search hit)."""
    if any(not d.get("ok") for d in src.get("deliveries", [])):
        return True
    last = src.get("last_notification_time")
    return bool(renotify and src.get("state") == ACTIVE and last
                and (at - dt.datetime.fromisoformat(last)).total_seconds() >= renotify)


# The entity fields that hold an account, and how a message calls each.
ACCOUNT_FIELDS = {"user.name": "Actor", "user.target.name": "Target"}


def with_names(text: str, names: dict[str, str]) -> str:
    """The message with a line per named account after its entity line."""
    if not names:
        return text
    lines = text.split("\n")
    at = next((i + 1 for i, line in enumerate(lines) if line.startswith("Entity (")), len(lines))
    named = [f"{ACCOUNT_FIELDS[f]} ({f}): {n}" for f, n in names.items()]
    return "\n".join(lines[:at] + named + lines[at:])


def _number(value: Any) -> int | float | None:
    """A bucket's count as a person reads it: 9, not 9.0 (aggregations answer doubles)."""
    if not isinstance(value, (int, float)):
        return None
    return int(value) if float(value).is_integer() else float(value)


def _public(alert: Alert) -> dict[str, Any]:
    """What a receiver gets: the alert without its delivery bookkeeping."""
    src = alert.source
    keep = ("state", "severity", "escalated", "owner", "rule", "trigger", "entity", "count", "window",
            "evidence_query", "start_time", "engine")
    return {"id": alert.id, **{k: src.get(k) for k in keep}}


def run_forever(watcher: Watcher, stop: threading.Event) -> WatchReport:
    """Tick until stopped; a cluster outage is reported and retried, never fatal."""
    try:
        while not stop.is_set():
            try:
                watcher.tick(wait=False)
            except PacsguardError as exc:
                watcher.report.errors.append(str(exc))
                watcher.progress(f"error: {exc}")
            stop.wait(watcher.settings.engine.tick_seconds)
    finally:
        watcher.close()
    return watcher.report


def watch_status(cluster: Cluster, settings: Settings) -> list[dict[str, Any]]:
    """Per rule on the pacsguard engine: last run, last error (from what `watch` recorded)."""
    res = cluster.request("POST", f"/{settings.index('state')}/_search", ok_missing=True,
                          body={"size": 100, "query": {"term": {"kind": "watch"}}}) or {}
    return [h["_source"] for h in res.get("hits", {}).get("hits", [])]


def watch_leader(cluster: Cluster, settings: Settings) -> dict[str, Any] | None:
    """Which `watch` holds the lease (holder, epoch, renewed_at, expires_at), if any."""
    return read_lease(cluster, settings.index("state"))


def _span(src: dict[str, Any]) -> tuple[dt.datetime, dt.datetime]:
    """The period ends an alert fired at, first and last (alerts from before period_* was kept:
    its first and last run, which were its period ends)."""
    first = _time(src.get("period_start") or src["start_time"])
    return first, _time(src.get("period_end") or src.get("last_seen_time") or src["start_time"])


def _overlaps(src: dict[str, Any], end: dt.datetime, window: int) -> bool:
    """Whether the window ending at `end` overlaps the windows the alert fired in: one episode."""
    first, last = _span(src)
    reach = dt.timedelta(seconds=window)
    return first - reach <= end and end - reach <= last


def _time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
