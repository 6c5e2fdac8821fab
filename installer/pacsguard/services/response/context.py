"""One alert as the response routine sees it, whichever engine raised it, and where its actions go.

The routine needs the same few facts from both engines' alerts: the rule, the
entity (the value and the field it is), when the alert opened. Pack alerts
(`pg-...`) keep them in the alerts index; Alerting's alerts carry the bucket keys
and the monitor name, from which the signal and so the rule follow.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pacsguard.core.connection import Cluster
from pacsguard.core.errors import PacsguardError
from pacsguard.core.settings import Settings, duration_seconds
from pacsguard.engines.alerts import AlertStore
from pacsguard.response.actions import ActionLog, ActionRecord, now_iso
from pacsguard.rules.catalog import all_rules
from pacsguard.rules.compiler import rules_folder
from pacsguard.rules.model import Rule, load_rules
from pacsguard.services.alerts import PACK_ID_PREFIX, show_alert


@dataclass
class AlertContext:
    id: str
    engine: str
    state: str
    signal: str
    rule: Rule
    entity: str                 # the first bucket key: the user name or IP acted on
    entity_field: str           # user.name | source.ip
    keys: list[str]             # every bucket key (signal 3: actor, action, target)
    start_time: str
    owner: str
    document: dict[str, Any]    # the alert as stored, with its id and engine

    @property
    def is_pack_alert(self) -> bool:
        return self.id.startswith(PACK_ID_PREFIX)

    @property
    def is_user(self) -> bool:
        return self.entity_field == "user.name"

    def window(self, settings: Settings, before: str | None = None, after: str | None = None,
               now: dt.datetime | None = None) -> tuple[str, str]:
        """The evidence window: from `before` ahead of the alert to `after` past it (default: now)."""
        start = parse_time(self.start_time)
        before = before or settings.response.evidence_before
        after = after if after is not None else settings.response.evidence_after
        end = (start + dt.timedelta(seconds=duration_seconds(after)) if after
               else (now or dt.datetime.now(dt.timezone.utc)))
        return now_iso(start - dt.timedelta(seconds=duration_seconds(before))), now_iso(max(end, start))


def parse_time(value: Any) -> dt.datetime:
    """An ISO date or epoch milliseconds (Alerting's alerts carry those)."""
    if isinstance(value, (int, float)) or (isinstance(value, str) and value.isdigit()):
        return dt.datetime.fromtimestamp(int(value) / 1000, dt.timezone.utc)
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise PacsguardError(f"alert start time {value!r} is not a date") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def rule_for(signal: str, rule_id: str | None = None, settings: Settings | None = None) -> Rule:
    """The rule of an alert: the pack's, or (with the settings) a team's own too."""
    rules = all_rules(settings) if settings is not None else load_rules(rules_folder())
    found = [r for r in rules if rule_id and str(r.id) == rule_id] or [r for r in rules if r.signal == signal]
    if not found:
        raise PacsguardError(f"no rule for signal {signal!r} in {rules_folder()}")
    return found[0]


def load_alert(cluster: Cluster, settings: Settings, alert_id: str) -> AlertContext:
    view = show_alert(cluster, settings, alert_id)
    detail = dict(view.detail or {})
    if alert_id.startswith(PACK_ID_PREFIX):
        rule_doc = detail.get("rule") or {}
        entity = detail.get("entity") or {}
        rule = rule_for(view.signal, str(rule_doc.get("id") or ""), settings)
        field = str(entity.get("field") or rule.detection.entity)
    else:
        rule = rule_for(view.signal, settings=settings)
        field = rule.detection.entity
    keys = view.keys or [view.entity]
    document = {"id": view.id, "engine": view.engine, **detail}
    return AlertContext(view.id, view.engine, view.state, view.signal, rule, keys[0] if keys else view.entity,
                        field, keys, view.start_time, view.owner, document)


def record(cluster: Cluster, settings: Settings, ctx: AlertContext, rec: ActionRecord) -> ActionRecord:
    """Write the action to the actions index and, for a pack alert, to the alert's history."""
    ActionLog(cluster, settings.index("actions")).write(rec)
    if ctx.is_pack_alert:
        AlertStore(cluster, settings.index("alerts")).append_history(ctx.id, {
            "at": rec.at, "by": rec.by, "note": rec.line(),
            "action": {"id": rec.id, "step": rec.step, "connector": rec.connector, "action": rec.action,
                       "target": rec.target, "result": rec.result, "dry_run": rec.dry_run}})
    return rec


def new_record(ctx: AlertContext, step: Any, connector: str, action: str, target: str, by: str, *,
               dry_run: bool, result: Any, changed: bool, detail: str, error: str | None = None,
               data: dict[str, Any] | None = None) -> ActionRecord:
    return ActionRecord(alert_id=ctx.id, engine=ctx.engine, signal=ctx.signal, step=step, connector=connector,
                        action=action, target=target, by=by, dry_run=dry_run, result=result, changed=changed,
                        detail=detail, error=error, data=dict(data or {}))
