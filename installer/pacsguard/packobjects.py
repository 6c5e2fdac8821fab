"""The kinds of cluster object the pack owns, and how each is read, written and stamped.

Every object carries a stamp: the pack version and the content hash of the
body the pack rendered. Templates and indices keep it in `_meta.pacsguard`;
ingest pipelines accept no `_meta` in 2.19, so their description ends with
`[pacsguard <version> #<hash>]`. The stamp is what makes install idempotent
and uninstall exact: an object is the pack's only if it carries one.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pacsguard.core.connection import Cluster
from pacsguard.core.escaping import path_segment
from pacsguard.core.render import canonical_hash

STAMP_KEY = "pacsguard"
# `[pacsguard <owner> <version> #<hash>]` at the end of a description (or a monitor's name).
_TEXT_STAMP = re.compile(r"\s*\[pacsguard (?P<owner>\S+/\S+) (?P<version>\S+) #(?P<hash>[0-9a-f]{16})\]$")


@dataclass(frozen=True)
class Stamp:
    owner: str  # "<id_prefix>/<namespace>": the one installation this object belongs to
    version: str
    hash: str

    def text(self) -> str:
        return f"[pacsguard {self.owner} {self.version} #{self.hash}]"

    @classmethod
    def parse_text(cls, text: str) -> Stamp | None:
        match = _TEXT_STAMP.search(text)
        return cls(match["owner"], match["version"], match["hash"]) if match else None

    @classmethod
    def from_meta(cls, meta: Any) -> Stamp | None:
        if isinstance(meta, dict) and {"hash", "owner"} <= meta.keys():
            return cls(str(meta["owner"]), str(meta.get("version")), str(meta["hash"]))
        return None

    def meta(self) -> dict[str, str]:
        return {"owner": self.owner, "version": self.version, "hash": self.hash}


def strip_text_stamp(text: str) -> str:
    return _TEXT_STAMP.sub("", text)


@dataclass
class PackObject:
    kind: str
    id: str
    body: dict[str, Any]
    source: Path
    hash: str = field(init=False)

    def __post_init__(self) -> None:
        self.hash = canonical_hash(self.body)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"


class Kind:
    """How one kind of object is handled: API paths, where the stamp lives, how to list the owner's objects.

    Ownership is exact: an object belongs to an installation when its stamp names
    that installation's owner (`<id_prefix>/<namespace>`), whatever its id looks like.
    """

    name: ClassVar[str]
    order: ClassVar[int]  # install order; uninstall runs in reverse

    def path(self, obj_id: str) -> str:
        raise NotImplementedError

    def get(self, cluster: Cluster, obj_id: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def candidates(self, cluster: Cluster, id_prefix: str) -> dict[str, dict[str, Any]]:
        """Live objects whose id starts with the prefix: {id: live body}."""
        raise NotImplementedError

    def list_ids(self, cluster: Cluster, owner: str, id_prefix: str) -> list[str]:
        """Ids of the live objects stamped as the owner's."""
        return sorted(i for i, live in self.candidates(cluster, id_prefix).items()
                      if (stamp := self.stamp_of(live)) is not None and stamp.owner == owner)

    def stamped(self, body: dict[str, Any], stamp: Stamp) -> dict[str, Any]:
        out = copy.deepcopy(body)
        out.setdefault("_meta", {})[STAMP_KEY] = stamp.meta()
        return out

    def stamp_of(self, live: dict[str, Any]) -> Stamp | None:
        return Stamp.from_meta((live.get("_meta") or {}).get(STAMP_KEY))

    def put(self, cluster: Cluster, obj: PackObject, stamp: Stamp) -> None:
        cluster.request("PUT", self.path(obj.id), body=self.stamped(obj.body, stamp))

    def delete(self, cluster: Cluster, obj_id: str) -> None:
        cluster.request("DELETE", self.path(obj_id), ok_missing=True)


