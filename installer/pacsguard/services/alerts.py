"""`pacsguard alerts`: one work queue over the alerts of both engines, and acknowledge/close.

The pacsguard engine's alerts live in the pack's alerts index; Alerting's are
read from its alerts API (monitors whose name carries this installation's
scope) and acknowledged through `_acknowledge/alerts`. The ids tell them apart:
the pack's start with `pg-`.

Every alert has a condition (active, cleared, error: the engine's) and a
workflow status (open, acknowledged, closed: the analysts'). Alerting keeps no
workflow of its own beyond ACKNOWLEDGED, so a person's ack and close of an
Alerting alert, with who and why, are recorded in the pack's actions index
(step `workflow`) and read back here; both engines then answer the same way.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pacsguard.core.connection import Cluster
from pacsguard.core.errors import PacsguardError
from pacsguard.core.escaping import path_segment
from pacsguard.core.settings import Settings
from pacsguard.engines.alerts import (
    ACK,
    ACKED,
    ACKNOWLEDGED,
    ACTIVE,
    CLOSE,
    CLOSED,
    COMPLETED,
    DELETED,
    OPEN,
    QUEUE,
    SEVERITY_NAMES,
    AlertNotFound,
    AlertStore,
    condition_of,
    now_iso,
    status_of,
    workflow_change,
)
from pacsguard.engines.core import bucket_value
from pacsguard.engines.result import Bucket, join_keys, key_values
from pacsguard.packobjects import KINDS, Monitor
from pacsguard.response.actions import ActionLog, ActionRecord
from pacsguard.rules.compiler import compile_rules

PACK_ID_PREFIX = "pg-"
WORKFLOW_STEP = "workflow"
ALERTING_PAGE = 1000


@dataclass
class AlertView:
    id: str
    engine: str
    state: str           # Alerting's lifecycle: ACTIVE, ACKNOWLEDGED, COMPLETED, ERROR (DELETED: Alerting only)
    status: str          # the work queue: open, acknowledged, closed
    severity: str
    signal: str
    rule: str
    entity: str
    owner: str
    start_time: str      # ISO 8601, UTC, both engines
    count: Any = None
    keys: list[str] = field(default_factory=list)
    detail: dict[str, Any] | None = None

    @property
    def condition(self) -> str:
        return condition_of(self.state)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "detail" or v is not None}
        out["condition"] = self.condition
        return out


def _number(value: Any) -> Any:
    """A count as people read it: 9, not 9.0."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _pack_view(alert_id: str, src: dict[str, Any], detail: bool = False) -> AlertView:
    rule = src.get("rule") or {}
    entity = src.get("entity") or {}
    return AlertView(alert_id, "pacsguard", src.get("state", ""), status_of(src), src.get("severity", ""),
                     rule.get("signal", ""), rule.get("name", ""), entity.get("value", ""), src.get("owner", ""),
                     src.get("start_time", ""), _number(src.get("count")),
                     [str(k) for k in entity.get("keys") or [entity.get("value", "")]], src if detail else None)


def _alerting_alerts(cluster: Cluster, settings: Settings) -> list[dict[str, Any]]:
    """This installation's Alerting alerts, active and in history (paged to the end): those of the
    monitors it owns now. Alerting keeps the history of a removed monitor (COMPLETED or DELETED);
    after an uninstall those alerts are nobody's, and a later install of the same scope starts clean."""
    plugins, _ = cluster.installed_components()
    if "opensearch-alerting" not in plugins:
        return []
    monitors = {str(live["_monitor_id"]) for live in KINDS["monitor"].candidates(cluster, settings.id_prefix).values()
                if (stamp := KINDS["monitor"].stamp_of(live)) is not None and stamp.owner == settings.owner}
    if not monitors:
        return []
    out: dict[str, dict[str, Any]] = {}
    start = 0
    while True:
        res = cluster.request("GET", "/_plugins/_alerting/monitors/alerts", params={
            "size": ALERTING_PAGE, "startIndex": start, "sortString": "start_time", "sortOrder": "desc"}) or {}
        page = res.get("alerts", [])
        for a in page:
            if str(a.get("monitor_id")) in monitors:
                # an alert being moved to history can show in both indices for a moment: the
                # history copy (completed, deleted) is the newer one
                seen = out.get(str(a.get("id")))
                if seen is None or a.get("state") in (COMPLETED, DELETED):
                    out[str(a.get("id"))] = a
        start += len(page)
        if len(page) < ALERTING_PAGE or start >= int(res.get("totalAlerts") or 0):
            return list(out.values())


