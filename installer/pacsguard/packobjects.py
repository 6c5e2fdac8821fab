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
from pacsguard.core.render import canonical_hash

STAMP_KEY = "pacsguard"
_DESC_STAMP = re.compile(r"\s*\[pacsguard (?P<version>\S+) #(?P<hash>[0-9a-f]{16})\]$")


@dataclass(frozen=True)
class Stamp:
    version: str
    hash: str


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
    """How one kind of object is handled. Subclasses set name/order and the API paths."""

    name: ClassVar[str]
    order: ClassVar[int]  # install order; uninstall runs in reverse

    def path(self, obj_id: str) -> str:
        raise NotImplementedError

    def get(self, cluster: Cluster, obj_id: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def list_ids(self, cluster: Cluster, prefix: str) -> list[str]:
        raise NotImplementedError

    def stamped(self, body: dict[str, Any], version: str, content_hash: str) -> dict[str, Any]:
        out = copy.deepcopy(body)
        out.setdefault("_meta", {})[STAMP_KEY] = {"version": version, "hash": content_hash}
        return out

    def stamp_of(self, live: dict[str, Any]) -> Stamp | None:
        meta = (live.get("_meta") or {}).get(STAMP_KEY)
        if isinstance(meta, dict) and "hash" in meta:
            return Stamp(str(meta.get("version")), str(meta["hash"]))
        return None

    def put(self, cluster: Cluster, obj: PackObject, version: str) -> None:
        cluster.request("PUT", self.path(obj.id), body=self.stamped(obj.body, version, obj.hash))

    def delete(self, cluster: Cluster, obj_id: str) -> None:
        cluster.request("DELETE", self.path(obj_id), ok_missing=True)


class ComponentTemplate(Kind):
    name, order = "component_template", 10

    def path(self, obj_id: str) -> str:
        return f"/_component_template/{obj_id}"

    def get(self, cluster: Cluster, obj_id: str) -> dict[str, Any] | None:
        res = cluster.request("GET", self.path(obj_id), ok_missing=True)
        if not res:
            return None
        body: dict[str, Any] = res["component_templates"][0]["component_template"]
        return body

    def list_ids(self, cluster: Cluster, prefix: str) -> list[str]:
        res = cluster.request("GET", f"/_component_template/{prefix}-*", ok_missing=True) or {}
        return [t["name"] for t in res.get("component_templates", []) if self.stamp_of(t["component_template"])]


class IndexTemplate(Kind):
    name, order = "index_template", 20

    def path(self, obj_id: str) -> str:
        return f"/_index_template/{obj_id}"

    def get(self, cluster: Cluster, obj_id: str) -> dict[str, Any] | None:
        res = cluster.request("GET", self.path(obj_id), ok_missing=True)
        if not res:
            return None
        body: dict[str, Any] = res["index_templates"][0]["index_template"]
        return body

    def list_ids(self, cluster: Cluster, prefix: str) -> list[str]:
        res = cluster.request("GET", f"/_index_template/{prefix}-*", ok_missing=True) or {}
        return [t["name"] for t in res.get("index_templates", []) if self.stamp_of(t["index_template"])]

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
    """A kind that takes no _meta: the stamp ends its description as
    `[pacsguard <version> #<hash>]`. By default the API answers GET with {id: body}."""

    def described(self, body: dict[str, Any]) -> dict[str, Any]:
        """The part of a body that holds the description."""
        return body

    def get(self, cluster: Cluster, obj_id: str) -> dict[str, Any] | None:
        res = cluster.request("GET", self.path(obj_id), ok_missing=True)
        if not res or obj_id not in res:
            return None
        live: dict[str, Any] = res[obj_id]
        return live

    def stamped(self, body: dict[str, Any], version: str, content_hash: str) -> dict[str, Any]:
        out = copy.deepcopy(body)
        part = self.described(out)
        part["description"] = f"{part.get('description', '').strip()} [pacsguard {version} #{content_hash}]".strip()
        return out

    def stamp_of(self, live: dict[str, Any]) -> Stamp | None:
        match = _DESC_STAMP.search(str(self.described(live).get("description", "")))
        return Stamp(match["version"], match["hash"]) if match else None


class IngestPipeline(DescriptionStamped):
    name, order = "ingest_pipeline", 30

    def path(self, obj_id: str) -> str:
        return f"/_ingest/pipeline/{obj_id}"

    def list_ids(self, cluster: Cluster, prefix: str) -> list[str]:
        res = cluster.request("GET", f"/_ingest/pipeline/{prefix}-*", ok_missing=True) or {}
        return [name for name, body in res.items() if self.stamp_of(body)]


class Index(Kind):
    """A plain index the pack owns (reference data, failures). Its stamp lives in mappings._meta."""

    name, order = "index", 40

    def path(self, obj_id: str) -> str:
        return f"/{obj_id}"

    def get(self, cluster: Cluster, obj_id: str) -> dict[str, Any] | None:
        res = cluster.request("GET", f"/{obj_id}/_mapping", ok_missing=True)
        if not res or obj_id not in res:
            return None
        return {"mappings": res[obj_id]["mappings"]}

    def list_ids(self, cluster: Cluster, prefix: str) -> list[str]:
        res = cluster.request("GET", f"/{prefix}-*/_mapping", params={"expand_wildcards": "open,closed"},
                              ok_missing=True) or {}
        return [name for name, body in res.items() if self.stamp_of(body.get("mappings", {}))]

    def stamped(self, body: dict[str, Any], version: str, content_hash: str) -> dict[str, Any]:
        out = copy.deepcopy(body)
        out.setdefault("mappings", {}).setdefault("_meta", {})[STAMP_KEY] = {"version": version, "hash": content_hash}
        return out

    def stamp_of(self, live: dict[str, Any]) -> Stamp | None:
        return super().stamp_of(live.get("mappings", live))

    def put(self, cluster: Cluster, obj: PackObject, version: str) -> None:
        body = self.stamped(obj.body, version, obj.hash)
        if self.get(cluster, obj.id) is None:
            cluster.request("PUT", self.path(obj.id), body=body)
        else:
            # Existing data is kept: mappings change additively (a conflicting
            # change is refused by the cluster and reported with the index name).
            cluster.request("PUT", f"/{obj.id}/_mapping", body=body["mappings"])


def live_fingerprint(kind: Kind, live: dict[str, Any]) -> str:
    """Hash of what the cluster holds, to spot hand edits made after install."""
    return canonical_hash(live)


class Monitor(Kind):
    """An Alerting monitor. Alerting picks monitor ids itself, so the pack's
    stable id and stamp live in the monitor's ui_metadata."""

    name, order = "monitor", 60

    def _all(self, cluster: Cluster) -> list[dict[str, Any]]:
        # The search runs over Alerting's config index, where a monitor is
        # stored wrapped as {"monitor": {...}} next to workflows and others.
        res = cluster.request("POST", "/_plugins/_alerting/monitors/_search",
                              body={"size": 1000, "query": {"exists": {"field": "monitor.type"}}},
                              ok_missing=True) or {}
        hits = res.get("hits", {}).get("hits", [])
        return [dict(h["_source"]["monitor"], _monitor_id=h["_id"]) for h in hits
                if isinstance((h.get("_source") or {}).get("monitor"), dict)]

    def _find(self, cluster: Cluster, obj_id: str) -> dict[str, Any] | None:
        for monitor in self._all(cluster):
            if ((monitor.get("ui_metadata") or {}).get(STAMP_KEY) or {}).get("id") == obj_id:
                return monitor
        return None

    def get(self, cluster: Cluster, obj_id: str) -> dict[str, Any] | None:
        found = self._find(cluster, obj_id)
        if found is None:
            return None
        found.pop("_monitor_id", None)
        for volatile in ("last_update_time", "enabled_time", "schema_version", "data_sources", "owner"):
            found.pop(volatile, None)
        return found

    def list_ids(self, cluster: Cluster, prefix: str) -> list[str]:
        ids = []
        for monitor in self._all(cluster):
            stamp = (monitor.get("ui_metadata") or {}).get(STAMP_KEY) or {}
            if str(stamp.get("id", "")).startswith(f"{prefix}-") and "hash" in stamp:
                ids.append(str(stamp["id"]))
        return ids

    def stamped(self, body: dict[str, Any], version: str, content_hash: str) -> dict[str, Any]:
        out = copy.deepcopy(body)
        meta = out.setdefault("ui_metadata", {}).setdefault(STAMP_KEY, {})
        meta.update({"version": version, "hash": content_hash})
        return out

    def stamp_of(self, live: dict[str, Any]) -> Stamp | None:
        meta = (live.get("ui_metadata") or {}).get(STAMP_KEY)
        if isinstance(meta, dict) and "hash" in meta:
            return Stamp(str(meta.get("version")), str(meta["hash"]))
        return None

    def put(self, cluster: Cluster, obj: PackObject, version: str) -> None:
        body = self.stamped(obj.body, version, obj.hash)
        body["ui_metadata"][STAMP_KEY]["id"] = obj.id
        existing = self._find(cluster, obj.id)
        if existing is None:
            cluster.request("POST", "/_plugins/_alerting/monitors", body=body)
        else:
            cluster.request("PUT", f"/_plugins/_alerting/monitors/{existing['_monitor_id']}", body=body)

    def delete(self, cluster: Cluster, obj_id: str) -> None:
        existing = self._find(cluster, obj_id)
        if existing is not None:
            cluster.request("DELETE", f"/_plugins/_alerting/monitors/{existing['_monitor_id']}", ok_missing=True)


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

    def list_ids(self, cluster: Cluster, prefix: str) -> list[str]:
        res = cluster.request("GET", "/_plugins/_notifications/configs", params={"max_items": 1000},
                              ok_missing=True) or {}
        return [c["config_id"] for c in res.get("config_list", [])
                if str(c.get("config_id", "")).startswith(f"{prefix}-") and self.stamp_of(c)]

    def described(self, body: dict[str, Any]) -> dict[str, Any]:
        config = body.get("config")
        return config if isinstance(config, dict) else {}

    def put(self, cluster: Cluster, obj: PackObject, version: str) -> None:
        body = self.stamped(obj.body, version, obj.hash)
        if self.get(cluster, obj.id) is None:
            cluster.request("POST", "/_plugins/_notifications/configs", body=body)
        else:
            cluster.request("PUT", self.path(obj.id), body={"config": body["config"]})


class SecurityRole(DescriptionStamped):
    """A Security plugin role (least privilege for the pack's users); the stamp sits in its description."""

    name, order = "security_role", 5

    def path(self, obj_id: str) -> str:
        return f"/_plugins/_security/api/roles/{obj_id}"

    def list_ids(self, cluster: Cluster, prefix: str) -> list[str]:
        res = cluster.request("GET", "/_plugins/_security/api/roles", ok_missing=True) or {}
        return [name for name, body in res.items() if name.startswith(f"{prefix}-") and self.stamp_of(body)]


KINDS: dict[str, Kind] = {k.name: k for k in (SecurityRole(), ComponentTemplate(), IndexTemplate(), IngestPipeline(),
                                               Index(), NotificationChannel(), Monitor())}
# Which plugin each kind needs: objects of these kinds are only planned where it runs.
KIND_PLUGINS = {"monitor": "opensearch-alerting", "notification_channel": "opensearch-notifications",
                "security_role": "opensearch-security"}
# Kinds that only make sense where their plugin runs: a cluster without the
# Security plugin has no roles to apply, which is not a failure of the install.
OPTIONAL_KINDS = {SecurityRole.name}