class _Template(Kind):
    """Component and index templates: the same API shape under two names."""

    api: ClassVar[str]  # "_component_template" | "_index_template"
    plural: ClassVar[str]  # key of the list in GET responses
    singular: ClassVar[str]

    def path(self, obj_id: str) -> str:
        return f"/{self.api}/{obj_id}"

    def get(self, cluster: Cluster, obj_id: str) -> dict[str, Any] | None:
        res = cluster.request("GET", self.path(obj_id), ok_missing=True)
        if not res:
            return None
        body: dict[str, Any] = res[self.plural][0][self.singular]
        return body

    def candidates(self, cluster: Cluster, id_prefix: str) -> dict[str, dict[str, Any]]:
        res = cluster.request("GET", f"/{self.api}/{id_prefix}-*", ok_missing=True) or {}
        return {t["name"]: t[self.singular] for t in res.get(self.plural, [])}


class ComponentTemplate(_Template):
    name, order = "component_template", 10
    api, plural, singular = "_component_template", "component_templates", "component_template"


class IndexTemplate(_Template):
    name, order = "index_template", 20
    api, plural, singular = "_index_template", "index_templates", "index_template"

    def delete(self, cluster: Cluster, obj_id: str) -> None:
        delete_index_template(cluster, obj_id)


def delete_index_template(cluster: Cluster, name: str) -> bool:
    """Delete an index template even while a data stream matches it. True if it existed.

    The cluster refuses to delete a template whose patterns match a live data
    stream, whatever its priority; pointing the template at a pattern nothing
    matches first lets it go. The data stream keeps its backing indices and
    takes its next template from whatever else matches it.
    """
    res = cluster.request("GET", f"/_index_template/{name}", ok_missing=True)
    if not res:
        return False
    body = res["index_templates"][0]["index_template"]
    body["index_patterns"] = [f"{name}-detached-never-matches"]
    cluster.request("PUT", f"/_index_template/{name}", body=body)
    cluster.request("DELETE", f"/_index_template/{name}", ok_missing=True)
    return True


class DescriptionStamped(Kind):
    """A kind that takes no _meta: the stamp ends its description. By default the
    API answers GET with {id: body}."""

    def described(self, body: dict[str, Any]) -> dict[str, Any]:
        """The part of a body that holds the description."""
        return body

    def get(self, cluster: Cluster, obj_id: str) -> dict[str, Any] | None:
        res = cluster.request("GET", self.path(obj_id), ok_missing=True)
        if not res or obj_id not in res:
            return None
        live: dict[str, Any] = res[obj_id]
        return live

    def stamped(self, body: dict[str, Any], stamp: Stamp) -> dict[str, Any]:
        out = copy.deepcopy(body)
        part = self.described(out)
        part["description"] = f"{part.get('description', '').strip()} {stamp.text()}".strip()
        return out

    def stamp_of(self, live: dict[str, Any]) -> Stamp | None:
        return Stamp.parse_text(str(self.described(live).get("description", "")))


class IngestPipeline(DescriptionStamped):
    name, order = "ingest_pipeline", 30

    def path(self, obj_id: str) -> str:
        return f"/_ingest/pipeline/{obj_id}"

    def candidates(self, cluster: Cluster, id_prefix: str) -> dict[str, dict[str, Any]]:
        res: dict[str, dict[str, Any]] = cluster.request("GET", f"/_ingest/pipeline/{id_prefix}-*",
                                                         ok_missing=True) or {}
        return res


class StoredScript(Kind):
    """A stored painless script (the pseudonymization, which holds the salt). Scripts take no
    metadata: the stamp is a comment on the last line of the source."""

    name, order = "stored_script", 25

    def path(self, obj_id: str) -> str:
        return f"/_scripts/{obj_id}"

    def get(self, cluster: Cluster, obj_id: str) -> dict[str, Any] | None:
        res = cluster.request("GET", self.path(obj_id), ok_missing=True)
        if not res or not res.get("found"):
            return None
        return {"script": res["script"]}

    def candidates(self, cluster: Cluster, id_prefix: str) -> dict[str, dict[str, Any]]:
        res = cluster.request("GET", "/_cluster/state/metadata",
                              params={"filter_path": "metadata.stored_scripts"}) or {}
        scripts = (res.get("metadata") or {}).get("stored_scripts") or {}
        return {name: {"script": body} for name, body in scripts.items() if name.startswith(f"{id_prefix}-")}

    def stamped(self, body: dict[str, Any], stamp: Stamp) -> dict[str, Any]:
        out = copy.deepcopy(body)
        out["script"]["source"] = f"{out['script']['source'].rstrip()}\n// {stamp.text()}"
        return out

    def stamp_of(self, live: dict[str, Any]) -> Stamp | None:
        return Stamp.parse_text(str((live.get("script") or {}).get("source", "")).rstrip())


