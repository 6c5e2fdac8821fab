"""Plan, install, upgrade, status and uninstall of the pack in a cluster.

The plan compares what the content renders to (desired) with what the cluster
holds (live) by content hash, so a second install writes nothing, an
interrupted install converges, and an object that left the content is removed
on the next install. A small state index remembers a fingerprint of each
object as written, which is how `status` tells a hand edit (drift) from a
content change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacsguard import __version__
from pacsguard.core.connection import REQUIRED_MODULES, REQUIRED_PLUGINS, ApiError, Cluster
from pacsguard.core.content import content_path, content_root
from pacsguard.core.errors import MissingPlugin, PacsguardError
from pacsguard.core.escaping import path_segment
from pacsguard.core.models import Progress, quiet
from pacsguard.core.render import ContentError, render_context, render_yaml
from pacsguard.core.secrets import resolve_envelope_key, resolve_salt
from pacsguard.core.settings import Settings
from pacsguard.devnode import lines
from pacsguard.packobjects import (
    AFTER_DATA_STREAM,
    KIND_PLUGINS,
    KINDS,
    PackObject,
    Stamp,
    availability,
    delete_index_template,
    live_fingerprint,
)
from pacsguard.rules import exceptions
from pacsguard.rules.catalog import all_rules
from pacsguard.rules.compiler import channel_objects, monitor_objects, notifications_gaps, rule_channels
from pacsguard.rules.model import Rule

# Where each kind's content lives (relative to the content root).
CONTENT_GLOBS = (("pack/index", "*.yaml"), ("pack/security", "*.yaml"), ("pack/scripts", "*.yaml"),
                 ("pipelines", "*/pipeline.yaml"))


@dataclass
class Change:
    # create | update | delete | unchanged | blocked (the cluster lacks the plugin)
    # | skipped (an optional plugin the cluster does not run, e.g. no Security: no roles)
    action: str
    kind: str
    id: str
    reason: str = ""
    obj: PackObject | None = None


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.action not in ("unchanged", "blocked", "skipped")]

    @property
    def blocked(self) -> list[Change]:
        return [c for c in self.changes if c.action == "blocked"]

    def summary(self) -> dict[str, int]:
        counts = {"create": 0, "update": 0, "delete": 0, "unchanged": 0, "blocked": 0, "skipped": 0}
        for change in self.changes:
            counts[change.action] += 1
        return counts


def load_objects(settings: Settings, salt: str | None = None,
                 capabilities: Iterable[str] = (), envelope_key: str | None = None) -> list[PackObject]:
    """Render every content file into a PackObject. Errors name the file (and line)."""
    context = render_context(settings, salt, capabilities, envelope_key)
    objects: list[PackObject] = []
    seen: dict[str, Path] = {}
    for folder, pattern in CONTENT_GLOBS:
        for path in sorted(content_path(folder).glob(pattern)):
            doc = render_yaml(path, context)
            if not isinstance(doc, dict) or not {"kind", "id", "body"} <= doc.keys():
                raise ContentError(f"{path}: a content file needs the keys kind, id and body")
            if doc["kind"] not in KINDS:
                raise ContentError(f"{path}: unknown kind {doc['kind']!r}; one of {', '.join(KINDS)}")
            if not str(doc["id"]).startswith(f"{settings.id_prefix}-"):
                raise ContentError(f"{path}: id {doc['id']!r} must start with '{settings.id_prefix}-'")
            if doc["kind"] in AFTER_DATA_STREAM:
                raise ContentError(f"{path}: {doc['kind']} objects come from rules and settings, not content files")
            obj = PackObject(doc["kind"], str(doc["id"]), doc["body"], path)
            if obj.key in seen:
                raise ContentError(f"{path}: {obj.key} is also defined in {seen[obj.key]}")
            seen[obj.key] = path
            objects.append(obj)
    objects.sort(key=lambda o: KINDS[o.kind].order)
    return objects


def _channel_gaps(settings: Settings, rule: Rule) -> dict[str, list[str]]:
    """The rule's channels that Notifications cannot serve as the pack's engine does, with what is missing."""
    by_name = {c.name: c for c in settings.notifications.channels}
    return {name: gaps for name in rule_channels(rule, settings)
            if name in by_name and (gaps := notifications_gaps(by_name[name]))}


def alerting_signals(settings: Settings, plugins: set[str]) -> set[str]:
    """The signals whose rules run on OpenSearch Alerting in this cluster (the others run on `watch`).

    In auto mode a rule routed to a channel that Notifications cannot serve faithfully (a signed
    webhook) runs on the pack's engine, which can: its alerts are never delivered unsigned."""
    present = "opensearch-alerting" in plugins
    out = set()
    for rule in all_rules(settings):
        if settings.engine.engine_for(rule.signal, present) != "alerting":
            continue
        if settings.engine.rules.get(rule.signal, settings.engine.mode) == "auto" and _channel_gaps(settings, rule):
            continue
        out.add(rule.signal)
    return out


