"""`pacsguard exceptions` and `pacsguard snooze`: what a team silences, with a reason, an author
and an end, kept in the pack's exceptions index (settings indices.exceptions).

An exception excepts an entity value (a user, a source IP, a host: the value of a rule's entity
field, or the joined key of a rule whose entity joins several fields) from one rule or every rule
(`*`). Both engines apply it at evaluation: it is part of each rule's monitor query
(rules/exceptions.py), checked against the run's period_end, so it stops applying at its expiry
without anyone touching anything.

A snooze mutes a rule (or a rule for one entity) until a time: the pack's engine still records
the alerts it opens, and holds their delivery back until the snooze ends (watch.py calls
`held_back`); a delivery held back is sent when the snooze ends if the alert is still open.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from pacsguard.core.connection import Cluster
from pacsguard.core.errors import PacsguardError
from pacsguard.core.settings import DURATION, Settings, duration_seconds
from pacsguard.engines.alerts import now_iso
from pacsguard.rules.catalog import all_rules
from pacsguard.rules.exceptions import ANY_RULE, EXCEPTION, SNOOZE, in_force
from pacsguard.rules.model import Rule

MAX_DAYS = 366
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


@dataclass(frozen=True)
class Entry:
    id: str
    kind: str            # exception | snooze
    rules: list[str]
    field: str | None
    value: str | None
    reason: str
    author: str
    created: str
    expires: str
    alert_id: str | None = None

    def in_force(self, at: dt.datetime) -> bool:
        return parse_until(self.expires, at) > at

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def target(self) -> str:
        who = f"{self.field}={self.value}" if self.value is not None else "every entity"
        return f"{','.join(self.rules)} {who}"


def parse_until(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """An end: a duration from now (30m, 8h, 7d), a weekday (the end of the next one, UTC), or an
    ISO 8601 date or time (a date ends at its midnight, UTC)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    value = text.strip().lower()
    if DURATION.match(value):
        return now + dt.timedelta(seconds=duration_seconds(value))
    if value in _WEEKDAYS:
        days = (_WEEKDAYS.index(value) - now.weekday()) % 7
        day = (now + dt.timedelta(days=days)).date()
        return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return dt.datetime.combine(dt.date.fromisoformat(value) + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
        t = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise PacsguardError(f"until {text!r}: give a duration (8h, 7d), a weekday (friday) or an ISO 8601 "
                             "date/time (2026-12-11, 2026-12-11T18:00:00Z)") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _targets(settings: Settings, rules: list[str]) -> list[Rule]:
    known = {r.signal: r for r in all_rules(settings)}
    if rules == [ANY_RULE]:
        return list(known.values())
    unknown = [r for r in rules if r not in known]
    if unknown:
        raise PacsguardError(f"no rule {', '.join(unknown)}; rules: {', '.join(known)} (or * for every rule)")
    return [known[r] for r in rules]


def _nest(path: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = value
    for part in reversed(path.split(".")):
        out = {part: out}
    return out


def add(cluster: Cluster, settings: Settings, *, kind: str = EXCEPTION, rules: list[str], field: str | None,
        value: str | None, reason: str, author: str, until: str, alert_id: str | None = None,
        now: dt.datetime | None = None) -> Entry:
    """Write an exception (or a snooze); refused without a reason, an author, or an end in the future."""
    now = now or dt.datetime.now(dt.timezone.utc)
    if not reason.strip() or not author.strip():
        raise PacsguardError(f"a{'n' if kind == EXCEPTION else ''} {kind} needs a reason and an author")
    expires = parse_until(until, now)
    if expires <= now:
        raise PacsguardError(f"until {until!r} is not in the future ({now_iso(expires)})")
    if expires - now > dt.timedelta(days=MAX_DAYS):
        raise PacsguardError(f"until {until!r}: at most {MAX_DAYS} days ahead; renew it when it ends")
    targets = _targets(settings, rules)
    if kind == EXCEPTION and (field is None or value is None):
        raise PacsguardError("an exception names the field and the value it excepts (e.g. --user alice)")
    joined = [r.signal for r in targets if r.detection.group_by]
    if field is not None and rules != [ANY_RULE]:
        wrong = [r.signal for r in targets if not r.detection.group_by and r.detection.entity != field]
        if wrong:
            fields = ", ".join(sorted({r.detection.entity for r in targets}))
            raise PacsguardError(f"rule(s) {', '.join(wrong)} key their alerts on {fields}, not {field}")
    doc: dict[str, Any] = {"exception": {
        "kind": kind, "rules": rules, "field": field, "value": value, "reason": reason, "author": author,
        "created": now_iso(now), "expires": now_iso(expires), "alert_id": alert_id}}
    if value is not None and field is not None:
        if joined and rules != [ANY_RULE]:
            doc["exception"]["key"] = value  # the joined entity, as the alert names it
        else:
            doc.update(_nest(field, value))
    digest = hashlib.sha256(f"{kind}|{','.join(rules)}|{field}|{value}|{now_iso(now)}".encode()).hexdigest()[:16]
    entry_id = f"{kind[:2]}-{digest}"
    index = settings.index("exceptions")
    cluster.request("PUT", f"/{index}/_doc/{entry_id}", params={"refresh": "true"}, body=doc)
    return _entry(entry_id, doc)


def _entry(entry_id: str, src: dict[str, Any]) -> Entry:
    e = src.get("exception", {})
    return Entry(entry_id, e.get("kind", EXCEPTION), list(e.get("rules") or []), e.get("field"), e.get("value"),
                 e.get("reason", ""), e.get("author", ""), e.get("created", ""), e.get("expires", ""),
                 e.get("alert_id"))


def entries(cluster: Cluster, settings: Settings, kind: str | None = None, expired: bool = False,
            now: dt.datetime | None = None) -> list[Entry]:
    """Exceptions and snoozes, soonest end first (expired ones only with expired=True)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    filters: list[dict[str, Any]] = [{"term": {"exception.kind": kind}}] if kind else []
    if not expired:
        filters.append({"range": {"exception.expires": {"gt": now_iso(now)}}})
    res = cluster.request("POST", f"/{settings.index('exceptions')}/_search", ok_missing=True, body={
        "size": 1000, "query": {"bool": {"filter": filters}}, "sort": [{"exception.expires": "asc"}]}) or {}
    return [_entry(h["_id"], h["_source"]) for h in res.get("hits", {}).get("hits", [])]


def remove(cluster: Cluster, settings: Settings, entry_id: str) -> None:
    res = cluster.request("DELETE", f"/{settings.index('exceptions')}/_doc/{entry_id}", ok_missing=True,
                          params={"refresh": "true"})
    if not res or res.get("result") != "deleted":
        raise PacsguardError(f"no exception or snooze {entry_id!r} (see `pacsguard exceptions list`)")


def held_back(cluster: Cluster, settings: Settings, signal: str, entity: str, at: dt.datetime) -> Entry | None:
    """The snooze in force at `at` for this rule and entity (or the whole rule), if any."""
    clause = in_force([signal], str(int(at.timestamp() * 1000)), SNOOZE)
    res = cluster.request("POST", f"/{settings.index('exceptions')}/_search", ok_missing=True, body={
        "size": 1, "query": {"bool": {"filter": [clause, {"bool": {"should": [
            {"bool": {"must_not": [{"exists": {"field": "exception.value"}}]}},
            {"term": {"exception.value": entity}}], "minimum_should_match": 1}}]}},
        "sort": [{"exception.expires": "desc"}]}) or {}
    hits = res.get("hits", {}).get("hits", [])
    return _entry(hits[0]["_id"], hits[0]["_source"]) if hits else None


def snoozed_delivery(cluster: Cluster, settings: Settings, alert: dict[str, Any], at: dt.datetime) -> Entry | None:
    """watch.py's hook: the snooze that holds an alert's delivery back now (None: send it)."""
    rule, entity = alert.get("rule") or {}, alert.get("entity") or {}
    return held_back(cluster, settings, str(rule.get("signal", "")), str(entity.get("value", "")), at)


def except_alert(cluster: Cluster, settings: Settings, view: Any, until: str, reason: str, author: str) -> Entry:
    """`alerts ack --except-until`: except the alert's entity from its rule until then."""
    rule = next((r for r in all_rules(settings) if r.signal == view.signal), None)
    if rule is None:
        raise PacsguardError(f"alert {view.id}: no rule {view.signal!r} in this installation")
    return add(cluster, settings, rules=[rule.signal], field=rule.detection.entity, value=view.entity,
               reason=reason, author=author, until=until, alert_id=view.id)


def counts(cluster: Cluster, settings: Settings, now: dt.datetime | None = None) -> dict[str, dict[str, int]]:
    """Per rule: exceptions and snoozes in force (`*` counts for every rule), for `status`."""
    out: dict[str, dict[str, int]] = {}
    for e in entries(cluster, settings, now=now):
        for rule in e.rules:
            slot = out.setdefault(rule, {EXCEPTION: 0, SNOOZE: 0})
            slot[e.kind] += 1
    return out
