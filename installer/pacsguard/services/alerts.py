"""`pacsguard alerts`: one view of the alerts of both engines, and acknowledge/close.

The pacsguard engine's alerts live in the pack's alerts index; Alerting's are
read from its alerts API (monitors whose name carries this installation's
scope) and acknowledged through `_acknowledge/alerts`. The ids tell them apart:
the pack's start with `pg-`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pacsguard.core.connection import Cluster
from pacsguard.core.errors import PacsguardError
from pacsguard.core.escaping import path_segment
from pacsguard.core.settings import Settings
from pacsguard.engines.alerts import ACKNOWLEDGED, COMPLETED, SEVERITY_NAMES, AlertNotFound, AlertStore
from pacsguard.packobjects import Monitor

PACK_ID_PREFIX = "pg-"


@dataclass
class AlertView:
    id: str
    engine: str
    state: str
    severity: str
    signal: str
    rule: str
    entity: str
    owner: str
    start_time: str
    count: Any = None
    detail: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "detail" or v is not None}


def _pack_view(alert_id: str, src: dict[str, Any], detail: bool = False) -> AlertView:
    rule = src.get("rule") or {}
    return AlertView(alert_id, "pacsguard", src.get("state", ""), src.get("severity", ""), rule.get("signal", ""),
                     rule.get("name", ""), (src.get("entity") or {}).get("value", ""), src.get("owner", ""),
                     src.get("start_time", ""), src.get("count"), src if detail else None)


def _alerting_alerts(cluster: Cluster, settings: Settings) -> list[dict[str, Any]]:
    plugins, _ = cluster.installed_components()
    if "opensearch-alerting" not in plugins:
        return []
    res = cluster.request("GET", "/_plugins/_alerting/monitors/alerts", params={"size": 1000}) or {}
    mine = f"{settings.scope}-rule-"
    return [a for a in res.get("alerts", []) if str(a.get("monitor_name", "")).startswith(mine)]


def _alerting_view(a: dict[str, Any]) -> AlertView:
    keys = (a.get("agg_alert_content") or {}).get("bucket_keys") or []
    signal = Monitor.object_id({"name": a.get("monitor_name", "")}).rsplit("-rule-", 1)[-1]
    start = a.get("start_time")
    return AlertView(str(a.get("id")), "alerting", str(a.get("state", "")),
                     SEVERITY_NAMES.get(str(a.get("severity")), str(a.get("severity"))), signal,
                     str(a.get("trigger_name", "")), ",".join(map(str, keys)), "", str(start), None, a)


def list_alerts(cluster: Cluster, settings: Settings, states: list[str] | None = None,
                signal: str | None = None) -> list[AlertView]:
    store = AlertStore(cluster, settings.index("alerts"))
    views = [_pack_view(a.id, a.source) for a in store.search(states=states, signal=signal, size=1000)]
    views += [v for v in map(_alerting_view, _alerting_alerts(cluster, settings))
              if (not states or v.state in states) and (not signal or v.signal == signal)]
    return sorted(views, key=lambda v: v.start_time, reverse=True)


def show_alert(cluster: Cluster, settings: Settings, alert_id: str) -> AlertView:
    if alert_id.startswith(PACK_ID_PREFIX):
        alert = AlertStore(cluster, settings.index("alerts")).get(alert_id)
        return _pack_view(alert.id, alert.source, detail=True)
    for a in _alerting_alerts(cluster, settings):
        if str(a.get("id")) == alert_id:
            return _alerting_view(a)
    raise AlertNotFound(f"no alert {alert_id!r} (neither a pacsguard alert nor an Alerting alert of "
                        f"{settings.scope})")


def acknowledge(cluster: Cluster, settings: Settings, alert_id: str, by: str, note: str = "") -> AlertView:
    if alert_id.startswith(PACK_ID_PREFIX):
        alert = AlertStore(cluster, settings.index("alerts")).transition(alert_id, ACKNOWLEDGED, by, note)
        return _pack_view(alert.id, alert.source)
    view = show_alert(cluster, settings, alert_id)
    monitor_id = (view.detail or {}).get("monitor_id")
    res = cluster.request("POST", f"/_plugins/_alerting/monitors/{path_segment(monitor_id)}/_acknowledge/alerts",
                          body={"alerts": [alert_id]})
    if res.get("failed"):
        raise PacsguardError(f"Alerting did not acknowledge {alert_id}: {res['failed']}")
    view.state = ACKNOWLEDGED
    return view


def close(cluster: Cluster, settings: Settings, alert_id: str, by: str, note: str = "") -> AlertView:
    if not alert_id.startswith(PACK_ID_PREFIX):
        raise PacsguardError(f"{alert_id} is an Alerting alert: Alerting completes it when its condition clears; "
                             "acknowledge it instead (pacsguard alerts ack)")
    alert = AlertStore(cluster, settings.index("alerts")).transition(alert_id, COMPLETED, by, note)
    return _pack_view(alert.id, alert.source)
