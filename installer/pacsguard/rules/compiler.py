"""Compile detection rules into Alerting monitors (and notification channels) as pack objects.

The monitor body comes from detections/templates/monitor.yaml.j2, rendered in
the same sandboxed, StrictUndefined Jinja2 environment as every other content
file, with the pack's thresholds, so changing a threshold in settings changes
exactly the monitors that read it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pacsguard.core.content import content_path
from pacsguard.core.errors import PacsguardError
from pacsguard.core.render import ENV, ContentError
from pacsguard.core.settings import Settings
from pacsguard.packobjects import PackObject
from pacsguard.rules.model import Rule, load_rules

TEMPLATE = ("detections", "templates", "monitor.yaml.j2")


def rules_folder() -> Path:
    return content_path("detections")


def evidence_query(rule: Rule) -> str:
    """A Discover / query_string query that shows the events behind an alert."""
    d = rule.detection
    if d.type == "event" and d.queries:
        return " OR ".join(f"({q})" for q in d.queries.values())
    f = d.filter
    if f is None:
        return f"profile.kind:{d.profile_kind}"
    parts = ["event.action:(" + " OR ".join(f'"{a}"' for a in f.actions) + ")"]
    if f.outcome:
        parts.append(f"event.outcome:{f.outcome}")
    parts.append(f"{d.entity}:<entity>")
    return " AND ".join(parts)


def channel_ids(settings: Settings) -> list[str]:
    return [f"{settings.id_prefix}-{c.name}" for c in settings.notifications.channels]


def render_monitor(rule: Rule, settings: Settings) -> dict[str, Any]:
    path = content_path(*TEMPLATE)
    context = {
        "rule": {**rule.model_dump(mode="json"), "severity_number": rule.monitor_severity},
        "t": settings.thresholds.model_dump(),
        "indices": {key: settings.index(key) for key in type(settings.indices).model_fields},
        "prefix": settings.id_prefix,
        "channels": channel_ids(settings),
        "evidence": evidence_query(rule),
    }
    try:
        text = ENV.from_string(path.read_text()).render(**context)
    except Exception as exc:  # noqa: BLE001 - template errors of any kind name the rule
        raise ContentError(f"{path}: rendering rule {rule.id} ({rule.name}): {exc}") from None
    try:
        body: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError as exc:
        snippet = text.splitlines()[exc.lineno - 1] if exc.lineno <= len(text.splitlines()) else ""
        raise ContentError(f"{path}: rule {rule.id} renders invalid JSON at line {exc.lineno}: {exc.msg}: "
                           f"{snippet.strip()[:160]}") from None
    return body


def monitor_objects(settings: Settings, folder: Path | None = None) -> list[PackObject]:
    folder = folder or rules_folder()
    rules = load_rules(folder)
    objects = []
    for rule in rules:
        body = render_monitor(rule, settings)
        source = next((p for p in folder.glob("*.yml") if str(rule.id) in p.read_text()), folder)
        objects.append(PackObject("monitor", f"{settings.id_prefix}-rule-{rule.id}", body, source))
    return objects


def channel_objects(settings: Settings) -> list[PackObject]:
    objects = []
    for channel in settings.notifications.channels:
        config: dict[str, Any] = {"name": f"{settings.id_prefix} {channel.name}", "config_type": channel.type,
                                  "is_enabled": True, "description": f"pacsguard alerts: {channel.name}"}
        if channel.type in ("webhook", "slack", "chime"):
            if not channel.url:
                raise PacsguardError(f"notifications channel {channel.name}: {channel.type} needs url")
            config[channel.type] = {"url": channel.url}
        elif channel.type == "smtp":
            if not (channel.smtp_account and channel.recipients):
                raise PacsguardError(f"notifications channel {channel.name}: smtp needs smtp_account and recipients")
            config["email"] = {"email_account_id": channel.smtp_account,
                               "recipient_list": [{"recipient": r} for r in channel.recipients]}
        objects.append(PackObject("notification_channel", f"{settings.id_prefix}-{channel.name}",
                                  {"config_id": f"{settings.id_prefix}-{channel.name}", "config": config},
                                  content_path("pack", "settings.yaml")))
    return objects
