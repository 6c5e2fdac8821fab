"""Install the pack's saved objects into OpenSearch Dashboards: plan, install, status, uninstall.

The same discipline as the cluster objects (services/install.py): every
object has a stable id in the installation's scope and a stamp with the
content hash; the plan compares hashes, so a second install imports nothing;
objects that left the content are deleted; uninstall removes exactly what is
stamped as this installation's. Writes go through one
`POST /api/saved_objects/_import?overwrite=true` of the pending objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pacsguard import __version__
from pacsguard.core.content import content_path
from pacsguard.core.dashboards import Dashboards, DashboardsError
from pacsguard.core.errors import PacsguardError
from pacsguard.core.models import Progress, quiet
from pacsguard.core.settings import Settings
from pacsguard.packobjects import PackObject, Stamp, strip_text_stamp
from pacsguard.savedobjects import owned
from pacsguard.savedobjects.render import render_objects, to_ndjson
from pacsguard.savedobjects.spec import load_content
from pacsguard.services.install import Change, ObjectStatus, Plan, compare


def desired_objects(settings: Settings) -> list[PackObject]:
    content = load_content()
    source = content_path("dashboards")
    return [owned.pack_object(o, source) for o in render_objects(settings, content)]


def make_plan(dashboards: Dashboards, settings: Settings, objects: list[PackObject]) -> Plan:
    plan = Plan()
    for obj in objects:
        live = owned.get(dashboards, obj.kind, obj.id)
        plan.changes.append(compare(obj, live is not None, owned.stamp_of(live) if live else None, settings.owner,
                                    "not in Dashboards"))
    wanted = {(o.kind, o.id) for o in objects}
    for obj_type, obj_id in reversed(owned.owned(dashboards, settings.owner)):
        if (obj_type, obj_id) not in wanted:
            plan.changes.append(Change("delete", obj_type, obj_id, "no longer in the pack"))
    return plan


@dataclass
class DashboardsResult:
    url: str
    plan: Plan
    applied: list[Change] = field(default_factory=list)


def _check_reachable(dashboards: Dashboards) -> None:
    """One clear line when what answers is not Dashboards (or nothing answers)."""
    try:
        status = dashboards.status()
    except DashboardsError as exc:
        raise PacsguardError(f"{dashboards.url} does not look like OpenSearch Dashboards: {exc}") from None
    if not isinstance(status, dict) or "version" not in status:
        raise PacsguardError(f"{dashboards.url} does not look like OpenSearch Dashboards (no version in /api/status)")


def install(dashboards: Dashboards, settings: Settings, progress: Progress = quiet,
            dry_run: bool = False) -> DashboardsResult:
    _check_reachable(dashboards)
    objects = desired_objects(settings)
    plan = make_plan(dashboards, settings, objects)
    result = DashboardsResult(dashboards.url, plan)
    if dry_run:
        return result
    writes = [c for c in plan.pending if c.action != "delete"]
    if writes:
        progress(f"import {len(writes)} saved object(s) into {dashboards.url}")
        stamped = [owned.stamped(c.obj.body, Stamp(settings.owner, __version__, c.obj.hash))
                   for c in writes if c.obj is not None]
        res = dashboards.import_ndjson(to_ndjson(stamped), overwrite=True)
        errors = res.get("errors") or []
        if not res.get("success") or errors:
            first = "; ".join(f"{e.get('type')} {e.get('id')}: {(e.get('error') or {}).get('type', e.get('error'))}"
                              for e in errors[:5])
            raise PacsguardError(f"Dashboards {dashboards.url} imported {res.get('successCount', 0)} of "
                                 f"{len(stamped)} saved objects; refused: {first or res}")
        result.applied += writes
    for change in [c for c in plan.pending if c.action == "delete"]:
        progress(f"delete {change.kind} {change.id}")
        owned.delete(dashboards, change.kind, change.id)
        result.applied.append(change)
    return result


def status(dashboards: Dashboards, settings: Settings) -> list[ObjectStatus]:
    _check_reachable(dashboards)
    rows: list[ObjectStatus] = []
    objects = desired_objects(settings)
    for obj in objects:
        live = owned.get(dashboards, obj.kind, obj.id)
        if live is None:
            rows.append(ObjectStatus(obj.kind, obj.id, "missing", "not in Dashboards"))
            continue
        stamp = owned.stamp_of(live)
        if stamp is None or stamp.owner != settings.owner:
            rows.append(ObjectStatus(obj.kind, obj.id, "unmanaged", "exists without this installation's stamp"))
        elif stamp.hash != obj.hash:
            rows.append(ObjectStatus(obj.kind, obj.id, "outdated", f"installed {stamp.hash}, pack has {obj.hash}"))
        else:
            expected = owned.stamped(obj.body, stamp)
            keys = expected["attributes"].keys()
            if owned.fingerprint(live, keys) != owned.fingerprint(expected, keys):
                rows.append(ObjectStatus(obj.kind, obj.id, "drifted", "changed in Dashboards by hand since install"))
            else:
                rows.append(ObjectStatus(obj.kind, obj.id, "ok"))
    wanted = {(o.kind, o.id) for o in objects}
    rows += [ObjectStatus(t, i, "orphan", "pack object no longer in the content")
             for t, i in owned.owned(dashboards, settings.owner) if (t, i) not in wanted]
    return rows


def uninstall(dashboards: Dashboards, settings: Settings, progress: Progress = quiet) -> list[tuple[str, str]]:
    """Delete every saved object stamped as this installation's (dashboards first, index patterns last)."""
    _check_reachable(dashboards)
    removed = []
    for obj_type, obj_id in reversed(owned.owned(dashboards, settings.owner)):
        progress(f"delete {obj_type} {obj_id}")
        owned.delete(dashboards, obj_type, obj_id)
        removed.append((obj_type, obj_id))
    return removed