class Index(Kind):
    """A plain index the pack owns (reference data, failures, alerts). Its stamp lives in mappings._meta."""

    name, order = "index", 40

    def path(self, obj_id: str) -> str:
        return f"/{obj_id}"

    def get(self, cluster: Cluster, obj_id: str) -> dict[str, Any] | None:
        res = cluster.request("GET", f"/{obj_id}/_mapping", ok_missing=True)
        if not res or obj_id not in res:
            return None
        return {"mappings": res[obj_id]["mappings"]}

    def candidates(self, cluster: Cluster, id_prefix: str) -> dict[str, dict[str, Any]]:
        res = cluster.request("GET", f"/{id_prefix}-*/_mapping", params={"expand_wildcards": "open,closed"},
                              ok_missing=True) or {}
        return {name: {"mappings": body.get("mappings", {})} for name, body in res.items()}

    def stamped(self, body: dict[str, Any], stamp: Stamp) -> dict[str, Any]:
        out = copy.deepcopy(body)
        out.setdefault("mappings", {}).setdefault("_meta", {})[STAMP_KEY] = stamp.meta()
        return out

    def stamp_of(self, live: dict[str, Any]) -> Stamp | None:
        return super().stamp_of(live.get("mappings", live))

    def put(self, cluster: Cluster, obj: PackObject, stamp: Stamp) -> None:
        body = self.stamped(obj.body, stamp)
        if self.get(cluster, obj.id) is None:
            cluster.request("PUT", self.path(obj.id), body=body)
        else:
            # Existing data is kept: mappings change additively (a conflicting
            # change is refused by the cluster and reported with the index name).
            cluster.request("PUT", f"/{obj.id}/_mapping", body=body["mappings"])


def live_fingerprint(live: dict[str, Any]) -> str:
    """Hash of what the cluster holds, to spot hand edits made after install."""
    return canonical_hash(live)


# Fields Alerting adds or rewrites on every write: not part of what the pack owns.
_MONITOR_VOLATILE = ("last_update_time", "enabled_time", "schema_version", "data_sources", "owner", "user",
                     "id", "_monitor_id", "ui_metadata", "associated_workflows")


