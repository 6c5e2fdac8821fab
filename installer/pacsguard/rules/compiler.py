"""Compile detection rules into plain data that both engines run: an Alerting monitor body.

A compiled rule is the monitor OpenSearch Alerting would store (one search
input, bucket-level triggers with painless conditions, mustache messages).
Where the plugin runs it is installed as is; elsewhere the pack's own engine
(engines/core.py, `pacsguard watch`) runs the same body with core search. The
body is built here from typed pieces, not from JSON text, and every number in
it comes from the pack settings (one place for each threshold).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacsguard.core.content import content_path
from pacsguard.core.errors import PacsguardError
from pacsguard.core.settings import Channel, Settings, Thresholds, duration_seconds, secret_from
from pacsguard.core.vocabulary import vocabulary
from pacsguard.engines.result import ENTITY_SOURCE, JOINED_SOURCE, KEY_SEPARATOR
from pacsguard.packobjects import PackObject
from pacsguard.rules.catalog import all_rules, overridden, pack_folder
from pacsguard.rules.exceptions import with_exceptions
from pacsguard.rules.model import SEVERITIES, Filter, Rule, load_rules
from pacsguard.savedobjects.links import discover_url, investigation_url

PERIOD_END = "{{period_end}}"
ENTITY_AGG = "by_entity"
ESCALATED_SEVERITY = str(SEVERITIES["critical"])
_UNITS = {"m": "MINUTES", "h": "HOURS", "d": "DAYS"}
# Where the pack's own engine keeps what Alerting keeps in its alert document.
ESCALATED_SUFFIX = " (escalated: after a new device or country login)"


def rules_folder() -> Path:
    return pack_folder()


def rule_settings(rule: Rule, settings: Settings) -> Settings:
    """The settings a rule runs with: its override's threshold values over the shared ones."""
    o = settings.rules.overrides.get(rule.signal)
    if o is None or not o.thresholds:
        return settings
    thresholds = Thresholds.model_validate({**settings.thresholds.model_dump(), **o.thresholds})
    return settings.model_copy(update={"thresholds": thresholds})


@dataclass(frozen=True)
class CompiledRule:
    """A rule and the monitor body both engines run."""

    rule: Rule
    object_id: str
    monitor: dict[str, Any]

    @property
    def signal(self) -> str:
        return self.rule.signal


def monitor_object_id(settings: Settings, rule: Rule) -> str:
    return f"{settings.scope}-rule-{rule.signal}"


def channel_object_id(settings: Settings, channel: str) -> str:
    return f"{settings.scope}-{channel}"


# ------------------------------------------------------------------ query pieces


def time_range(field: str, window: str) -> dict[str, Any]:
    return {"range": {field: {"gte": f"{PERIOD_END}||-{window}", "lte": PERIOD_END, "format": "epoch_millis"}}}


def _values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def event_filter(f: Filter, settings: Settings) -> dict[str, Any]:
    """The events a filter takes, at any time."""
    clauses: list[dict[str, Any]] = [{"term": {"event.dataset": "pacs.audit"}}]
    if f.actions:
        clauses.append({"terms": {"event.action": list(f.actions)}})
    clauses += [{"terms": {name: _values(v)}} for name, v in f.where.items()]
    if f.query:
        clauses.append({"query_string": {"query": f.query, "default_operator": "AND",
                                         "allow_leading_wildcard": False}})
    if f.outcome:
        clauses.append({"term": {"event.outcome": f.outcome}})
    if f.external_only:
        clauses.append({"term": {"pacs.share.external": True}})
    body: dict[str, Any] = {"filter": clauses}
    must_not = [{"terms": {name: _values(v)}} for name, v in f.where_not.items()]
    if f.exclude_admins:
        must_not.append({"terms": {"user.roles": list(settings.thresholds.admin_roles)}})
    if must_not:
        body["must_not"] = must_not
    return {"bool": body}


def event_clause(f: Filter, window: str, settings: Settings, time_field: str | None = None) -> dict[str, Any]:
    clause = event_filter(f, settings)
    clause["bool"]["filter"].append(time_range(time_field or settings.detection.time_field, window))
    return clause


def rule_events(rule: Rule, settings: Settings) -> dict[str, Any] | None:
    """The events a rule counts, at any time (None: it reads only the profiles index)."""
    d = rule.detection
    filters = [f for f in (d.filter, d.before) if f is not None]
    if d.type == "new_value" or not filters:
        return None
    return any_of(*(event_filter(f, settings) for f in filters))


