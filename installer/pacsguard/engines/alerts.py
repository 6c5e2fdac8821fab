"""Alert state of the pacsguard engine, in an index the pack owns.

Two things are kept apart. The condition follows Alerting's lifecycle in
`state`: ACTIVE while a rule fires for an entity (ACKNOWLEDGED once a person
has it: no reminders), COMPLETED when the condition clears, ERROR when the
rule could not run. The workflow is the analysts' queue in `status`: open
until a person acknowledges it, acknowledged until a person closes it,
closed. An alert whose condition cleared stays in the queue until somebody
closes it: a security alert nobody looked at is never over by itself.
One document per (rule, entity) episode; its id is derived from the rule, the
entity and the time it opened, so a restarted `watch` finds the open alert
again instead of opening a second one. Every change appends to the alert's
history (who, when, what, note).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pacsguard.core.connection import ApiError, Cluster
from pacsguard.core.errors import PacsguardError
from pacsguard.core.escaping import path_segment

ACTIVE, ACKNOWLEDGED, COMPLETED, ERROR, DELETED = "ACTIVE", "ACKNOWLEDGED", "COMPLETED", "ERROR", "DELETED"
# Condition states in which the engine still tracks the episode (one alert per rule and entity).
OPEN_STATES = (ACTIVE, ACKNOWLEDGED, ERROR)
# The workflow: what a person has done with the alert.
OPEN, ACKED, CLOSED = "open", "acknowledged", "closed"
STATUSES = (OPEN, ACKED, CLOSED)
QUEUE = (OPEN, ACKED)  # the work queue: not closed, whatever the condition
SEVERITY_NAMES = {"1": "critical", "2": "high", "3": "medium", "4": "low", "5": "info"}
SEVERITY_RANK = {name: int(number) for number, name in SEVERITY_NAMES.items()}
# A person's verbs and the status each leads to.
ACK, CLOSE = "ack", "close"


def condition_of(state: str) -> str:
    """active | cleared | error | deleted (Alerting's DELETED: its monitor or trigger went away)."""
    return {ACTIVE: "active", ACKNOWLEDGED: "active", COMPLETED: "cleared", ERROR: "error",
            DELETED: "deleted"}.get(state, state.lower())


def status_of(src: dict[str, Any]) -> str:
    """The workflow status of a stored alert (documents older than the field: from the state)."""
    status = src.get("status")
    if status in STATUSES:
        return str(status)
    return {ACKNOWLEDGED: ACKED, COMPLETED: CLOSED}.get(str(src.get("state")), OPEN)


def workflow_change(src: dict[str, Any], verb: str, by: str, note: str, at: str) -> bool:
    """Apply a person's ack or close to a workflow record (a pack alert, or the pack's record of an
    Alerting alert). False when it changes nothing (acknowledging twice, closing a closed alert)."""
    status = status_of(src)
    if verb == ACK and status == CLOSED:
        raise PacsguardError(f"the alert is closed (at {src.get('closed_time')}): nothing to acknowledge")
    target = ACKED if verb == ACK else CLOSED
    if status == target:
        return False
    src["status"] = target
    if src.get("state") == ACTIVE:
        src["state"] = ACKNOWLEDGED  # a person has it: no reminders
    if not src.get("acknowledged_time"):
        # closing without an ack first is also when someone had it
        src["acknowledged_time"] = at
        opened = src.get("start_time")
        if opened:
            # stored as a number so dashboards can average it (Alerts: time to acknowledge)
            src["acknowledge_seconds"] = round(
                (dt.datetime.fromisoformat(at) - dt.datetime.fromisoformat(str(opened).replace("Z", "+00:00")))
                .total_seconds(), 3)
    if target == CLOSED:
        src["closed_time"] = at
    src.setdefault("history", []).append({"at": at, "state": src.get("state"), "status": target, "by": by,
                                          "note": note})
    return True


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
        self.cluster.request("PUT", f"/{self.index}/_create/{path_segment(new_id)}", body=doc)
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
        res = self.cluster.request("GET", f"/{self.index}/_doc/{path_segment(alert_id_)}", ok_missing=True)
        if not res or not res.get("found"):
            raise AlertNotFound(f"no pacsguard alert {alert_id_!r} in {self.index}")
        return Alert(res["_id"], res["_source"], res.get("_seq_no"), res.get("_primary_term"))

    def search(self, states: list[str] | None = None, signal: str | None = None, size: int = 100,
               statuses: list[str] | None = None) -> list[Alert]:
        filters: list[dict[str, Any]] = []
        if states:
            filters.append({"terms": {"state": states}})
        if statuses:
            legacy = [st for st, status in ((ACTIVE, OPEN), (ERROR, OPEN), (ACKNOWLEDGED, ACKED), (COMPLETED, CLOSED))
                      if status in statuses]
            filters.append({"bool": {"minimum_should_match": 1, "should": [
                {"terms": {"status": statuses}},
                {"bool": {"must_not": [{"exists": {"field": "status"}}], "filter": [{"terms": {"state": legacy}}]}}]}})
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
                self.cluster.request("PUT", f"/{self.index}/_doc/{path_segment(alert.id)}", body=alert.source, params={
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

    def transition(self, alert_id_: str, verb: str, by: str, note: str = "",
                   now: dt.datetime | None = None) -> Alert:
        """A person's ack or close (ACK, CLOSE), appended to the history; the condition is the engine's.
        Acknowledging twice or closing a closed alert changes nothing."""
        at = now_iso(now)
        return self.update(alert_id_, lambda src: workflow_change(src, verb, by, note, at), refresh="true")
