"""Alert state of the pacsguard engine, in an index the pack owns, with Alerting's lifecycle.

ACTIVE while a rule fires for an entity, ACKNOWLEDGED when a person has it,
COMPLETED when the condition clears or a person closes it, ERROR when the rule
could not run. One document per (rule, entity) episode; its id is derived from
the rule, the entity and the time it opened, so a restarted `watch` finds the
open alert again instead of opening a second one. Every change appends to the
alert's history (who, when, what, note).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pacsguard.core.connection import ApiError, Cluster
from pacsguard.core.errors import PacsguardError

ACTIVE, ACKNOWLEDGED, COMPLETED, ERROR = "ACTIVE", "ACKNOWLEDGED", "COMPLETED", "ERROR"
OPEN_STATES = (ACTIVE, ACKNOWLEDGED, ERROR)
SEVERITY_NAMES = {"1": "critical", "2": "high", "3": "medium", "4": "low", "5": "info"}
SEVERITY_RANK = {name: int(number) for number, name in SEVERITY_NAMES.items()}


class AlertNotFound(PacsguardError):
    """No alert with that id."""


def now_iso(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")


def alert_id(rule_object_id: str, entity: str, opened: str) -> str:
    digest = hashlib.sha256(f"{rule_object_id}|{entity}|{opened}".encode()).hexdigest()[:20]
    return f"pg-{digest}"


@dataclass
class Alert:
    id: str
    source: dict[str, Any]
    seq_no: int | None = None
    primary_term: int | None = None

    @property
    def state(self) -> str:
        return str(self.source.get("state"))

    @property
    def entity(self) -> str:
        return str((self.source.get("entity") or {}).get("value", ""))

    @property
    def severity(self) -> str:
        return str(self.source.get("severity"))


class AlertStore:
    def __init__(self, cluster: Cluster, index: str) -> None:
        self.cluster = cluster
        self.index = index

    def _hits(self, query: dict[str, Any], size: int = 10_000, sort: list[Any] | None = None) -> list[Alert]:
        res = self.cluster.request("POST", f"/{self.index}/_search", params={"seq_no_primary_term": "true"},
                                   body={"size": size, "query": query,
                                         "sort": sort or [{"@timestamp": "desc"}]}, ok_missing=True) or {}
        return [Alert(h["_id"], h["_source"], h.get("_seq_no"), h.get("_primary_term"))
                for h in res.get("hits", {}).get("hits", [])]

    def open_alerts(self, rule_object_id: str) -> dict[str, Alert]:
        """The rule's open alerts by entity (the newest if, against the odds, there are two)."""
        found = self._hits({"bool": {"filter": [{"term": {"rule.object_id": rule_object_id}},
                                                {"terms": {"state": list(OPEN_STATES)}}]}})
        out: dict[str, Alert] = {}
        for alert in found:
            out.setdefault(alert.entity, alert)
        return out

    def create(self, doc: dict[str, Any]) -> Alert:
        """One document per episode; its id comes from the period it began in (for a live alert,
        the run that opened it), so two engines that find the same late episode write one alert."""
        new_id = alert_id(doc["rule"]["object_id"], doc["entity"]["value"], doc.get("period_start", doc["start_time"]))
        self.cluster.request("PUT", f"/{self.index}/_create/{new_id}", body=doc)
        return Alert(new_id, doc)

    def of_entity(self, rule_object_id: str, entity: str, size: int = 50) -> list[Alert]:
        """The rule's alerts for one entity, in any state, newest first (to find an episode)."""
        return self._hits({"bool": {"filter": [{"term": {"rule.object_id": rule_object_id}},
                                               {"term": {"entity.value": entity}}]}}, size=size)

    def undelivered(self, states: list[str], size: int = 1000) -> list[Alert]:
        """Alerts in these states with a delivery not (yet) done."""
        return self._hits({"bool": {"filter": [{"terms": {"state": states}}, {"nested": {
            "path": "deliveries", "query": {"term": {"deliveries.ok": False}}}}]}}, size=size)

    def refresh(self) -> None:
        """Make the writes so far visible to searches (one call per rule run, not per alert:
        each `refresh=wait_for` would wait up to a refresh interval)."""
        self.cluster.request("POST", f"/{self.index}/_refresh")

    def get(self, alert_id_: str) -> Alert:
        res = self.cluster.request("GET", f"/{self.index}/_doc/{alert_id_}", ok_missing=True)
        if not res or not res.get("found"):
            raise AlertNotFound(f"no pacsguard alert {alert_id_!r} in {self.index}")
        return Alert(res["_id"], res["_source"], res.get("_seq_no"), res.get("_primary_term"))

    def search(self, states: list[str] | None = None, signal: str | None = None, size: int = 100) -> list[Alert]:
        filters: list[dict[str, Any]] = []
        if states:
            filters.append({"terms": {"state": states}})
        if signal:
            filters.append({"term": {"rule.signal": signal}})
        return self._hits({"bool": {"filter": filters}}, size=size)

    def update(self, alert_id_: str, mutate: Callable[[dict[str, Any]], bool | None], refresh: str = "false",
               attempts: int = 8) -> Alert:
        """Read the alert, let mutate change its source, write it back only if nobody wrote in
        between (optimistic concurrency); on a conflict read again and redo. `watch`, `alerts ack`
        and `respond` all change alerts this way, so none overwrites another's change (an
        acknowledgement saved while the engine updates the count stays acknowledged).
        mutate returns False when there is nothing to write."""
        for attempt in range(attempts):
            alert = self.get(alert_id_)
            if mutate(alert.source) is False:
                return alert
            try:
                self.cluster.request("PUT", f"/{self.index}/_doc/{alert.id}", body=alert.source, params={
                    "refresh": refresh, "if_seq_no": alert.seq_no, "if_primary_term": alert.primary_term})
                return alert
            except ApiError as exc:
                if exc.status != 409 or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def append_history(self, alert_id_: str, entry: dict[str, Any], attempts: int = 8) -> Alert:
        """Add one entry (e.g. a response action) to the history, keeping the state."""
        def add(src: dict[str, Any]) -> None:
            src.setdefault("history", []).append({"state": src.get("state"), **entry})
        return self.update(alert_id_, add, refresh="wait_for", attempts=attempts)

    def transition(self, alert_id_: str, state: str, by: str, note: str = "",
                   now: dt.datetime | None = None) -> Alert:
        """A person's ack or close; appended to the history. Closing a closed alert changes nothing."""
        at = now_iso(now)

        def change(src: dict[str, Any]) -> bool:
            if src.get("state") == COMPLETED:
                raise PacsguardError(f"alert {alert_id_} is already COMPLETED (at {src.get('end_time')})")
            if src.get("state") == state:
                return False
            src["state"] = state
            src.setdefault("history", []).append({"at": at, "state": state, "by": by, "note": note})
            if state == ACKNOWLEDGED:
                src["acknowledged_time"] = at
                # stored as a number so dashboards can average it (Alerts: time to acknowledge)
                opened = src.get("start_time")
                if opened:
                    src["acknowledge_seconds"] = round(
                        (dt.datetime.fromisoformat(at) - dt.datetime.fromisoformat(str(opened).replace("Z", "+00:00")))
                        .total_seconds(), 3)
            if state == COMPLETED:
                src["end_time"] = at
            return True

        alert = self.update(alert_id_, change, refresh="true")
        return alert
        at = now_iso(now)
        alert.source["state"] = state
        alert.source.setdefault("history", []).append({"at": at, "state": state, "by": by, "note": note})
        if state == ACKNOWLEDGED:
            alert.source["acknowledged_time"] = at
            # stored as a number so dashboards can average it (Alerts: time to acknowledge)
            opened = alert.source.get("start_time")
            if opened:
                alert.source["acknowledge_seconds"] = round(
                    (dt.datetime.fromisoformat(at) - dt.datetime.fromisoformat(str(opened).replace("Z", "+00:00")))
                    .total_seconds(), 3)
        if state == COMPLETED:
            alert.source["end_time"] = at
        self.cluster.request("PUT", f"/{self.index}/_doc/{alert.id}", body=alert.source, params={
            "refresh": "true", "if_seq_no": alert.seq_no, "if_primary_term": alert.primary_term})
        return alert
