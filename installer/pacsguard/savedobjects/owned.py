"""How the pack owns saved objects in a Dashboards instance: stamp, read, list, delete.

Saved objects take no `_meta`, so, like ingest pipelines, they carry the
pack's stamp at the end of their description: `[pacsguard <owner> <version>
#<hash>]`, the hash being that of the object as rendered (before the stamp).
Index patterns have no description in Dashboards' editor, but their saved
object type is mapped with `dynamic: false`, so the attribute is kept and
returned as written. An object is the pack's only when its stamp names the
installation's owner, whatever its id looks like.
"""

from __future__ import annotations

import copy
from typing import Any

from pacsguard.core.dashboards import Dashboards
from pacsguard.core.escaping import path_segment
from pacsguard.core.render import canonical_hash
from pacsguard.packobjects import PackObject, Stamp, strip_text_stamp

SAVED_OBJECT_TYPES = ("index-pattern", "search", "visualization", "dashboard")
# Install order: what is referenced first (import resolves references within one file, but a
# partial import must still leave nothing dangling); delete in reverse.
TYPE_ORDER = {t: i for i, t in enumerate(SAVED_OBJECT_TYPES)}


def pack_object(obj: dict[str, Any], source: Any) -> PackObject:
    """A rendered saved object as a PackObject: kind = its type, body = the object without a stamp."""
    return PackObject(obj["type"], obj["id"], obj, source)


def stamped(obj: dict[str, Any], stamp: Stamp) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    text = strip_text_stamp(str(out["attributes"].get("description", ""))).strip()
    out["attributes"]["description"] = f"{text} {stamp.text()}".strip()
    return out


def stamp_of(live: dict[str, Any]) -> Stamp | None:
    return Stamp.parse_text(str((live.get("attributes") or {}).get("description", "")))


def fingerprint(obj: dict[str, Any], keys: Any = None) -> str:
    """Hash of what the pack controls in an object: its attributes (only the keys it writes) and references.

    Dashboards adds attributes of its own over time (an index pattern's field
    list once someone opens it), which are not a hand edit of the pack's content.
    """
    attributes = obj.get("attributes") or {}
    wanted = keys if keys is not None else attributes.keys()
    refs = sorted((r.get("name"), r.get("type"), r.get("id")) for r in obj.get("references") or [])
    return canonical_hash({"attributes": {k: attributes.get(k) for k in sorted(wanted)}, "references": refs})


def get(dashboards: Dashboards, obj_type: str, obj_id: str) -> dict[str, Any] | None:
    res = dashboards.request("GET", f"/api/saved_objects/{path_segment(obj_type)}/{path_segment(obj_id)}", ok_missing=True)
    if not res or res.get("error"):
        return None
    return dict(res)


def owned(dashboards: Dashboards, owner: str) -> list[tuple[str, str]]:
    """(type, id) of every saved object stamped as the owner's."""
    res = dashboards.request("GET", "/api/saved_objects/_find",
                             params={"type": list(SAVED_OBJECT_TYPES), "per_page": 10000}) or {}
    found = []
    for obj in res.get("saved_objects", []):
        stamp = stamp_of(obj)
        if stamp is not None and stamp.owner == owner:
            found.append((str(obj["type"]), str(obj["id"])))
    return sorted(found, key=lambda t: (TYPE_ORDER.get(t[0], 99), t[1]))


def delete(dashboards: Dashboards, obj_type: str, obj_id: str) -> None:
    dashboards.request("DELETE", f"/api/saved_objects/{path_segment(obj_type)}/{path_segment(obj_id)}", ok_missing=True)