def new_login_clause(window: str, settings: Settings) -> dict[str, Any]:
    return {"bool": {"filter": [
        {"terms": {"profile.kind": vocabulary().new_login_kinds}},
        {"term": {"profile.new": True}},
        time_range(settings.detection.time_field, window),
    ]}}


# The joined entity key of a rule with group_by (engines/result.py join_keys does the same in
# Python): each field's first value ('' when missing), '\\' and '|' escaped, joined by '|'.
# An exception document (rules/exceptions.py) carries the joined key as it is.
JOIN_SCRIPT = (
    "if (doc.containsKey('exception.key') && doc['exception.key'].size() > 0) { return doc['exception.key'].value; } "
    "String out = ''; "
    "for (int i = 0; i < params.fields.size(); ++i) { "
    "String f = params.fields.get(i); "
    "String v = doc.containsKey(f) && doc[f].size() > 0 ? doc[f].value.toString() : ''; "
    "if (i > 0) { out += '|'; } "
    "out += v.replace('\\\\', '\\\\\\\\').replace('|', '\\\\|'); "
    "} return out;"
)


def composite(rule: Rule, settings: Settings, aggs: dict[str, Any]) -> dict[str, Any]:
    """The entity buckets. One field is one terms source; an entity of several fields (group_by)
    is one source whose script joins them, so the alert's bucket_keys hold the entity in the
    rule's order on Alerting too (its bucket_keys come from a hash map of the sources)."""
    d = rule.detection
    if d.group_by:
        sources: list[dict[str, Any]] = [{JOINED_SOURCE: {"terms": {"script": {
            "source": JOIN_SCRIPT, "lang": "painless", "params": {"fields": [d.entity, *d.group_by]}}}}}]
    else:
        sources = [{ENTITY_SOURCE: {"terms": {"field": d.entity}}}]
    return {ENTITY_AGG: {"composite": {"size": settings.detection.composite_page_size, "sources": sources},
                         "aggs": aggs}}


def search_input(indices: Iterable[str], query: dict[str, Any], aggs: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"search": {"indices": list(indices), "query": {"size": 0, "query": query, "aggregations": aggs}}}]


def any_of(*clauses: dict[str, Any]) -> dict[str, Any]:
    return {"bool": {"should": list(clauses), "minimum_should_match": 1}}


# ------------------------------------------------------------------ messages


def evidence_query(rule: Rule, entity: str = "<entity>") -> str:
    """A Discover (query_string / DQL) query that shows the events behind an alert."""
    d = rule.detection
    if d.filter is None:
        return f'profile.kind:{d.profile_kind} AND user.name:"{entity}"'
    f = d.filter
    parts = ["event.action:(" + " OR ".join(f'"{a}"' for a in f.actions) + ")"] if f.actions else []
    parts += [f"{name}:(" + " OR ".join(f'"{v}"' for v in _values(value)) + ")" for name, value in f.where.items()]
    parts += [f"NOT {name}:(" + " OR ".join(f'"{v}"' for v in _values(value)) + ")"
              for name, value in f.where_not.items()]
    if f.query:
        parts.append(f"({f.query})")
    if f.outcome:
        parts.append(f"event.outcome:{f.outcome}")
    parts.append(f'{d.entity}:"{entity}"')
    return " AND ".join(parts)


def rule_window(rule: Rule, settings: Settings) -> str:
    settings = rule_settings(rule, settings)
    d = rule.detection
    if d.type == "event":
        return settings.detection.event_rule_window
    if d.type == "baseline":
        return settings.thresholds.baseline_recent_window
    return str(getattr(settings.thresholds, d.window)) if d.window else ""