def _epoch_iso(value: Any) -> str:
    if isinstance(value, (int, float)):
        return now_iso(dt.datetime.fromtimestamp(value / 1000, dt.timezone.utc))
    return str(value or "")


def _workflow_records(cluster: Cluster, settings: Settings, alert_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The workflow of Alerting alerts as the pack recorded it: {alert id: record-like source}."""
    if not alert_ids:
        return {}
    out: dict[str, dict[str, Any]] = {}
    index = settings.index("actions")
    for i in range(0, len(alert_ids), 1000):
        res = cluster.request("POST", f"/{index}/_search", ok_missing=True, body={
            "size": 10_000, "sort": [{"@timestamp": "asc"}], "query": {"bool": {"filter": [
                {"term": {"step": WORKFLOW_STEP}}, {"terms": {"alert_id": alert_ids[i:i + 1000]}}]}}}) or {}
        for hit in res.get("hits", {}).get("hits", []):
            rec = ActionRecord.from_doc(hit["_id"], hit["_source"])
            src = out.setdefault(rec.alert_id, {"status": OPEN})
            workflow_change(src, ACK if rec.action == "acknowledge" else CLOSE, rec.by, rec.detail, rec.at)
    return out


class _Rules:
    """The compiled rules by signal, to read an Alerting alert's figures by the trigger's own paths."""

    def __init__(self, settings: Settings) -> None:
        self.by_signal = {c.signal: c for c in compile_rules(settings)}

    def count(self, signal: str, trigger_name: str, bucket: dict[str, Any]) -> Any:
        compiled = self.by_signal.get(signal)
        if compiled is None:
            return None
        for trig in compiled.monitor["triggers"]:
            body = trig["bucket_level_trigger"]
            if body["name"] == trigger_name:
                paths = body["condition"]["buckets_path"]
                return _number(Bucket((), {n: bucket_value(bucket, p) for n, p in paths.items()}).count)
        return None


def _alerting_view(a: dict[str, Any], settings: Settings, rules: _Rules,
                   workflow: dict[str, Any] | None = None) -> AlertView:
    content = a.get("agg_alert_content") or {}
    bucket = content.get("bucket") or {}
    # by name from the bucket's key map: bucket_keys is in Alerting's hash-map order
    keys = list(key_values(bucket.get("key") or content.get("bucket_keys") or []))
    signal = Monitor.object_id({"name": a.get("monitor_name", "")}).rsplit("-rule-", 1)[-1]
    severity = SEVERITY_NAMES.get(str(a.get("severity")), str(a.get("severity")))
    state = str(a.get("state", ""))
    status = status_of(workflow) if workflow else (ACKED if state == ACKNOWLEDGED else OPEN)
    detail = dict(a, start_time=_epoch_iso(a.get("start_time")),
                  **{k: _epoch_iso(a.get(k)) for k in ("end_time", "acknowledged_time", "last_notification_time")
                     if a.get(k) is not None})
    if workflow:
        detail["workflow"] = workflow
    return AlertView(str(a.get("id")), "alerting", state, status, severity, signal, str(a.get("trigger_name", "")),
                     join_keys(keys) if keys else "", settings.routing.route(signal, severity).owner,
                     _epoch_iso(a.get("start_time")), rules.count(signal, str(a.get("trigger_name", "")), bucket),
                     keys, detail)


def _alerting_views(cluster: Cluster, settings: Settings) -> list[AlertView]:
    raw = _alerting_alerts(cluster, settings)
    if not raw:
        return []
    records = _workflow_records(cluster, settings, [str(a.get("id")) for a in raw])
    rules = _Rules(settings)
    return [_alerting_view(a, settings, rules, records.get(str(a.get("id")))) for a in raw]


def list_alerts(cluster: Cluster, settings: Settings, states: list[str] | None = None,
                signal: str | None = None, statuses: list[str] | None = None) -> list[AlertView]:
    """Alerts of both engines, newest first. states filters the condition (Alerting's lifecycle),
    statuses the work queue (e.g. QUEUE: open and acknowledged, whatever the condition).
    Alerting's DELETED alerts (their monitor was updated or removed) are left out unless asked for."""
    store = AlertStore(cluster, settings.index("alerts"))
    views = [_pack_view(a.id, a.source) for a in store.search(states=states, signal=signal, size=1000,
                                                               statuses=statuses)]
    views += [v for v in _alerting_views(cluster, settings)
              if (v.state in states if states else v.state != DELETED)
              and (not statuses or v.status in statuses) and (not signal or v.signal == signal)]
    return sorted(views, key=lambda v: v.start_time, reverse=True)


def queue(cluster: Cluster, settings: Settings, signal: str | None = None) -> list[AlertView]:
    """The work queue: every alert nobody closed, active or cleared, of both engines."""
    return list_alerts(cluster, settings, signal=signal, statuses=list(QUEUE))


def show_alert(cluster: Cluster, settings: Settings, alert_id: str) -> AlertView:
    if alert_id.startswith(PACK_ID_PREFIX):
        alert = AlertStore(cluster, settings.index("alerts")).get(alert_id)
        return _pack_view(alert.id, alert.source, detail=True)
    for view in _alerting_views(cluster, settings):
        if view.id == alert_id:
            return view
    raise AlertNotFound(f"no alert {alert_id!r} (neither a pacsguard alert nor an Alerting alert of "
                        f"{settings.scope})")


def _alerting_workflow(cluster: Cluster, settings: Settings, alert_id: str, verb: str, by: str,
                       note: str) -> AlertView:
    """Ack or close an Alerting alert: Alerting acknowledges it while it is active (no more
    notifications), and the pack records who did what and why, which Alerting cannot."""
    view = show_alert(cluster, settings, alert_id)
    if view.state == DELETED:
        raise PacsguardError(f"{alert_id} is DELETED in Alerting (its monitor was updated or removed)")
    record = dict((view.detail or {}).get("workflow") or {"status": view.status}, state=view.state,
                  start_time=view.start_time)
    if not workflow_change(record, verb, by, note, now_iso()):
        return view
    if view.state == ACTIVE:
        monitor_id = (view.detail or {}).get("monitor_id")
        res = cluster.request("POST", f"/_plugins/_alerting/monitors/{path_segment(monitor_id)}/_acknowledge/alerts",
                              body={"alerts": [alert_id]})
        if res.get("failed"):
            raise PacsguardError(f"Alerting did not acknowledge {alert_id}: {res['failed']}")
    ActionLog(cluster, settings.index("actions")).write(ActionRecord(
        alert_id=alert_id, engine="alerting", signal=view.signal, step="workflow",
        connector="pacsguard", action="acknowledge" if verb == ACK else "close", target=alert_id, by=by,
        dry_run=False, result="done", changed=True, detail=note))
    return show_alert(cluster, settings, alert_id)


def acknowledge(cluster: Cluster, settings: Settings, alert_id: str, by: str, note: str = "") -> AlertView:
    """A person has the alert: no more reminders; it stays in the queue until closed."""
    if alert_id.startswith(PACK_ID_PREFIX):
        alert = AlertStore(cluster, settings.index("alerts")).transition(alert_id, ACK, by, note)
        return _pack_view(alert.id, alert.source)
    return _alerting_workflow(cluster, settings, alert_id, ACK, by, note)


def close(cluster: Cluster, settings: Settings, alert_id: str, by: str, note: str = "") -> AlertView:
    """Out of the queue, with the outcome; the condition stays the engine's (an active alert is
    acknowledged, so nobody is reminded, and completes when the condition clears)."""
    if alert_id.startswith(PACK_ID_PREFIX):
        alert = AlertStore(cluster, settings.index("alerts")).transition(alert_id, CLOSE, by, note)
        return _pack_view(alert.id, alert.source)
    return _alerting_workflow(cluster, settings, alert_id, CLOSE, by, note)


__all__ = ["ACKED", "CLOSED", "OPEN", "QUEUE", "AlertView", "acknowledge", "close", "list_alerts", "queue",
           "show_alert"]