def delivery_warnings(settings: Settings, plugins: set[str]) -> list[str]:
    """What a person must know about delivery on this cluster, said by plan, install and status."""
    if "opensearch-alerting" not in plugins:
        return []
    on_alerting = alerting_signals(settings, plugins)
    warnings: list[str] = []
    moved: dict[str, tuple[list[str], list[str]]] = {}  # channel -> (what it asks for, signals moved)
    for rule in all_rules(settings):
        for name, missing in _channel_gaps(settings, rule).items():
            if rule.signal in on_alerting:
                warnings.append(f"rule {rule.signal} runs on Alerting (engine setting) but channel {name} asks for "
                                f"{'; '.join(missing)}, which Notifications cannot do: its deliveries of this rule "
                                "arrive without it (set the rule's engine to auto or pacsguard to keep it)")
            else:
                moved.setdefault(name, (missing, []))[1].append(rule.signal)
    for name, (missing, signals) in moved.items():
        warnings.append(f"rules {', '.join(signals)} run on the pacsguard engine (`pacsguard watch`), not on "
                        f"Alerting: channel {name} asks for {'; '.join(missing)}, which Notifications cannot do")
    if on_alerting and not settings.notifications.channels:
        warnings.append(f"no channel (notifications.channels): the {len(on_alerting)} monitor(s) on Alerting have no "
                        "actions and page nobody; their alerts are seen only in `pacsguard alerts list` and the console")
    return warnings


def desired_objects(cluster: Cluster, settings: Settings) -> list[PackObject]:
    plugins, modules = cluster.installed_components()
    objects = load_objects(settings, resolve_salt(settings), plugins | modules, resolve_envelope_key(settings))
    objects.append(exceptions.index_object(settings))
    signals = alerting_signals(settings, plugins)
    if signals:
        objects += channel_objects(settings) + monitor_objects(settings, signals=signals)
    objects.sort(key=lambda o: KINDS[o.kind].order)
    return objects


def usable_kinds(cluster: Cluster) -> set[str]:
    """Kinds whose plugin the cluster runs; the others cannot be read or written there."""
    plugins, _ = cluster.installed_components()
    return {name for name in KINDS if availability(name, plugins) == "usable"}


def owned_ids(cluster: Cluster, settings: Settings, kind_name: str) -> list[str]:
    """Ids of the live objects of a kind that this installation (id_prefix, namespace) owns."""
    return KINDS[kind_name].list_ids(cluster, settings.owner, settings.id_prefix)


def _unavailable(cluster: Cluster, obj: PackObject) -> tuple[str, str] | None:
    """(state, reason) when the cluster cannot hold this object, else None."""
    plugins, _ = cluster.installed_components()
    state = availability(obj.kind, plugins)
    if state == "usable":
        return None
    if state == "skipped":
        return state, f"cluster runs without {KIND_PLUGINS[obj.kind]}: does not apply"
    return state, f"cluster lacks {KIND_PLUGINS[obj.kind]}"


def orphans(cluster: Cluster, settings: Settings, wanted: set[str]) -> list[tuple[str, str]]:
    """(kind, id) of owned objects that left the content (data indices excepted), in uninstall order."""
    usable = usable_kinds(cluster)
    return [(kind.name, obj_id) for kind in sorted(KINDS.values(), key=lambda k: -k.order) if kind.name in usable
            for obj_id in owned_ids(cluster, settings, kind.name)
            if f"{kind.name}:{obj_id}" not in wanted and not _is_data(settings, kind.name, obj_id)]