def message_template(rule: Rule, settings: Settings, escalated: bool = False) -> str:
    """One mustache message, rendered by Alerting and by the pack's engine alike.

    Inside {{#ctx.newAlerts}} Alerting exposes only bucket_keys; the pack's engine
    adds count (and the owner is fixed per rule and severity, so it is written in).
    """
    settings = rule_settings(rule, settings)
    d = rule.detection
    severity = "critical" if escalated else rule.severity
    route = settings.routing.route(rule.signal, severity)
    window = rule_window(rule, settings)
    keys = KEY_SEPARATOR.join([d.entity, *d.group_by])
    threshold = f", threshold {getattr(settings.thresholds, d.threshold)}" if d.threshold else ""
    lines = [
        f"[pacsguard] {severity.upper()}: {rule.name}" + (ESCALATED_SUFFIX if escalated else ""),
        f"Rule: {rule.name} (signal {rule.signal}, id {rule.id}, v{rule.version})",
        "{{#ctx.newAlerts}}Entity ({keys}): {{bucket_keys}}{{#count}}, count {{count}}{{/count}}\n{{/ctx.newAlerts}}"
        .replace("{keys}", keys),
        f"Window: {window}{threshold}",
        f"Owner: {route.owner}",
        f"Evidence: data stream {settings.index('events_data_stream')}, query: "
        + evidence_query(rule, "{{#ctx.newAlerts}}{{bucket_keys}}{{/ctx.newAlerts}}")
        if not d.group_by else
        f"Evidence: data stream {settings.index('events_data_stream')}, query: {evidence_query(rule, '*')} "
        f"with {keys} as above",
    ]
    if settings.routing.dashboards_url:
        lines += dashboards_links(rule, settings, window)
    lines += [
        f"First response (contain): {rule.guide.contain}",
        f"Then preserve evidence, scope, reset: pacsguard respond <alert id> (routine of rule {rule.signal})",
    ]
    return "\n".join(lines)


ENTITY = "{{bucket_keys}}"
PERIOD_END_TAG = "{{ctx.periodEnd}}"


def dashboards_links(rule: Rule, settings: Settings, window: str) -> list[str]:
    """Per alert: Discover with the evidence query, and the User investigation dashboard, over the
    alert's window (from the run's period end back one rule window, a few minutes after it)."""
    base = settings.routing.dashboards_url or ""
    d = rule.detection
    time_from = f"{PERIOD_END_TAG}||-{window or '1h'}"
    time_to = f"{PERIOD_END_TAG}||+5m"
    tags = [ENTITY, PERIOD_END_TAG]
    if d.group_by:
        # bucket_keys joins the entity with the group-by values; mustache cannot split it, so the
        # Discover link shows the rule's events in the window and the entity line names who.
        query = evidence_query(rule, "*").rsplit(" AND ", 1)[0]
        return [f"Discover: {discover_url(base, settings, query, time_from, time_to, tags)}"]
    # A new-value rule's evidence sits in the profiles index; in Discover, the account's events show it.
    query = evidence_query(rule, ENTITY) if d.filter is not None else f'related.user:"{ENTITY}"'
    discover = discover_url(base, settings, query, time_from, time_to, tags)
    lines = [f"{{{{#ctx.newAlerts}}}}Discover ({ENTITY}): {discover}\n{{{{/ctx.newAlerts}}}}"]
    if d.entity == "user.name":
        user = investigation_url(base, settings, ENTITY, time_from, time_to, tags)
        lines.append(f"{{{{#ctx.newAlerts}}}}User investigation ({ENTITY}): {user}\n{{{{/ctx.newAlerts}}}}")
    return lines


def subject(rule: Rule, escalated: bool = False) -> str:
    severity = "CRITICAL" if escalated else rule.severity.upper()
    return f"[pacsguard] {severity}: {rule.signal} {rule.name}"


def actions(rule: Rule, settings: Settings, escalated: bool = False) -> list[dict[str, Any]]:
    """One action per routed channel, per alert, on NEW alerts only: one message per (rule, entity)."""
    severity = "critical" if escalated else rule.severity
    route = settings.routing.route(rule.signal, severity)
    names = route.channels if route.channels is not None else [c.name for c in settings.notifications.channels]
    throttle = duration_seconds(settings.detection.action_throttle) // 60
    out = []
    for i, name in enumerate(names, 1):
        out.append({
            "name": f"{settings.scope}-notify-{i}{'-escalated' if escalated else ''}",
            "destination_id": channel_object_id(settings, name),
            "subject_template": {"source": subject(rule, escalated), "lang": "mustache"},
            "message_template": {"source": message_template(rule, settings, escalated), "lang": "mustache"},
            "throttle_enabled": True,
            "throttle": {"value": max(1, throttle), "unit": "MINUTES"},
            "action_execution_policy": {"action_execution_scope": {"per_alert": {"actionable_alerts": ["NEW"]}}},
        })
    return out


def bucket_trigger(rule: Rule, settings: Settings, name: str, severity: str, paths: dict[str, str], script: str,
                   escalated: bool = False) -> dict[str, Any]:
    return {"bucket_level_trigger": {
        "name": name,
        "severity": severity,
        "condition": {"buckets_path": paths, "parent_bucket_path": ENTITY_AGG,
                      "script": {"source": script, "lang": "painless"}},
        "actions": actions(rule, settings, escalated),
    }}


# ------------------------------------------------------------------ rule types