def readable(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """An object with its JSON-string attributes decoded, for a diff a person can read."""
    if obj is None:
        return None
    out = {"type": obj.get("type"), "id": obj.get("id"), "references": obj.get("references", []),
           "attributes": dict(obj.get("attributes") or {})}
    attrs = out["attributes"]
    for name in ("visState", "uiStateJSON", "panelsJSON", "optionsJSON"):
        if isinstance(attrs.get(name), str):
            attrs[name] = json.loads(attrs[name])
    meta = attrs.get("kibanaSavedObjectMeta")
    if isinstance(meta, dict) and isinstance(meta.get("searchSourceJSON"), str):
        attrs["kibanaSavedObjectMeta"] = {"searchSourceJSON": json.loads(meta["searchSourceJSON"])}
    if isinstance(attrs.get("description"), str):
        attrs["description"] = strip_text_stamp(attrs["description"]).strip()
    return out


def diff(dashboards: Dashboards, settings: Settings) -> list[tuple[Change, dict[str, Any] | None,
                                                                 dict[str, Any] | None]]:
    """(change, live, wanted) per pending change, both readable and without the stamp."""
    _check_reachable(dashboards)
    plan = make_plan(dashboards, settings, desired_objects(settings))
    out = []
    for change in plan.pending:
        live = owned.get(dashboards, change.kind, change.id) if change.action != "create" else None
        out.append((change, readable(live), readable(change.obj.body) if change.obj else None))
    return out


def export_ndjson(settings: Settings) -> str:
    """The stamped ndjson an operator can import by hand (Stack Management > Saved objects > Import)."""
    return to_ndjson([owned.stamped(o.body, Stamp(settings.owner, __version__, o.hash))
                      for o in desired_objects(settings)])


def summary(result: DashboardsResult) -> dict[str, Any]:
    return {"url": result.url, "summary": result.plan.summary(),
            "changes": [[c.action, c.kind, c.id, c.reason] for c in result.plan.pending]}