class Monitor(Kind):
    """An Alerting monitor.

    Alerting chooses monitor ids, returns `_search` hits unwrapped (no `monitor`
    key) and strips ui_metadata from every read unless the caller claims to be
    Dashboards, so neither the id nor ui_metadata can carry the pack's identity.
    The monitor's name does: it starts with the pack's stable object id and ends
    with the stamp, e.g. `pacsguard-default-rule-4a Bulk export ... [pacsguard
    pacsguard/default 0.2.0 #0123456789abcdef]`.
    """

    name, order = "monitor", 60

    def _all(self, cluster: Cluster) -> list[dict[str, Any]]:
        res = cluster.request("POST", "/_plugins/_alerting/monitors/_search",
                              body={"size": 1000, "query": {"match_all": {}}}, ok_missing=True) or {}
        out = []
        for hit in res.get("hits", {}).get("hits", []):
            source = hit.get("_source") or {}
            # Older Alerting versions answered with the stored document ({"monitor": {...}}).
            monitor = source.get("monitor") if isinstance(source.get("monitor"), dict) else source
            if monitor.get("type") == "monitor" and isinstance(monitor.get("name"), str):
                out.append(dict(monitor, _monitor_id=hit["_id"]))
        return out

    @staticmethod
    def object_id(live: dict[str, Any]) -> str:
        return str(live.get("name", "")).split(" ", 1)[0]

    def _find(self, cluster: Cluster, obj_id: str) -> dict[str, Any] | None:
        return next((m for m in self._all(cluster) if self.object_id(m) == obj_id), None)

    def get(self, cluster: Cluster, obj_id: str) -> dict[str, Any] | None:
        found = self._find(cluster, obj_id)
        if found is None:
            return None
        for volatile in _MONITOR_VOLATILE:
            found.pop(volatile, None)
        return found

    def monitor_id(self, cluster: Cluster, obj_id: str) -> str | None:
        """Alerting's own id of the pack's monitor, for the alerts and acknowledge APIs."""
        found = self._find(cluster, obj_id)
        return str(found["_monitor_id"]) if found else None

    def candidates(self, cluster: Cluster, id_prefix: str) -> dict[str, dict[str, Any]]:
        return {self.object_id(m): m for m in self._all(cluster) if self.object_id(m).startswith(f"{id_prefix}-")}

    def stamped(self, body: dict[str, Any], stamp: Stamp) -> dict[str, Any]:
        out = copy.deepcopy(body)
        out["name"] = f"{strip_text_stamp(str(out.get('name', '')))} {stamp.text()}"
        return out

    def stamp_of(self, live: dict[str, Any]) -> Stamp | None:
        return Stamp.parse_text(str(live.get("name", "")))

    def put(self, cluster: Cluster, obj: PackObject, stamp: Stamp) -> None:
        body = self.stamped(obj.body, stamp)
        existing = self._find(cluster, obj.id)
        if existing is None:
            cluster.request("POST", "/_plugins/_alerting/monitors", body=body, params={"refresh": "true"})
        else:
            cluster.request("PUT", f"/_plugins/_alerting/monitors/{path_segment(existing['_monitor_id'])}",
                            body=keep_ids(body, existing), params={"refresh": "true"})

    def delete(self, cluster: Cluster, obj_id: str) -> None:
        existing = self._find(cluster, obj_id)
        if existing is not None:
            cluster.request("DELETE", f"/_plugins/_alerting/monitors/{path_segment(existing['_monitor_id'])}", ok_missing=True,
                            params={"refresh": "true"})


