"""`pacsguard watch`: the alerting loop where OpenSearch Alerting does not run the rules.

Every enabled rule whose engine is pacsguard runs on its schedule with core
search (the same compiled monitor body Alerting would run, engines/core.py);
event rules (signal 3) every few seconds. Firing entities become alerts with
Alerting's lifecycle (engines/alerts.py): one alert per (rule, entity) while
the condition holds, COMPLETED when it clears, severity raised when an
escalation trigger (4c) fires for an open alert. New and escalated alerts are
delivered to the routed channels (engines/delivery.py) in worker threads, each
delivery recorded on the alert before and after it is sent, with a stable
delivery id, so a restart neither loses nor repeats a message. The baseline and
profile jobs run on their own interval beside the rules.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pacsguard.core.connection import Cluster
from pacsguard.core.errors import PacsguardError
from pacsguard.core.models import Progress, quiet
from pacsguard.core.settings import Channel, Settings, duration_seconds
from pacsguard.engines import core
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
from pacsguard.engines.delivery import AlertMessage, DeliveryResult, deliver
from pacsguard.engines.result import Bucket, MonitorRun
from pacsguard.jobs import run_job
from pacsguard.jobs.directory import directory_configured, lookup_names
from pacsguard.jobs.schedule import all_jobs
from pacsguard.rules.compiler import (
    CompiledRule,
    compile_rules,
    evidence_query,
    message_template,
    rule_window,
    subject,
)
from pacsguard.services.exceptions import snoozed_delivery
from pacsguard.services.install import alerting_signals

ENGINE = "pacsguard"
WATCH_STATUS_PREFIX = "watch:"


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
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pacsguard-delivery")
        # Rules run in workers of their own, so a slow windowed rule never holds back the
        # event rules due every few seconds; alert documents change under one lock.
        self.rule_pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="pacsguard-rule")
        self.lock = threading.RLock()
        self.pending: list[Pending] = []
        self.report = WatchReport()
        self.run_jobs = run_jobs
        self.jobs_every = duration_seconds(settings.engine.jobs_every)
        self.next_jobs = 0.0
        self.jobs_thread: threading.Thread | None = None
        self.renotify = duration_seconds(settings.engine.renotify_every)
        self.redeliver = duration_seconds(settings.engine.redeliver_after)
        self.named: dict[tuple[str, tuple[str, ...]], dict[str, str]] = {}

    # ------------------------------------------------------------ one tick

    def tick(self, now: dt.datetime | None = None, wait: bool = True) -> None:
        """Start the rules that are due (each in a worker), deliver, remind.

        wait=True (tests, --once) returns once the rules started here have run;
        the loop passes False and picks up their results on later ticks.
        """
        with self.lock:
            self._collect_deliveries()
        mono = self.clock()
        if self.run_jobs and mono >= self.next_jobs and not (self.jobs_thread and self.jobs_thread.is_alive()):
            self.next_jobs = mono + self.jobs_every
            self.jobs_thread = threading.Thread(target=self._jobs, name="pacsguard-jobs", daemon=True)
            self.jobs_thread.start()
        started = []
        for state in self.rules:
            if mono >= state.next_run and (state.running is None or state.running.done()):
                state.next_run = mono + state.every
                state.running = self.rule_pool.submit(self.run_rule, state, now)
                started.append(state.running)
        if wait:
            for future in started:
                future.result()
        with self.lock:
            self._retry_and_remind(now)

    def _jobs(self) -> None:
        for job in all_jobs(self.settings):
            try:
                run_job(self.cluster, self.settings, job)
            except PacsguardError as exc:
                self.report.errors.append(f"job {job}: {exc}")
                self.progress(f"error: job {job}: {exc}")

    def run_rule(self, state: RuleState, now: dt.datetime | None = None) -> None:
        """Run one rule and apply what it found; an error is recorded, never raised (a worker runs this)."""
        compiled = state.compiled
        at = now or dt.datetime.now(dt.timezone.utc)
        try:
            run = core.run(self.cluster, compiled.monitor, at)
            with self.lock:
                self._apply(state, run, at)
        except Exception as exc:  # noqa: BLE001 - a worker must record every failure, not lose it
            state.last_error = str(exc) if isinstance(exc, PacsguardError) else f"{type(exc).__name__}: {exc}"
            self.report.errors.append(f"rule {compiled.signal}: {state.last_error}")
            self.progress(f"error: rule {compiled.signal}: {state.last_error}")
            try:
                self._record_status(state, at)
            except PacsguardError:
                pass  # the cluster is away: the next run records it

    def _apply(self, state: RuleState, run: MonitorRun, at: dt.datetime) -> None:
        compiled = state.compiled
        open_alerts = self.store.open_alerts(compiled.object_id)
        state.last_error, state.last_run, state.last_took_ms = None, now_iso(at), run.took_ms
        state.runs += 1
        self.report.runs += 1
        firing = _firing(run)
        for entity, (severity, bucket, trigger) in firing.items():
            alert = open_alerts.get(entity)
            if alert is None:
                self._open(compiled, entity, severity, bucket, trigger, at)
            else:
                self._still_firing(compiled, alert, severity, bucket, trigger, at)
        for entity, alert in open_alerts.items():
            if entity not in firing and alert.state != ERROR:
                def complete(src: dict[str, Any]) -> bool:
                    if src.get("state") in (COMPLETED, ERROR):
                        return False  # closed by a person in the meantime
                    src["state"] = COMPLETED
                    src["end_time"] = now_iso(at)
                    src.setdefault("history", []).append(
                        {"at": now_iso(at), "state": COMPLETED, "by": ENGINE, "note": "condition cleared"})
                    return True
                self.store.update(alert.id, complete)
                self.report.completed += 1
        self.store.refresh()
        self._record_status(state, at)

    # ------------------------------------------------------------ lifecycle

    def _doc(self, compiled: CompiledRule, entity: str, severity: str, bucket: Bucket, trigger: str,
             at: dt.datetime) -> dict[str, Any]:
        rule = compiled.rule
        escalated = severity == "critical" and rule.severity != "critical"
        route = self.settings.routing.route(rule.signal, severity)
        channels = route.channels if route.channels is not None else list(self.channels)
        text = core.render_mustache(message_template(rule, self.settings, escalated), {"ctx": {
            "monitor": {"name": compiled.monitor["name"]}, "trigger": {"name": trigger, "severity": severity},
            "periodEnd": now_iso(at).replace("+00:00", "Z"), "newAlerts": [{"bucket_keys": entity, "count": _number(bucket.count)}]}})
        names = self._names(compiled, bucket)
        text = with_names(text, names)
        return {
            "@timestamp": now_iso(at), "engine": ENGINE, "state": ACTIVE, "status": OPEN, "severity": severity,
            "escalated": escalated, "owner": route.owner,
            "rule": {"id": str(rule.id), "signal": rule.signal, "name": rule.name, "version": rule.version,
                     "object_id": compiled.object_id},
            "trigger": {"name": trigger, "severity": severity},
            "entity": {"value": entity, "keys": list(bucket.keys), "field": rule.detection.entity,
                       **({"names": names} if names else {})},
            "count": _number(bucket.count), "window": rule_window(rule, self.settings),
            "evidence_query": evidence_query(rule, bucket.keys[0] if bucket.keys else entity),
            "start_time": now_iso(at), "last_seen_time": now_iso(at),
            "message": {"subject": subject(rule, escalated), "text": text},
            "channels": channels, "deliveries": [],
            "history": [{"at": now_iso(at), "state": ACTIVE, "by": ENGINE, "note": f"{trigger} fired"}],
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
            src["last_seen_time"] = now_iso(at)
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
                                                         "at": now_iso(at)})
                sends.append((channel, delivery_id))
            src["last_notification_time"] = now_iso(at)

        updated = self.store.update(alert.id, add_pending)
        if snooze:
            self.progress(f"alert {alert.id}: {kind} delivery held back by snooze {snooze.id} until {snooze.expires}")
            return
        for channel, delivery_id in sends:
            self._send(updated, channel, delivery_id, kind)

    def _send(self, alert: Alert, channel: Channel, delivery_id: str, kind: str) -> None:
        src = alert.source
        message = AlertMessage(subject=src["message"]["subject"], text=src["message"]["text"],
                               alert=_public(alert))
        future = self.pool.submit(deliver, channel, message, delivery_id=delivery_id,
                                  policy=self.settings.notifications.delivery)
        self.pending.append(Pending(alert.id, delivery_id, channel.name, kind, future))

    def _collect_deliveries(self, wait: bool = False) -> None:
        still: list[Pending] = []
        for p in self.pending:
            if not (wait or p.future.done()):
                still.append(p)
                continue
            result = p.future.result()

            def record(src: dict[str, Any], p: Pending = p, result: DeliveryResult = result) -> None:
                for d in src.get("deliveries", []):
                    if d.get("delivery_id") == p.delivery_id:
                        d.update(ok=result.ok, attempts=int(d.get("attempts", 0)) + result.attempts,
                                 status=result.status or result.reason, error=result.error,
                                 at=now_iso(result.finished_at))

            self.store.update(p.alert_id, record)
            if result.ok:
                self.report.delivered += 1
            else:
                self.report.failed_deliveries += 1
                self.progress(f"delivery {p.delivery_id} failed: {result.error or result.reason}")
        self.pending = still

    def _retry_and_remind(self, now: dt.datetime | None) -> None:
        at = now or dt.datetime.now(dt.timezone.utc)
        in_flight = {p.delivery_id for p in self.pending}
        for found in self.store.search(states=[ACTIVE, "ACKNOWLEDGED"], size=1000):
            if found.source.get("engine") != ENGINE or not _needs_attention(found.source, at, self.renotify):
                continue
            alert = self.store.get(found.id)  # a search may lag behind the last write: decide on the document
            src = alert.source
            snoozed = snoozed_delivery(self.cluster, self.settings, src, at)
            for d in src.get("deliveries", []):
                if d.get("ok") or d["delivery_id"] in in_flight or d["channel"] not in self.channels or snoozed:
                    continue
                last = dt.datetime.fromisoformat(str(d.get("at")))
                # a "pending" record is one a stopped watch never finished: send it again, same id;
                # a "snoozed" one waited for its snooze to end
                if d.get("status") in ("pending", "snoozed") or (at - last).total_seconds() >= self.redeliver:
                    self._send(alert, self.channels[d["channel"]], d["delivery_id"], d.get("kind", "new"))
                    in_flight.add(d["delivery_id"])
            last_note = src.get("last_notification_time")
            if (self.renotify and alert.state == ACTIVE and last_note and not snoozed
                    and (at - dt.datetime.fromisoformat(last_note)).total_seconds() >= self.renotify):
                self._notify(alert, "reminder", at)

    def _record_status(self, state: RuleState, at: dt.datetime) -> None:
        self.cluster.request("PUT", f"/{self.settings.index('state')}/_doc/{WATCH_STATUS_PREFIX}{state.compiled.signal}",
                             body={"kind": "watch", "id": state.compiled.object_id, "engine": ENGINE,
                                   "signal": state.compiled.signal, "last_run": state.last_run,
                                   "last_error": state.last_error, "took_ms": round(state.last_took_ms, 1),
                                   "written_at": now_iso(at)})

    def close(self) -> None:
        self.rule_pool.shutdown(wait=True, cancel_futures=True)
        with self.lock:
            self._collect_deliveries(wait=True)
        self.pool.shutdown(wait=True)


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
