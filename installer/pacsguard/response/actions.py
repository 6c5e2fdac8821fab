"""The record of every response action, planned or executed, in the actions index the pack owns.

One document per action (who, what, when, target, result, dry run or not, the
alert it answers). Records are written with refresh=wait_for so the next
command (a second `contain`, `respond <alert>`) sees them at once.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pacsguard.core.connection import Cluster
from pacsguard.core.escaping import path_segment

# workflow: a person's ack or close of an Alerting alert (services/alerts.py), which Alerting cannot record
Step = Literal["contain", "preserve", "scope", "reset", "workflow"]
# planned: a dry run said what it would do; done: executed and changed something;
# unchanged: nothing to change (already done); failed: the connector could not act.
Outcome = Literal["planned", "done", "unchanged", "failed"]


def now_iso(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class ActionRecord:
    alert_id: str
    engine: str
    signal: str
    step: Step
    connector: str
    action: str
    target: str
    by: str
    dry_run: bool
    result: Outcome
    changed: bool
    detail: str
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=now_iso)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def doc(self) -> dict[str, Any]:
        body = {k: v for k, v in asdict(self).items() if k not in ("id", "at")}
        return {"@timestamp": self.at, **body}

    @classmethod
    def from_doc(cls, doc_id: str, src: dict[str, Any]) -> ActionRecord:
        known: dict[str, Any] = {k: src.get(k) for k in ("alert_id", "engine", "signal", "step", "connector",
                                                          "action", "target", "by", "dry_run", "result", "changed",
                                                          "detail", "error")}
        return cls(**known, data=dict(src.get("data") or {}), at=str(src.get("@timestamp")), id=doc_id)

    def line(self) -> str:
        """One readable line: `done      contain keycloak disable-user dr.x: disabled dr.x`."""
        mode = " [dry run]" if self.dry_run and self.result == "planned" else ""
        why = f": {self.error}" if self.error else (f": {self.detail}" if self.detail else "")
        return f"{self.result:<9} {self.step} {self.connector} {self.action} {self.target}{why}{mode}"


class ActionLog:
    def __init__(self, cluster: Cluster, index: str) -> None:
        self.cluster = cluster
        self.index = index

    def write(self, record: ActionRecord) -> ActionRecord:
        self.cluster.request("PUT", f"/{self.index}/_doc/{path_segment(record.id)}", body=record.doc(),
                             params={"refresh": "wait_for"})
        return record

    def for_alert(self, alert_id: str, size: int = 1000) -> list[ActionRecord]:
        res = self.cluster.request("POST", f"/{self.index}/_search", ok_missing=True, body={
            "size": size, "query": {"term": {"alert_id": alert_id}}, "sort": [{"@timestamp": "asc"}]}) or {}
        return [ActionRecord.from_doc(h["_id"], h["_source"]) for h in res.get("hits", {}).get("hits", [])]

    def last_done(self, alert_id: str, connector: str, action: str, target: str) -> ActionRecord | None:
        """The last executed action of this kind for the alert (a webhook cannot ask its receiver)."""
        done = [r for r in self.for_alert(alert_id) if (r.connector, r.action, r.target, r.result, r.dry_run)
                == (connector, action, target, "done", False)]
        return done[-1] if done else None
