"""`pacsguard respond <alert>`: the whole routine for one alert, and its response history.

The walk shows, for each step, what the rule's guide says, the command that does
it, and whether it has been done (from the actions recorded for the alert). The
history merges the alert's own history (pack alerts: lifecycle and every action)
with the actions index (the only record for Alerting's alerts), without repeats.
"""

from __future__ import annotations

from typing import Any

from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings
from pacsguard.response.actions import ActionLog, ActionRecord
from pacsguard.services.response.context import AlertContext, load_alert

STEPS = ("contain", "preserve", "scope", "reset")


def history(cluster: Cluster, settings: Settings, ctx: AlertContext) -> list[dict[str, Any]]:
    actions = ActionLog(cluster, settings.index("actions")).for_alert(ctx.id)
    seen = set()
    out: list[dict[str, Any]] = []
    for h in ctx.document.get("history") or []:
        action = h.get("action") or {}
        if action.get("id"):
            seen.add(action["id"])
        out.append({"at": h.get("at"), "state": h.get("state"), "by": h.get("by"), "note": h.get("note", ""),
                    "action": action or None})
    for rec in actions:
        if rec.id not in seen:
            out.append({"at": rec.at, "state": ctx.state, "by": rec.by, "note": rec.line(),
                        "action": {"id": rec.id, "step": rec.step, "connector": rec.connector,
                                   "action": rec.action, "target": rec.target, "result": rec.result,
                                   "dry_run": rec.dry_run}})
    if ctx.engine == "alerting":
        for key, state in (("acknowledged_time", "ACKNOWLEDGED"), ("end_time", "COMPLETED")):
            if ctx.document.get(key):
                out.append({"at": str(ctx.document[key]), "state": state, "by": "alerting", "note": "", "action": None})
    return sorted(out, key=lambda h: str(h.get("at")))


def actions_not_in_history(cluster: Cluster, settings: Settings, alert_id: str,
                           alert_history: list[dict[str, Any]]) -> list[ActionRecord]:
    """Recorded actions the alert's own history lacks: all of them for an Alerting alert (which has
    no history of ours), and for a pack alert any that a concurrent save of the alert overwrote."""
    have = {(h.get("action") or {}).get("id") for h in alert_history}
    return [r for r in ActionLog(cluster, settings.index("actions")).for_alert(alert_id) if r.id not in have]


def _status(step: str, actions: list[ActionRecord]) -> str:
    mine = [a for a in actions if a.step == step]
    if not mine:
        return "not started"
    if any(a.result == "failed" for a in mine[-1:]):
        return "FAILED (see history)"
    executed = [a for a in mine if not a.dry_run and a.result in ("done", "unchanged")]
    if step == "scope" and executed:
        return f"done (last {executed[-1].at}: {executed[-1].detail})"
    if executed:
        return f"done ({len(executed)} action(s), last {executed[-1].at})"
    return "planned only (dry run)"


def walk(cluster: Cluster, settings: Settings, alert_id: str) -> dict[str, Any]:
    ctx = load_alert(cluster, settings, alert_id)
    actions = ActionLog(cluster, settings.index("actions")).for_alert(ctx.id)
    guide = ctx.rule.guide
    steps = [{"step": "triage", "guide": guide.triage, "command": f"pacsguard alerts ack {ctx.id} --note ...",
              "status": "acknowledged" if ctx.document.get("acknowledged_time") else ctx.state}]
    for step in STEPS:
        command = {"contain": f"pacsguard respond contain {ctx.id} [--execute]",
                   "preserve": f"pacsguard respond preserve {ctx.id} [--out evidence.zip]",
                   "scope": f"pacsguard respond scope {ctx.id} [--json]",
                   "reset": f"pacsguard respond reset {ctx.id} [--execute]"}[step]
        steps.append({"step": step, "guide": getattr(guide, step), "command": command,
                      "status": _status(step, actions)})
    steps.append({"step": "close", "guide": "close with the outcome once reset is done",
                  "command": f"pacsguard alerts close {ctx.id} --note ...", "status": ctx.state})
    return {"alert": {"id": ctx.id, "engine": ctx.engine, "state": ctx.state, "signal": ctx.signal,
                      "rule": ctx.rule.name, "entity": ctx.entity, "entity_field": ctx.entity_field,
                      "owner": ctx.owner, "start_time": ctx.start_time,
                      "severity": ctx.document.get("severity")},
            "steps": steps, "history": history(cluster, settings, ctx)}


def walk_text(data: dict[str, Any]) -> str:
    a = data["alert"]
    lines = [f"{a['id']}  {a['state']}  {a.get('severity') or ''}  signal {a['signal']}: {a['rule']}",
             f"entity {a['entity_field']} {a['entity']}; owner {a['owner'] or '-'}; opened {a['start_time']}", ""]
    for s in data["steps"]:
        lines += [f"{s['step']:<9} [{s['status']}]", f"          {s['guide']}", f"          $ {s['command']}"]
    lines += ["", "history:"]
    lines += [f"  {h['at']}  {h['state'] or '':<13} {h['by']}  {h['note']}" for h in data["history"]] or ["  none"]
    return "\n".join(lines)
