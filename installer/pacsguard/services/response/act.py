"""contain and reset: plan the connector actions an alert calls for, run them (dry run unless
executed), and record each one.

Order matters and failure stops: the first action a connector cannot do is recorded as
failed and raised (one `error:` line in the CLI); the actions after it are not attempted,
so a failure changes nothing else. Running a step twice is safe: Keycloak's connector
finds nothing to change, and a webhook already accepted for this alert is not sent again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pacsguard.core.connection import Cluster
from pacsguard.core.errors import ConnectorError, PacsguardError
from pacsguard.core.settings import Settings
from pacsguard.response.actions import ActionLog, ActionRecord, Step
from pacsguard.response.connectors.keycloak import ActionResult, KeycloakConnector
from pacsguard.response.connectors.webhook import WebhookConnector, request_for
from pacsguard.services.response.context import AlertContext, load_alert, new_record, record


@dataclass
class Planned:
    """One action to run: `run(connector_dry_run)` returns (changed, detail, data)."""

    connector: str
    action: str
    target: str
    run: Callable[[bool], tuple[bool, str, dict[str, Any]]]


@dataclass
class StepReport:
    alert: AlertContext
    step: Step
    executed: bool
    records: list[ActionRecord] = field(default_factory=list)
    by_hand: list[str] = field(default_factory=list)   # what no connector can do: the checklist for a person

    @property
    def nothing_to_change(self) -> bool:
        return all(r.result == "unchanged" for r in self.records)

    def as_dict(self) -> dict[str, Any]:
        return {"alert_id": self.alert.id, "step": self.step, "executed": self.executed,
                "actions": [r.as_dict() for r in self.records], "by_hand": self.by_hand,
                "nothing_to_change": self.nothing_to_change}


def _keycloak_run(settings: Settings, call: Callable[[KeycloakConnector], ActionResult]
                  ) -> Callable[[bool], tuple[bool, str, dict[str, Any]]]:
    def run(dry_run: bool) -> tuple[bool, str, dict[str, Any]]:
        connector = KeycloakConnector(settings.connectors.keycloak, dry_run=dry_run)
        result = call(connector)
        return result.changed, result.detail, {"realm": result.realm, "user_id": result.user_id, **result.data}
    return run


def _webhooks(cluster: Cluster, settings: Settings, ctx: AlertContext, step: Step) -> list[Planned]:
    channels = {c.name: c for c in settings.notifications.channels}
    log = ActionLog(cluster, settings.index("actions"))
    planned = []
    for hook in settings.connectors.webhooks:
        if hook.step != step or (hook.signals and ctx.signal not in hook.signals):
            continue
        request = request_for(hook, ctx.id, ctx.entity)

        def run(dry_run: bool, hook: Any = hook, request: Any = request) -> tuple[bool, str, dict[str, Any]]:
            before = log.last_done(ctx.id, request.connector, request.action, request.target)
            if before is not None:
                return False, f"already asked at {before.at} ({before.detail})", {}
            connector = WebhookConnector(hook, channels[hook.channel], settings.notifications.delivery,
                                         dry_run=dry_run)
            detail = connector.ask(request, {k: ctx.document.get(k) for k in
                                            ("id", "engine", "state", "severity", "owner", "rule", "entity")})
            return True, detail, {"request": request.text, "delivery_id": request.delivery_id}
        planned.append(Planned(request.connector, request.action, request.target, run))
    return planned


# Signals whose contain step locks the account (the rules' guides: "disable the account and revoke
# its sessions"); 5a/5b expire links instead (webhooks), 1b blocks an IP, 3 undoes the change itself.
DISABLE_ON_CONTAIN = frozenset({"1a", "1c", "2a", "2b", "4a", "4b", "4c"})


def plan_contain(cluster: Cluster, settings: Settings, ctx: AlertContext) -> tuple[list[Planned], list[str]]:
    planned: list[Planned] = []
    by_hand: list[str] = []
    kc = bool(settings.connectors.keycloak.url)
    if ctx.signal == "3":
        planned += _undo_admin_change(cluster, settings, ctx, by_hand)
    elif ctx.is_user and ctx.signal in DISABLE_ON_CONTAIN and kc:
        user = ctx.entity
        planned += [
            Planned("keycloak", "disable-user", user, _keycloak_run(settings, lambda c: c.disable_user(user))),
            Planned("keycloak", "logout-user", user, _keycloak_run(settings, lambda c: c.logout_user(user))),
        ]
    elif ctx.is_user and ctx.signal in DISABLE_ON_CONTAIN:
        by_hand.append(f"disable {ctx.entity} and end its sessions in the identity provider (no Keycloak "
                       "connector: connectors.keycloak.url is not set)")
    elif not ctx.is_user:
        by_hand.append(f"block {ctx.entity} ({ctx.entity_field}) at the firewall or WAF; the accounts it "
                       f"targeted are listed by `pacsguard respond scope {ctx.id}`")
    planned += _webhooks(cluster, settings, ctx, "contain")
    by_hand.append(f"guide: {ctx.rule.guide.contain}")
    return planned, by_hand


def _undo_admin_change(cluster: Cluster, settings: Settings, ctx: AlertContext,
                       by_hand: list[str]) -> list[Planned]:
    """Signal 3 (actor, action, target): take back a granted admin role, disable a new account."""
    kc = bool(settings.connectors.keycloak.url)
    action = ctx.keys[1] if len(ctx.keys) > 1 else ""
    target = ctx.keys[2] if len(ctx.keys) > 2 else ""
    planned: list[Planned] = []
    if action == "role-grant":
        for user, role in _granted_roles(cluster, settings, ctx):
            if kc:
                planned.append(Planned("keycloak", "remove-realm-role", f"{user}:{role}",
                                       _keycloak_run(settings, _remove_role(user, role))))
            else:
                by_hand.append(f"if not planned: remove role {role} from {user} in the identity provider")
    elif action == "user-create" and target:
        if kc:
            planned.append(Planned("keycloak", "disable-user", target,
                                   _keycloak_run(settings, lambda c: c.disable_user(target))))
        else:
            by_hand.append(f"if not planned: disable the new account {target} in the identity provider")
    else:
        by_hand.append(f"if not planned: undo the {action or 'change'} of {ctx.entity} on {target or '?'}")
    return planned


def _granted_roles(cluster: Cluster, settings: Settings, ctx: AlertContext) -> list[tuple[str, str]]:
    """(target user, role) of admin-role grants behind a signal-3 alert, limited to removable roles."""
    if len(ctx.keys) < 3 or ctx.keys[1] != "role-grant":
        return []
    actor, target = ctx.keys[0], ctx.keys[2]
    start, end = ctx.window(settings)
    res = cluster.request("POST", f"/{settings.index('events_data_stream')}/_search", ok_missing=True, body={
        "size": 0, "query": {"bool": {"filter": [
            {"term": {"user.name": actor}}, {"term": {"event.action": "role-grant"}},
            {"term": {"user.target.name": target}}, {"range": {"@timestamp": {"gte": start, "lte": end}}}]}},
        "aggs": {"roles": {"composite": {"size": settings.detection.composite_page_size,
                                         "sources": [{"role": {"terms": {"field": "user.changes.roles"}}}]}}}}) or {}
    roles = [b["key"]["role"] for b in res.get("aggregations", {}).get("roles", {}).get("buckets", [])]
    return [(target, r) for r in roles if r in settings.response.removable_roles]


def _remove_role(target: str, role: str) -> Callable[[KeycloakConnector], ActionResult]:
    return lambda c: c.remove_realm_role(target, role)


def plan_reset(cluster: Cluster, settings: Settings, ctx: AlertContext) -> tuple[list[Planned], list[str]]:
    planned: list[Planned] = []
    by_hand: list[str] = []
    kc = bool(settings.connectors.keycloak.url)
    if ctx.signal == "3":
        # restore least privilege (nothing to change when contain already took the role back)
        planned += _undo_admin_change(cluster, settings, ctx, by_hand) if len(ctx.keys) > 1 and \
            ctx.keys[1] == "role-grant" else []
        by_hand.append(f"if the change was not {ctx.entity}'s: reset {ctx.entity}'s credentials")
    elif ctx.is_user:
        user = ctx.entity
        if kc:
            planned.append(Planned("keycloak", "require-password-update", user,
                                   _keycloak_run(settings, lambda c: c.require_password_update(user))))
        else:
            by_hand.append(f"make {user} change the password at the next login (identity provider)")
    planned += _webhooks(cluster, settings, ctx, "reset")
    by_hand += [f"rotate: {item.strip()}" for item in ctx.rule.guide.reset.rstrip(".").split(",") if item.strip()]
    if ctx.signal in ("5a", "5b"):
        by_hand.append("restrict external sharing to the roles that need it; expire the remaining links")
    if ctx.signal in ("1a", "1b", "1c", "2a", "2b"):
        by_hand.append("require MFA for the account before it is enabled again")
    return planned, by_hand


def run_step(cluster: Cluster, settings: Settings, alert_id: str, step: Step, by: str, execute: bool,
             progress: Callable[[str], None] = lambda _: None) -> StepReport:
    ctx = load_alert(cluster, settings, alert_id)
    planner = {"contain": plan_contain, "reset": plan_reset}.get(step)
    if planner is None:
        raise PacsguardError(f"{step} is not an action step (contain or reset)")
    planned, by_hand = planner(cluster, settings, ctx)
    report = StepReport(ctx, step, execute, by_hand=by_hand)
    for item in planned:
        try:
            changed, detail, data = item.run(not execute)
        except (ConnectorError, PacsguardError) as exc:
            reason = exc.reason if isinstance(exc, ConnectorError) else str(exc)
            rec = record(cluster, settings, ctx, new_record(
                ctx, step, item.connector, item.action, item.target, by, dry_run=not execute, result="failed",
                changed=False, detail="", error=reason))
            report.records.append(rec)
            raise
        result = ("done" if execute else "planned") if changed else "unchanged"
        rec = record(cluster, settings, ctx, new_record(ctx, step, item.connector, item.action, item.target, by,
                                                        dry_run=not execute, result=result, changed=changed,
                                                        detail=detail, data=data))
        report.records.append(rec)
        progress(rec.line())
    return report