def compare(obj: PackObject, exists: bool, stamp: Stamp | None, owner: str, missing: str) -> Change:
    """What install does with one object, from what is live: create, update or leave it."""
    if not exists:
        return Change("create", obj.kind, obj.id, missing, obj)
    if stamp is None or stamp.owner != owner:
        why = "exists without pacsguard stamp" if stamp is None else f"stamped by another installation ({stamp.owner})"
        return Change("update", obj.kind, obj.id, why, obj)
    if stamp.hash != obj.hash:
        return Change("update", obj.kind, obj.id, f"content {stamp.hash} -> {obj.hash}", obj)
    return Change("unchanged", obj.kind, obj.id, "", obj)


def make_plan(cluster: Cluster, settings: Settings, objects: list[PackObject]) -> Plan:
    plan = Plan()
    for obj in objects:
        kind = KINDS[obj.kind]
        unavailable = _unavailable(cluster, obj)
        if unavailable:
            plan.changes.append(Change(unavailable[0], obj.kind, obj.id, unavailable[1], obj))
            continue
        live = kind.get(cluster, obj.id)
        plan.changes.append(compare(obj, live is not None, kind.stamp_of(live) if live else None, settings.owner,
                                    "not in cluster"))
    wanted = {o.key for o in objects}
    for kind_name, obj_id in orphans(cluster, settings, wanted):
        plan.changes.append(Change("delete", kind_name, obj_id, "no longer in the pack"))
    plan.warnings = delivery_warnings(settings, cluster.installed_components()[0])
    return plan


# Indices that hold records of what happened (and what people decided): data, kept by an
# uninstall like the events, removed only by --purge. (settings index key, what it holds)
DATA_INDICES = (("failures", "failed events"), ("alerts", "alerts"), ("actions", "response actions"),
                ("exceptions", "exceptions and snoozes"))


def _is_data(settings: Settings, kind: str, obj_id: str) -> bool:
    return kind == "index" and obj_id in {settings.index(key) for key, _ in DATA_INDICES}


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(content_root()))
    except ValueError:
        return str(path)


# ------------------------------------------------------------------ state


def _state_index(settings: Settings) -> str:
    return settings.index("state")