def keep_ids(body: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """The new monitor body with the live monitor's trigger and action ids, matched by name.

    Alerting keys an alert by its trigger id and an action's throttle and acknowledgement by
    the action id: a trigger without its id is a new trigger, and Alerting marks the old
    trigger's alerts DELETED, opens new ones and pages their owners again. Keeping the ids
    makes an upgrade or a settings change (an owner, a channel, a threshold) keep every
    alert, its acknowledgement and its history, and page nobody."""
    out = copy.deepcopy(body)
    live_triggers = {}
    for trig in live.get("triggers") or []:
        (kind, spec), = trig.items()
        live_triggers[(kind, spec.get("name"))] = spec
    for trig in out.get("triggers") or []:
        (kind, spec), = trig.items()
        old = live_triggers.get((kind, spec.get("name")))
        if not old or not old.get("id"):
            continue
        spec["id"] = old["id"]
        old_actions = {a.get("name"): a.get("id") for a in old.get("actions") or [] if a.get("id")}
        for action in spec.get("actions") or []:
            if action.get("name") in old_actions:
                action["id"] = old_actions[action["name"]]
    return out


class NotificationChannel(DescriptionStamped):
    """A Notifications config; config ids are ours to choose, the stamp sits in the description."""

    name, order = "notification_channel", 50

    def path(self, obj_id: str) -> str:
        return f"/_plugins/_notifications/configs/{obj_id}"

    def get(self, cluster: Cluster, obj_id: str) -> dict[str, Any] | None:
        res = cluster.request("GET", self.path(obj_id), ok_missing=True)
        if not res or not res.get("config_list"):
            return None
        item = res["config_list"][0]
        return {"config_id": item["config_id"], "config": item["config"]}

    def candidates(self, cluster: Cluster, id_prefix: str) -> dict[str, dict[str, Any]]:
        res = cluster.request("GET", "/_plugins/_notifications/configs", params={"max_items": 1000},
                              ok_missing=True) or {}
        return {str(c["config_id"]): c for c in res.get("config_list", [])
                if str(c.get("config_id", "")).startswith(f"{id_prefix}-")}

    def described(self, body: dict[str, Any]) -> dict[str, Any]:
        config = body.get("config")
        return config if isinstance(config, dict) else {}

    def put(self, cluster: Cluster, obj: PackObject, stamp: Stamp) -> None:
        body = self.stamped(obj.body, stamp)
        if self.get(cluster, obj.id) is None:
            cluster.request("POST", "/_plugins/_notifications/configs", body=body)
        else:
            cluster.request("PUT", self.path(obj.id), body={"config": body["config"]})


class SecurityRole(DescriptionStamped):
    """A Security plugin role (least privilege for the pack's users); the stamp sits in its description."""

    name, order = "security_role", 5

    def path(self, obj_id: str) -> str:
        return f"/_plugins/_security/api/roles/{obj_id}"

    def candidates(self, cluster: Cluster, id_prefix: str) -> dict[str, dict[str, Any]]:
        res = cluster.request("GET", "/_plugins/_security/api/roles", ok_missing=True) or {}
        return {name: body for name, body in res.items() if name.startswith(f"{id_prefix}-")}


class IsmPolicy(DescriptionStamped):
    """An Index State Management policy (rollover and retention of the event data stream); the
    stamp ends policy.description. Its ism_template attaches it to the backing indices the data
    stream creates (ISM matches a backing index by its data stream's name)."""

    name, order = "ism_policy", 15

    def path(self, obj_id: str) -> str:
        return f"/_plugins/_ism/policies/{obj_id}"

    def described(self, body: dict[str, Any]) -> dict[str, Any]:
        policy = body.get("policy")
        return policy if isinstance(policy, dict) else {}

    def get(self, cluster: Cluster, obj_id: str) -> dict[str, Any] | None:
        res = cluster.request("GET", self.path(obj_id), ok_missing=True)
        return {"policy": res["policy"]} if res and "policy" in res else None

    def candidates(self, cluster: Cluster, id_prefix: str) -> dict[str, dict[str, Any]]:
        res = cluster.request("GET", "/_plugins/_ism/policies", params={"queryString": f"{id_prefix}-*", "size": 1000},
                              ok_missing=True) or {}
        return {str(p["_id"]): {"policy": p["policy"]} for p in res.get("policies", [])}

    def put(self, cluster: Cluster, obj: PackObject, stamp: Stamp) -> None:
        """An update names the version it replaces (the API refuses a blind overwrite)."""
        live = cluster.request("GET", self.path(obj.id), ok_missing=True)
        params = {"if_seq_no": live["_seq_no"], "if_primary_term": live["_primary_term"]} if live else None
        cluster.request("PUT", self.path(obj.id), body=self.stamped(obj.body, stamp), params=params)


KINDS: dict[str, Kind] = {k.name: k for k in (SecurityRole(), ComponentTemplate(), IsmPolicy(), IndexTemplate(),
                                               StoredScript(), IngestPipeline(), Index(), NotificationChannel(),
                                               Monitor())}
# Which plugin each kind needs: objects of these kinds are only planned where it runs.
KIND_PLUGINS = {"monitor": "opensearch-alerting", "notification_channel": "opensearch-notifications",
                "security_role": "opensearch-security", "ism_policy": "opensearch-index-management"}
# Kinds that only make sense where their plugin runs: a cluster without the
# Security plugin has no roles to apply, nor one without Index Management a
# lifecycle policy, which is not a failure of the install.
# (Monitors and channels are only desired for rules whose engine is Alerting:
# services/install.py decides, from the engine setting and the cluster's plugins.)
OPTIONAL_KINDS = {SecurityRole.name, IsmPolicy.name}
# Kinds that read the event data stream: written once it exists (Alerting checks
# a monitor's indices when it is created).
AFTER_DATA_STREAM = {Monitor.name, NotificationChannel.name}


def availability(kind: str, plugins: set[str]) -> str:
    """'usable', or why not: 'skipped' (an optional plugin the cluster does not run) or 'blocked'."""
    plugin = KIND_PLUGINS.get(kind)
    if plugin is None or plugin in plugins:
        return "usable"
    return "skipped" if kind in OPTIONAL_KINDS else "blocked"
