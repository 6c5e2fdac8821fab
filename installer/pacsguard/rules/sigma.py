"""Sigma in and out: the rules Sigma can express as Sigma YAML (a `pacs` logsource), and a Sigma
detection rule as a custom rule of ours. Pure code; tests check both directions with pySigma.

Out: a base rule (the filter) and, for a threshold rule, a correlation rule over it
(event_count, or value_count for distinct studies). First-seen values (2a, 2b, 5b), per-user
baselines (4b), a run of failures before a success (1c) and escalation (4c) have no Sigma
correlation type; a Lucene query string has no Sigma form.

In: a detection of one selection (and optional `not` filters) of plain field: value(s) maps,
without modifiers, becomes an `event` rule (every matching event alerts once per entity and
event-rule window); a correlation is refused (our threshold numbers are pack settings).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import yaml

from pacsguard.core.errors import PacsguardError
from pacsguard.core.settings import Settings
from pacsguard.rules.model import Rule

LOGSOURCE = {"product": "pacs", "service": "audit"}
NAMESPACE = uuid.UUID("6f1d3c2e-8a4b-5c7d-9e0f-1a2b3c4d5e6f")
_SEVERITY = {"critical": "critical", "high": "high", "medium": "medium", "low": "low", "info": "informational"}
_LEVEL = {v: k for k, v in _SEVERITY.items()}


class SigmaRefused(PacsguardError):
    """What Sigma (or our rules) cannot express, with the reason."""


def why_not(rule: Rule) -> str | None:
    """None when the rule has a Sigma form; else why not."""
    d = rule.detection
    if d.type == "new_value":
        return "a first-seen value (profiles job) has no Sigma correlation type"
    if d.type == "baseline":
        return "a per-user baseline has no Sigma correlation type"
    if d.type == "sequence":
        return "a run of failures before a success (temporal_ordered with a count) is not a Sigma correlation type"
    if d.filter is not None and d.filter.query:
        return "a Lucene query string filter has no Sigma form"
    if d.type == "threshold" and d.count == "studies":
        return "a sum of study counts has no Sigma correlation type"
    return None


def _name(rule: Rule) -> str:
    return "pacsguard_" + re.sub(r"[^a-z0-9]+", "_", rule.signal.lower())


def export_rule(rule: Rule, settings: Settings) -> list[dict[str, Any]]:
    """The Sigma documents of a rule: its base rule, and a correlation for a threshold rule."""
    reason = why_not(rule)
    if reason:
        raise SigmaRefused(f"rule {rule.signal} ({rule.name}): not exported: {reason}")
    d = rule.detection
    f = d.filter
    assert f is not None
    selection: dict[str, Any] = {}
    if f.actions:
        selection["event.action"] = list(f.actions)
    if f.outcome:
        selection["event.outcome"] = f.outcome
    if f.external_only:
        selection["pacs.share.external"] = True
    selection.update(f.where)
    detection: dict[str, Any] = {"selection": selection}
    negatives = dict(f.where_not)
    if f.exclude_admins:
        negatives["user.roles"] = list(settings.thresholds.admin_roles)
    condition = "selection"
    for i, (field, value) in enumerate(negatives.items()):
        detection[f"filter_{i}"] = {field: value}
        condition += f" and not filter_{i}"
    detection["condition"] = condition
    notes = []
    if f.exclude_admins:
        notes.append("administrators known only to the user directory (no roles on the event) are not excluded")
    if d.escalate_after_new_login:
        notes.append("the escalation to critical after a new device/country login (4c) is not exported")
    base = {
        "title": rule.name, "id": str(rule.id), "name": _name(rule), "status": _status(rule.maturity),
        "description": rule.description + (" Not exported: " + "; ".join(notes) + "." if notes else ""),
        "references": list(rule.references), "author": rule.author, "date": rule.created.isoformat(),
        "modified": rule.updated.isoformat(),
        "tags": sorted({f"attack.{m.technique_id.lower()}" for m in rule.mitre}
                       | {"attack." + m.tactic.lower().replace(" ", "-") for m in rule.mitre}),
        "logsource": dict(LOGSOURCE), "detection": detection,
        "falsepositives": list(rule.false_positives), "level": _SEVERITY[rule.severity],
    }
    if not base["references"]:
        del base["references"]
    if d.type != "threshold":
        return [base]
    t = settings.thresholds
    condition_: dict[str, Any] = {"gte": int(getattr(t, d.threshold or ""))}
    kind = "event_count"
    if d.count == "distinct_studies":
        kind, condition_["field"] = "value_count", "pacs.study.uids"
    correlation = {
        "title": f"{rule.name} (correlation)", "id": str(uuid.uuid5(NAMESPACE, str(rule.id))),
        "name": _name(rule) + "_correlation", "status": base["status"], "author": rule.author,
        "date": base["date"], "level": base["level"],
        "correlation": {"type": kind, "rules": [base["name"]], "group-by": [d.entity, *d.group_by],
                        "timespan": str(getattr(t, d.window or "")), "condition": condition_},
    }
    base["generate"] = False  # the base rule alone is not an alert here
    return [base, correlation]


def _status(maturity: str) -> str:
    return {"production": "stable", "experimental": "experimental", "development": "test"}[maturity]


def export_text(rules: list[Rule], settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
    """{file name: Sigma YAML} of the rules Sigma expresses, and {signal: why not} of the others."""
    files, refused = {}, {}
    for rule in rules:
        try:
            docs = export_rule(rule, settings)
        except SigmaRefused as exc:
            refused[rule.signal] = str(exc)
            continue
        files[f"{_name(rule)}.yml"] = "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs)
    return files, refused


def import_rule(text: str, signal: str, where: str = "<sigma>") -> str:
    """A Sigma detection rule as the YAML of a custom rule of ours (an `event` rule)."""
    docs = [d for d in yaml.safe_load_all(text) if d]
    if any("correlation" in d for d in docs):
        raise SigmaRefused(f"{where}: a correlation rule is not imported: pacsguard thresholds are pack settings "
                           "(import the base rule, then write a threshold rule naming the settings)")
    if len(docs) != 1:
        raise SigmaRefused(f"{where}: one Sigma detection rule per file")
    doc = docs[0]
    det = doc.get("detection") or {}
    cond = str(det.get("condition", "")).strip()
    m = re.fullmatch(r"(\w+)((?:\s+and\s+not\s+\w+)*)", cond)
    if not m:
        raise SigmaRefused(f"{where}: condition {cond!r}: only `selection [and not filter ...]` is imported")
    positive, negatives = m.group(1), re.findall(r"not\s+(\w+)", m.group(2))
    flt: dict[str, Any] = {"where": {}, "where_not": {}}
    for key, target in [(positive, "where"), *[(n, "where_not") for n in negatives]]:
        block = det.get(key)
        if not isinstance(block, dict):
            raise SigmaRefused(f"{where}: detection.{key}: only a map of field: value(s) is imported")
        for field, value in block.items():
            if "|" in str(field):
                raise SigmaRefused(f"{where}: detection.{key}.{field}: value modifiers are not imported")
            if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)):
                raise SigmaRefused(f"{where}: detection.{key}.{field}: only plain values are imported")
            flt[target][field] = value
    actions = flt["where"].pop("event.action", None)
    if actions is not None:
        flt["actions"] = actions if isinstance(actions, list) else [actions]
    outcome = flt["where"].pop("event.outcome", None)
    if isinstance(outcome, str):
        flt["outcome"] = outcome
    flt = {k: v for k, v in flt.items() if v}
    today = dt.date.today().isoformat()
    level = str(doc.get("level", "medium"))
    severity = _LEVEL.get(level, "medium")
    rule = {
        "id": str(doc.get("id") or uuid.uuid5(NAMESPACE, text)), "name": str(doc.get("title", signal))[:120],
        "signal": signal, "version": 1, "created": str(doc.get("date") or today).replace("/", "-"),
        "updated": str(doc.get("modified") or doc.get("date") or today).replace("/", "-"),
        "maturity": "experimental", "author": str(doc.get("author") or "sigma import"),
        "description": str(doc.get("description") or f"Imported from Sigma rule {doc.get('title')}"),
        "severity": severity, "risk_score": {"critical": 95, "high": 75, "medium": 50, "low": 30, "info": 10}[severity],
        "mitre": _mitre(doc.get("tags") or [], where),
        "data_sources": ["generic"], "false_positives": [str(x) for x in doc.get("falsepositives") or ["unknown"]],
        "references": [str(x) for x in doc.get("references") or []],
        "guide": {"triage": "Review the matching events of the entity.", "contain": "Follow the team's routine.",
                  "preserve": "Export the matching events.", "scope": "Which other entities show the same events?",
                  "reset": "Undo what the events changed."},
        "schedule": "1m",
        "detection": {"type": "event", "entity": "user.name", "filter": flt},
    }
    return f"# Imported from Sigma ({where}) by pacsguard rules import.\n" + yaml.safe_dump(rule, sort_keys=False)


def _mitre(tags: list[str], where: str) -> list[dict[str, str]]:
    techniques = [t.split(".", 1)[1].upper() for t in tags if re.fullmatch(r"attack\.t\d{4}(\.\d{3})?", t)]
    if not techniques:
        raise SigmaRefused(f"{where}: tags name no ATT&CK technique (attack.tNNNN): a pacsguard rule needs one")
    return [{"tactic_id": "TA0000", "tactic": "Unknown (from Sigma)", "technique_id": t, "technique": t}
            for t in techniques]