def _record(cluster: Cluster, settings: Settings, change: Change, fingerprint: str | None) -> None:
    doc_id = change.kind + ":" + change.id
    index = _state_index(settings)
    if fingerprint is None:
        cluster.request("DELETE", f"/{index}/_doc/{path_segment(doc_id)}", ok_missing=True)
        return
    cluster.request("PUT", f"/{index}/_doc/{path_segment(doc_id)}", body={
        "kind": change.kind, "id": change.id, "hash": change.obj.hash if change.obj else None,
        "fingerprint": fingerprint, "pack_version": __version__,
        "written_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    })


def _ensure_state_index(cluster: Cluster, settings: Settings) -> None:
    index = _state_index(settings)
    if not cluster.exists(f"/{index}"):
        cluster.request("PUT", f"/{index}", body={
            "settings": {"index": {"number_of_shards": 1, "auto_expand_replicas": "0-1", "hidden": True}},
            "mappings": {"dynamic": False, "properties": {
                "kind": {"type": "keyword"}, "id": {"type": "keyword"}, "hash": {"type": "keyword"},
                "fingerprint": {"type": "keyword"}, "pack_version": {"type": "keyword"},
                "written_at": {"type": "date"}}},
        })


def _read_state(cluster: Cluster, settings: Settings) -> dict[str, dict[str, Any]]:
    res = cluster.request("GET", f"/{_state_index(settings)}/_search",
                          body={"size": 1000, "query": {"match_all": {}}}, ok_missing=True)
    if not res:
        return {}
    return {h["_id"]: h["_source"] for h in res["hits"]["hits"]}


# --------------------------------------------------------------- install


@dataclass
class InstallResult:
    plan: Plan
    applied: list[Change]
    data_streams: list[str]


def install(cluster: Cluster, settings: Settings, progress: Progress = quiet,
            dry_run: bool = False, allow_missing_plugins: bool = False) -> InstallResult:
    """Apply the plan. Objects whose plugin the cluster lacks (monitors without
    Alerting) are left out; unless allow_missing_plugins, that ends in
    MissingPlugin once everything else is installed."""
    cluster.require_plugins(REQUIRED_MODULES)
    objects = desired_objects(cluster, settings)
    plan = make_plan(cluster, settings, objects)
    if dry_run:
        return InstallResult(plan, [], [])
    applied: list[Change] = []
    # An orphaned index template goes first: a new one with overlapping
    # patterns and the same priority is refused while it exists. Other orphans
    # go last, once nothing new refers to them. Monitors and channels come once
    # the data stream exists: Alerting checks a monitor's indices on creation.
    pending = sorted(plan.pending, key=lambda c: 0 if (c.action, c.kind) == ("delete", "index_template") else 1)
    first = [c for c in pending if c.action == "delete" and c.kind == "index_template"]
    writes = [c for c in pending if c.action != "delete"]
    before = [c for c in writes if c.kind not in AFTER_DATA_STREAM]
    after = [c for c in writes if c.kind in AFTER_DATA_STREAM]
    deletes = [c for c in pending if c.action == "delete" and c not in first]
    if pending:
        _ensure_state_index(cluster, settings)
    total = len(pending)
    stamp = Stamp(settings.owner, __version__, "")
    counter = iter(range(1, total + 1))

    def apply(change: Change) -> None:
        progress(f"[{next(counter)}/{total}] {change.action} {change.kind} {change.id}")
        kind = KINDS[change.kind]
        if change.action == "delete":
            kind.delete(cluster, change.id)
            _record(cluster, settings, change, None)
        else:
            assert change.obj is not None
            try:
                kind.put(cluster, change.obj, Stamp(stamp.owner, stamp.version, change.obj.hash))
            except ApiError as exc:
                rel = _relative(change.obj.source)
                raise PacsguardError(f"{rel}: {change.kind} {change.id} was refused: {exc}") from None
            live = kind.get(cluster, change.id)
            _record(cluster, settings, change, live_fingerprint(live or {}))
        applied.append(change)

    for change in first + before:
        apply(change)
    streams = ensure_data_stream(cluster, settings, progress)
    for change in after + deletes:
        apply(change)
    if pending:
        cluster.request("POST", f"/{_state_index(settings)}/_refresh")
    if plan.blocked and not allow_missing_plugins:
        plugins = sorted({KIND_PLUGINS[c.kind] for c in plan.blocked})
        raise MissingPlugin(
            f"installed the rest, but {len(plan.blocked)} object(s) need {', '.join(plugins)} which "
            f"{cluster.url} lacks ({', '.join(sorted({c.kind for c in plan.blocked}))}); install the plugin, "
            "set engine.mode to auto or pacsguard to run the rules with `pacsguard watch`, "
            "or pass --skip-detections to install without them"
        )
    return InstallResult(plan, applied, streams)


def ensure_data_stream(cluster: Cluster, settings: Settings, progress: Progress) -> list[str]:
    """Create the namespace's data stream, and route its existing write index through the router.

    An uninstall without --purge detaches the backing indices from the pack's
    pipeline (so the kept data stays writable); install re-attaches them.
    Returns what it changed.
    """
    name = settings.index("events_data_stream")
    router = f"{settings.scope}-router"
    changed: list[str] = []
    if _drop_retained_template(cluster, settings):
        changed.append(retained_template_name(settings))
    res = cluster.request("GET", f"/_data_stream/{name}", ok_missing=True)
    if not res or not res.get("data_streams"):
        progress(f"create data stream {name}")
        cluster.request("PUT", f"/_data_stream/{name}")
        return [name]
    for backing in res["data_streams"][0]["indices"]:
        index = backing["index_name"]
        current = cluster.request("GET", f"/{index}/_settings/index.default_pipeline")
        pipeline = current.get(index, {}).get("settings", {}).get("index", {}).get("default_pipeline")
        if pipeline != router:
            cluster.request("PUT", f"/{index}/_settings", body={"index": {"default_pipeline": router}})
            changed.append(index)
    return changed


# ---------------------------------------------------------------- status


@dataclass
class ObjectStatus:
    kind: str
    id: str
    state: str  # ok | missing | outdated | drifted | unmanaged | orphan
    detail: str = ""


@dataclass
class Status:
    url: str
    cluster_version: str
    installed_version: str | None
    objects: list[ObjectStatus]
    missing_plugins: dict[str, str]
    data_streams: dict[str, int]
    warnings: list[str] = field(default_factory=list)

    @property
    def cluster_support(self) -> str:
        """Whether the pack supports the cluster's OpenSearch version (its lines: pack/local-node.yaml)."""
        return lines.support(self.cluster_version)

    @property
    def cluster_supported(self) -> bool:
        return lines.line_of(self.cluster_version) is not None

    @property
    def healthy(self) -> bool:
        return not self.missing_plugins and all(o.state in ("ok", "skipped") for o in self.objects)


def status(cluster: Cluster, settings: Settings) -> Status:
    info = cluster.info()
    plugins, modules = cluster.installed_components()
    # Alerting/Notifications are needed only where a rule is set to run on them;
    # in auto mode a cluster without them runs the rules on the pacsguard engine.
    explicit = {settings.engine.mode, *settings.engine.rules.values()}
    needed = {**(REQUIRED_PLUGINS if "alerting" in explicit else {}), **REQUIRED_MODULES}
    missing = {n: why for n, why in needed.items() if n not in plugins | modules}
    objects = desired_objects(cluster, settings)
    state = _read_state(cluster, settings)
    rows: list[ObjectStatus] = []
    versions: set[str] = set()
    for obj in objects:
        kind = KINDS[obj.kind]
        unavailable = _unavailable(cluster, obj)
        if unavailable:
            rows.append(ObjectStatus(obj.kind, obj.id, unavailable[0], unavailable[1]))
            continue
        live = kind.get(cluster, obj.id)
        if live is None:
            rows.append(ObjectStatus(obj.kind, obj.id, "missing", "not installed"))
            continue
        stamp = kind.stamp_of(live)
        recorded = state.get(obj.key)
        if stamp is None or stamp.owner != settings.owner:
            rows.append(ObjectStatus(obj.kind, obj.id, "unmanaged", "exists without this installation's stamp"))
            continue
        versions.add(stamp.version)
        if recorded and recorded.get("fingerprint") != live_fingerprint(live):
            rows.append(ObjectStatus(obj.kind, obj.id, "drifted", "changed in the cluster by hand since install"))
        elif stamp.hash != obj.hash:
            rows.append(ObjectStatus(obj.kind, obj.id, "outdated", f"installed {stamp.hash}, pack has {obj.hash}"))
        else:
            rows.append(ObjectStatus(obj.kind, obj.id, "ok"))
    for kind_name, obj_id in orphans(cluster, settings, {o.key for o in objects}):
        rows.append(ObjectStatus(kind_name, obj_id, "orphan", "pack object no longer in the content"))
    streams = cluster.request("GET", f"/_data_stream/{settings.index('events_data_stream')}", ok_missing=True)
    counts: dict[str, int] = {}
    for ds in (streams or {}).get("data_streams", []):
        cnt = cluster.request("GET", f"/{ds['name']}/_count")
        counts[ds["name"]] = int(cnt["count"])
    installed = ", ".join(sorted(versions)) if versions else None
    return Status(cluster.url, info["version"]["number"], installed, rows, missing, counts,
                  delivery_warnings(settings, plugins))


# -------------------------------------------------------------- uninstall


@dataclass
class UninstallResult:
    removed: list[tuple[str, str]]
    kept: list[str]
    purged: list[str]


RETAINED_TEMPLATE_SUFFIX = "retained"
RETAINED_PRIORITY = 100  # below the pack template, so a reinstall takes over at once


def uninstall(cluster: Cluster, settings: Settings, purge: bool = False,
              progress: Progress = quiet) -> UninstallResult:
    """Remove every object carrying the pack's stamp. Event data stays unless purge."""
    removed: list[tuple[str, str]] = []
    kept: list[str] = []
    purged: list[str] = []
    stream = settings.index("events_data_stream")
    has_stream = bool((cluster.request("GET", f"/_data_stream/{stream}", ok_missing=True) or {}).get("data_streams"))
    if purge:
        for name in (stream,):
            if has_stream:
                progress(f"purge data stream {name}")
                cluster.request("DELETE", f"/_data_stream/{name}", ok_missing=True)
                purged.append(name)
        for index in (settings.index(key) for key, _ in DATA_INDICES):
            if cluster.exists(f"/{index}"):
                progress(f"purge index {index}")
                cluster.request("DELETE", f"/{index}", ok_missing=True)
                purged.append(index)
        _drop_retained_template(cluster, settings)
    else:
        if has_stream:
            _retain_event_data(cluster, settings, stream)
            kept.append(stream)
        for index, what in ((settings.index(key), what) for key, what in DATA_INDICES):
            if cluster.exists(f"/{index}"):
                # Kept as data, no longer a pack object: its stamp goes (_meta is replaced whole).
                cluster.request("PUT", f"/{index}/_mapping", body={
                    "_meta": {"description": f"pacsguard {what}, kept after uninstall"}})
                kept.append(index)
    for kind_name, obj_id in owned_everywhere(cluster, settings):
        progress(f"delete {kind_name} {obj_id}")
        KINDS[kind_name].delete(cluster, obj_id)
        removed.append((kind_name, obj_id))
    cluster.request("DELETE", f"/{_state_index(settings)}", ok_missing=True)
    return UninstallResult(removed, kept, purged)


def owned_everywhere(cluster: Cluster, settings: Settings) -> list[tuple[str, str]]:
    """Every object of this installation (data indices excepted), in uninstall order: those the
    list APIs show, and those install recorded in the state index, read by id. A list API can lag a
    write by a refresh (Notifications' config list does, seen on 2.19.6): a channel created seconds
    before an uninstall must go too."""
    found = orphans(cluster, settings, wanted=set())
    usable = usable_kinds(cluster)
    for record in _read_state(cluster, settings).values():
        kind_name, obj_id = str(record.get("kind")), str(record.get("id"))
        if (kind_name, obj_id) in found or kind_name not in usable or _is_data(settings, kind_name, obj_id):
            continue
        live = KINDS[kind_name].get(cluster, obj_id)
        stamp = KINDS[kind_name].stamp_of(live) if live else None
        if stamp is not None and stamp.owner == settings.owner:
            found.append((kind_name, obj_id))
    return sorted(found, key=lambda item: -KINDS[item[0]].order)


def retained_template_name(settings: Settings) -> str:
    return f"{settings.index('events_data_stream')}-{RETAINED_TEMPLATE_SUFFIX}"


def _retain_event_data(cluster: Cluster, settings: Settings, stream: str) -> None:
    """Keep the data stream valid and writable once the pack's template and pipelines are gone.

    The cluster refuses to delete the last template a data stream matches, so
    a plain template (no pipeline, no pacsguard stamp, not owned by the pack)
    takes over for this one stream, with the mappings its data was written with.
    """
    res = cluster.request("GET", f"/_data_stream/{stream}")
    backing = [i["index_name"] for i in res["data_streams"][0]["indices"]]
    mapping = cluster.request("GET", f"/{backing[-1]}/_mapping")[backing[-1]]["mappings"]
    mapping.pop("_meta", None)
    cluster.request("PUT", f"/_index_template/{retained_template_name(settings)}", body={
        "index_patterns": [stream], "data_stream": {}, "priority": RETAINED_PRIORITY,
        "template": {"mappings": mapping},
        "_meta": {"description": "keeps pacsguard event data valid after uninstall; remove with the data"},
    })
    for index in backing:
        cluster.request("PUT", f"/{index}/_settings", body={"index": {"default_pipeline": "_none"}})


def _drop_retained_template(cluster: Cluster, settings: Settings) -> bool:
    """Remove the template an earlier uninstall left for kept data. True if there was one."""
    return delete_index_template(cluster, retained_template_name(settings))