def _value_agg(count: str) -> dict[str, Any]:
    return {"events": {"value_count": {"field": "@timestamp"}},
            "distinct_studies": {"cardinality": {"field": "pacs.study.uids"}}}[count]


def _inputs_and_triggers(rule: Rule, settings: Settings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    d = rule.detection
    t = settings.thresholds
    sev = rule.monitor_severity
    events = settings.index("events_data_stream")
    if d.type == "new_value":
        assert d.window is not None and d.profile_kind is not None
        filters: list[dict[str, Any]] = [{"term": {"profile.kind": d.profile_kind}}]
        if d.require_new_flag:
            filters.append({"term": {"profile.new": True}})
        filters.append(time_range(settings.detection.time_field, getattr(t, d.window)))
        aggs = composite(rule, settings, {"values": {"cardinality": {"field": "profile.value"}}})
        minimum = getattr(t, d.threshold) if d.threshold else 1
        return (search_input([settings.index("profiles")], {"bool": {"filter": filters}}, aggs),
                [bucket_trigger(rule, settings, rule.name, sev, {"values": "values"}, f"params.values >= {minimum}")])
    if d.type == "sequence":
        assert d.filter is not None and d.before is not None and d.window and d.threshold
        window = getattr(t, d.window)
        before, after = event_clause(d.before, window, settings), event_clause(d.filter, window, settings)
        aggs = composite(rule, settings, {
            "before": {"filter": before, "aggs": {"first": {"min": {"field": "@timestamp"}}}},
            "after": {"filter": after, "aggs": {"last": {"max": {"field": "@timestamp"}}}}})
        script = f"params.fails >= {getattr(t, d.threshold)} && params.last_success > params.first_fail"
        return (search_input([events], any_of(after, before), aggs),
                [bucket_trigger(rule, settings, rule.name, sev,
                                {"fails": "before._count", "first_fail": "before>first", "last_success": "after>last"},
                                script)])
    if d.type == "event":
        assert d.filter is not None
        clause = event_clause(d.filter, settings.detection.event_rule_window, settings,
                              settings.detection.event_rule_time_field)
        aggs = composite(rule, settings, {"recent": {"filter": clause}})
        return (search_input([events], clause, aggs),
                [bucket_trigger(rule, settings, rule.name, sev, {"value": "recent._count"}, "params.value >= 1")])
    # threshold and baseline
    assert d.filter is not None
    window = rule_window(rule, settings)
    recent = event_clause(d.filter, window, settings)
    should = [recent]
    sub: dict[str, Any] = {"recent": {"filter": recent, "aggs": {"value": _value_agg(d.count)}}}
    indices = [events]
    if d.type == "baseline":
        assert d.baseline_metric is not None
        metric = {"term": {"baseline.metric": d.baseline_metric}}
        should.append({"bool": {"filter": [metric]}})
        sub["baseline"] = {"filter": metric, "aggs": {"threshold": {"sum": {"field": "baseline.threshold"}}}}
        indices.append(settings.index("baselines"))
        paths = {"value": "recent>value", "baseline": "baseline>threshold"}
        cond = "params.baseline > 0 && params.value >= params.baseline"
    else:
        assert d.threshold is not None
        paths = {"value": "recent>value"}
        cond = f"params.value >= {getattr(t, d.threshold)}"
    if d.filter.exclude_admins:
        # Events that carry roles are filtered above; for those that carry none (DICOM audit),
        # the user directory says who is an administrator (D5: a join by filter sub-aggregation).
        admin = {"bool": {"filter": [{"term": {"directory.admin": True}}]}}
        should.append(admin)
        sub["directory_admin"] = {"filter": admin}
        indices.append(settings.index("directory"))
        paths = dict(paths, admin="directory_admin._count")
        cond += " && params.admin == 0"
    triggers = [bucket_trigger(rule, settings, rule.name, sev, paths, cond)]
    if d.escalate_after_new_login:
        login = new_login_clause(getattr(t, d.escalate_after_new_login), settings)
        should.append(login)
        sub["new_login"] = {"filter": login}
        indices.append(settings.index("profiles"))
        triggers.append(bucket_trigger(rule, settings, rule.name + ESCALATED_SUFFIX, ESCALATED_SEVERITY,
                                       dict(paths, new_login="new_login._count"),
                                       cond + " && params.new_login > 0", escalated=True))
    return search_input(indices, any_of(*should), composite(rule, settings, sub)), triggers


def render_monitor(rule: Rule, settings: Settings) -> dict[str, Any]:
    """The Alerting monitor body of a rule (without the pack's stamp), reading the exceptions too."""
    settings = rule_settings(rule, settings)
    inputs, triggers = _inputs_and_triggers(rule, settings)
    return with_exceptions({
        "type": "monitor",
        "monitor_type": "bucket_level_monitor",
        "name": f"{monitor_object_id(settings, rule)} {rule.name}",
        "enabled": rule.enabled,
        "schedule": {"period": {"interval": int(rule.schedule[:-1]), "unit": _UNITS[rule.schedule[-1]]}},
        "inputs": inputs,
        "triggers": triggers,
    }, rule.signal, settings.index("exceptions"))


def compile_rules(settings: Settings, folder: Path | None = None) -> list[CompiledRule]:
    """Every rule of the installation (the pack's and the team's, overrides applied), or of one folder."""
    rules = [overridden(r, settings) for r in load_rules(folder)] if folder else all_rules(settings)
    return [CompiledRule(rule, monitor_object_id(settings, rule), render_monitor(rule, settings))
            for rule in rules]


def monitor_objects(settings: Settings, folder: Path | None = None,
                    signals: set[str] | None = None) -> list[PackObject]:
    """The monitors to install (optionally only some signals: those whose engine is Alerting)."""
    return [PackObject("monitor", c.object_id, c.monitor, c.rule.path or rules_folder())
            for c in compile_rules(settings, folder) if signals is None or c.signal in signals]


def _channel_config(channel: Channel, scope: str) -> dict[str, Any]:
    config: dict[str, Any] = {"name": f"{scope} {channel.name}", "config_type": channel.type,
                              "is_enabled": True, "description": f"pacsguard alerts: {channel.name}"}
    if channel.type in ("webhook", "slack", "chime"):
        # url_env / url_file too: Notifications keeps the URL in the cluster, so it is resolved here.
        url = channel.resolved_url()
        if not url:
            raise PacsguardError(f"notifications channel {channel.name}: {channel.type} needs url, url_env or url_file")
        config[channel.type] = {"url": url}
        if channel.type == "webhook":
            config["webhook"]["header_params"] = webhook_headers(channel)
    elif channel.type == "smtp":
        if not (channel.smtp_account and channel.recipients):
            raise PacsguardError(f"notifications channel {channel.name}: smtp needs smtp_account and recipients")
        # Notifications knows no config_type "smtp" (it would parse as NONE, which the
        # create action refuses with HTTP 406): mail goes through an "email" config that
        # names an existing smtp_account config.
        config["config_type"] = "email"
        config["email"] = {"email_account_id": channel.smtp_account,
                           "recipient_list": [{"recipient": r} for r in channel.recipients]}
    return config


def webhook_headers(channel: Channel) -> dict[str, str]:
    """The headers a Notifications webhook sends: the channel's static headers and those whose
    values come from the environment (resolved here: Notifications keeps them in the cluster, as
    it keeps the URL), and the true type of the body, which Notifications sends as the message text."""
    headers = {"Content-Type": "text/plain; charset=utf-8", **channel.headers}
    for name, env_name in channel.headers_from_env.items():
        secret = secret_from(env_name, None, f"channel {channel.name} header {name}")
        if secret is None:
            raise PacsguardError(f"notifications channel {channel.name}: headers_from_env.{name} names "
                                 f"{env_name}, which is not set")
        headers[name] = secret.get_secret_value()
    return headers


def notifications_gaps(channel: Channel) -> list[str]:
    """What the pack's own delivery does for this channel that a Notifications config cannot."""
    gaps = []
    if channel.type == "webhook" and (channel.secret_env or channel.secret_file):
        gaps.append("an HMAC signature of the body (secret_env/secret_file)")
    if channel.type == "smtp" and not channel.smtp_account:
        gaps.append("mail without a Notifications smtp_account")
    return gaps


def rule_channels(rule: Rule, settings: Settings) -> list[str]:
    """Every channel a rule's alerts can be routed to (its severity, and critical when it escalates)."""
    severities = [rule.severity] + (["critical"] if rule.detection.escalate_after_new_login else [])
    names: list[str] = []
    for severity in severities:
        route = settings.routing.route(rule.signal, severity)
        for name in route.channels if route.channels is not None else [c.name for c in settings.notifications.channels]:
            if name not in names:
                names.append(name)
    return names


def channel_objects(settings: Settings) -> list[PackObject]:
    return [PackObject("notification_channel", channel_object_id(settings, c.name),
                       {"config_id": channel_object_id(settings, c.name), "config": _channel_config(c, settings.scope)},
                       content_path("pack", "settings.yaml"))
            for c in settings.notifications.channels]
