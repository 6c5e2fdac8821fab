"""Per rule, on whichever engine runs it: installed, running, last run, last error, open alerts.

One reading for `status` and the posture checklist. The pacsguard engine records each
run in the pack's state index (`watch`); Alerting's scheduler says when it last ran each
monitor (`_plugins/_alerting/stats`) and records a run that failed as an ERROR alert.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings, duration_seconds
from pacsguard.engines.alerting import monitor_runs
from pacsguard.engines.alerts import ERROR, QUEUE, now_iso
from pacsguard.packobjects import KINDS
from pacsguard.rules.compiler import compile_rules, rule_channels
from pacsguard.services.alerts import list_alerts
from pacsguard.services.install import alerting_signals
from pacsguard.services.response.context import parse_time
from pacsguard.services.watch import ENGINE, watch_status

ALERTING = "alerting"


@dataclass
class RuleRun:
    signal: str
    rule: str
    enabled: bool
    engine: str               # pacsguard | alerting
    installed: bool
    running: bool             # ran within a few of its periods (a disabled rule: False)
    last_run: str | None      # ISO 8601
    last_error: str | None
    open_alerts: int          # in the work queue: open or acknowledged, active or cleared
    channels: list[str]
    owner: str
    # the pack's engine: the period it has evaluated through, periods still to catch up, entities
    # it could not write (services/watch.py checkpoints)
    evaluated_through: str | None = None
    catching_up: int = 0
    entity_errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def healthy(self) -> bool:
        return not self.enabled or (self.installed and self.running and not self.last_error)


def rule_runs(cluster: Cluster, settings: Settings, now: dt.datetime | None = None) -> list[RuleRun]:
    now = now or dt.datetime.now(dt.timezone.utc)
    plugins, _ = cluster.installed_components()
    on_alerting = alerting_signals(settings, plugins)
    installed = cluster.exists(f"/{settings.index('alerts')}")  # every install creates it
    # `watch` writes its status without waiting for a refresh: make the last runs visible first
    cluster.request("POST", f"/{settings.index('state')}/_refresh", ok_missing=True)
    recorded = {s.get("signal"): s for s in watch_status(cluster, settings)}
    monitors: dict[str, dict[str, Any]] = {}
    runs: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    if on_alerting and "opensearch-alerting" in plugins:
        monitors = KINDS["monitor"].candidates(cluster, settings.id_prefix)
        runs = monitor_runs(cluster)
    queued: dict[str, int] = {}
    for view in list_alerts(cluster, settings, statuses=list(QUEUE)):
        queued[view.signal] = queued.get(view.signal, 0) + 1
        if view.engine == ALERTING and view.state == ERROR:
            errors.setdefault(view.signal, str((view.detail or {}).get("error_message") or "monitor run failed"))
    out = []
    for c in compile_rules(settings):
        rule = c.rule
        # a rule "runs" when its engine ran it within a few of its periods (event rules: seconds)
        stale = max(3 * duration_seconds(rule.schedule), 600)
        if rule.signal in on_alerting:
            engine, live = ALERTING, monitors.get(c.object_id)
            ran = runs.get(str(live["_monitor_id"])) if live else None
            last_run = now_iso(dt.datetime.fromtimestamp(ran["last_run"] / 1000, dt.timezone.utc)) if ran else None
            is_installed = live is not None
            running = bool(live and live.get("enabled") and ran and ran["on_time"]
                           and (now - parse_time(last_run)).total_seconds() <= stale)
            error = errors.get(rule.signal)
            seen: dict[str, Any] = {}
        else:
            seen = recorded.get(rule.signal) or {}
            engine, last_run, error, is_installed = ENGINE, seen.get("last_run"), seen.get("last_error"), installed
            written = seen.get("written_at")
            running = bool(written) and (now - parse_time(written)).total_seconds() <= stale
            unwritten = seen.get("entity_errors") or []
            if unwritten and not error:
                error = (f"{len(unwritten)} entit{'y' if len(unwritten) == 1 else 'ies'} not written, first "
                         f"{unwritten[0]['entity']}: {unwritten[0]['error']}")
        route = settings.routing.route(rule.signal, rule.severity)
        out.append(RuleRun(rule.signal, rule.name, rule.enabled, engine, is_installed, running and rule.enabled,
                           last_run, error, queued.get(rule.signal, 0), rule_channels(rule, settings),
                           route.owner, seen.get("evaluated_through"), seen.get("catching_up") or 0,
                           seen.get("entity_errors") or []))
    return out
