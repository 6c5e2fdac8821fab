"""Directory job: the accounts of the identity provider, for rules that need roles.

DICOM audit messages (and most generic JSON) carry no roles, so "a non-admin
exported 40 studies" (4a) cannot be decided from the event alone. This job
writes one document per account into the directory index (user.name/id/email/
roles, directory.admin/enabled/created/last_seen/source/realm), from:

- Keycloak's admin API: the users of `connectors.keycloak.realm` and their
  effective realm roles, with the connector's service account (it needs the
  realm-management role view-users; docs/sources/keycloak.md);
- a CSV export (`sources.directory.csv_file`): a header line
  `username,email,roles,enabled,created`, roles separated by `;`, enabled
  true/false (empty: true), created an ISO 8601 date (may be empty); an optional
  `id` column (the IdP's user id) lets the job name admin events by that id.

An account in both is written once: the identity provider wins for roles,
enabled and created; the CSV adds roles the IdP does not know (e.g. PACS-local
roles). admin = holds one of `thresholds.admin_roles`. A run rewrites every
account and sweeps those it did not write (deleted accounts), like the other jobs.

It then names the actors of Keycloak admin events: those lines carry the actor
only by id (userId), so the pipeline stores that UUID as user.name. An ingest
pipeline cannot look up an index, and the node has no reindex module (no
_update_by_query), so the job searches recent events whose user.name is still
one of the directory's ids and rewrites user.name by id (bulk updates on the
backing indices). The rules see the name from the next job run on (watch runs
the jobs every engine.jobs_every); an alert raised before that names the UUID.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacsguard.core.connection import ApiError, Cluster
from pacsguard.core.errors import PacsguardError
from pacsguard.core.escaping import path_segment
from pacsguard.core.identity import identity_key
from pacsguard.core.settings import Identity, Settings, duration_seconds
from pacsguard.jobs.clock import start_run
from pacsguard.jobs.report import JobReport
from pacsguard.jobs.writer import BulkWriter, finish_run, job_stamp

CSV_COLUMNS = ("username", "email", "roles", "enabled", "created")
PAGE = 100  # Keycloak's admin API pages users with first/max
RESOLVE_BATCH = 500


@dataclass
class Account:
    name: str
    source: str
    id: str | None = None
    email: str | None = None
    roles: set[str] = field(default_factory=set)
    enabled: bool = True
    created: str | None = None
    realm: str | None = None


def _bool(value: str, where: str) -> bool:
    text = value.strip().lower()
    if text in ("", "true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise PacsguardError(f"{where}: enabled must be true or false, got {value!r}")


def _date(value: str, where: str) -> str | None:
    text = value.strip()
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise PacsguardError(f"{where}: created must be an ISO 8601 date, got {value!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def parse_csv(text: str, origin: str = "directory CSV") -> list[Account]:
    """Accounts of a CSV export (header username,email,roles,enabled,created); errors name the line."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise PacsguardError(f"{origin}: the header must name {','.join(CSV_COLUMNS)} (missing: "
                             f"{', '.join(missing)})")
    accounts: list[Account] = []
    for row in reader:
        where = f"{origin} line {reader.line_num}"
        name = (row.get("username") or "").strip()
        if not name:
            raise PacsguardError(f"{where}: username is empty")
        roles = {r.strip() for r in (row.get("roles") or "").split(";") if r.strip()}
        accounts.append(Account(name=name, source="csv", id=(row.get("id") or "").strip() or None,
                                email=(row.get("email") or "").strip() or None,
                                roles=roles, enabled=_bool(row.get("enabled") or "", where),
                                created=_date(row.get("created") or "", where)))
    return accounts


def read_csv(path: Path) -> list[Account]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise PacsguardError(f"cannot read sources.directory.csv_file {path}: {exc.strerror}") from None
    return parse_csv(text, str(path))


def keycloak_accounts(rest: Any, realm: str) -> list[Account]:
    """Users of `realm` and their effective realm roles (rest: a KeycloakRest)."""
    accounts: list[Account] = []
    first = 0
    while True:
        users = rest.admin("GET", realm, "/users", params={"first": first, "max": PAGE, "briefRepresentation": "false"})
        for u in users:
            roles = rest.admin("GET", realm, f"/users/{path_segment(u['id'])}/role-mappings/realm/composite")
            created = u.get("createdTimestamp")
            accounts.append(Account(
                name=u["username"], source="keycloak", id=u["id"], email=u.get("email"),
                roles={r["name"] for r in roles if isinstance(r, dict) and "name" in r},
                enabled=bool(u.get("enabled", True)), realm=realm,
                created=(dt.datetime.fromtimestamp(created / 1000, dt.timezone.utc).isoformat().replace("+00:00", "Z")
                         if isinstance(created, int) else None)))
        if len(users) < PAGE:
            return accounts
        first += PAGE


def keyed(accounts: Iterable[Account], how: Identity, settings: Settings) -> list[Account]:
    """Accounts with their names and e-mail addresses keyed as the events of their source are
    (docs/identity.md), so the directory's "alice" is the events' "alice"."""
    out = []
    for a in accounts:
        email = identity_key(a.email, settings.sources.addresses) if a.email else None
        out.append(dataclasses.replace(a, name=identity_key(a.name, how), email=email or None))
    return out


def merge(*sources: Iterable[Account]) -> dict[str, Account]:
    """One account per user name; the first source wins for id/enabled/created, roles add up."""
    out: dict[str, Account] = {}
    for accounts in sources:
        for a in accounts:
            have = out.get(a.name)
            if have is None:
                out[a.name] = Account(a.name, a.source, a.id, a.email, set(a.roles), a.enabled, a.created, a.realm)
                continue
            have.roles |= a.roles
            have.email = have.email or a.email
            have.created = have.created or a.created
            have.source = have.source if a.source in have.source.split("+") else f"{have.source}+{a.source}"
    return out


def directory_configured(settings: Settings) -> bool:
    d = settings.sources.directory
    return d.csv_file is not None or (d.from_keycloak and bool(settings.connectors.keycloak.url))


def _rest(settings: Settings) -> Any:
    from pacsguard.idp.keycloak_rest import ClientCredentials, KeycloakRest

    kc = settings.connectors.keycloak
    return KeycloakRest(str(kc.url), str(kc.realm), ClientCredentials(kc.client_id, kc.resolved_secret()),
                        ca_bundle=kc.ca_bundle, verify_tls=kc.verify_tls, timeout=kc.timeout_seconds)


def _last_seen(cluster: Cluster, settings: Settings, names: list[str]) -> dict[str, str]:
    """The last event of each account (max @timestamp per user.name)."""
    out: dict[str, str] = {}
    for i in range(0, len(names), RESOLVE_BATCH):
        batch = names[i:i + RESOLVE_BATCH]
        body = {"size": 0, "query": {"terms": {"user.name": batch}},
                "aggs": {"u": {"terms": {"field": "user.name", "size": len(batch)},
                               "aggs": {"last": {"max": {"field": "@timestamp"}}}}}}
        try:
            res = cluster.request("POST", f"/{settings.index('events_data_stream')}/_search", body=body)
        except ApiError as exc:
            if exc.status == 404:
                return out  # no events yet
            raise
        for b in res["aggregations"]["u"]["buckets"]:
            if b["last"].get("value_as_string"):
                out[b["key"]] = b["last"]["value_as_string"]
    return out


# The names an event may give by id: (name field, id field). Keycloak admin events name their actor
# (user.name) and their target (user.target.name) by id where they give no name.
ID_NAMED = (("user.name", "user.id"), ("user.target.name", "user.target.id"))


def resolve_actors(cluster: Cluster, settings: Settings, ids: dict[str, str], *, now: dt.datetime,
                   window_seconds: int) -> int:
    """Rewrite user.name and user.target.name of recent events that are still an account id (the
    id field says so); returns how many events changed."""
    if not ids:
        return 0
    events = settings.index("events_data_stream")
    since = (now - dt.timedelta(seconds=window_seconds)).isoformat()
    keys = sorted(ids)
    fixed = 0
    for name_field, id_field in ID_NAMED:
        for i in range(0, len(keys), RESOLVE_BATCH):
            body = {"size": 1000, "_source": [id_field, name_field, "related.user"], "sort": ["_doc"],
                    "query": {"bool": {"filter": [{"terms": {name_field: keys[i:i + RESOLVE_BATCH]}},
                                                  {"range": {"@timestamp": {"gte": since}}}]}}}
            while True:
                try:
                    hits = cluster.request("POST", f"/{events}/_search", body=body)["hits"]["hits"]
                except ApiError as exc:
                    if exc.status == 404:
                        return fixed
                    raise
                lines = [line for h in hits if (line := _named(h, name_field, id_field, ids))]
                if lines:
                    res = cluster.request("POST", "/_bulk?refresh=true", body="".join(lines))
                    fixed += sum(1 for item in res["items"] if item["update"].get("status", 500) < 300)
                if len(hits) < 1000 or not lines:
                    break
    return fixed


def _named(hit: dict[str, Any], name_field: str, id_field: str, ids: dict[str, str]) -> str | None:
    """The bulk update that names one event's id-named account, or None (named already)."""
    src = hit["_source"]
    uid, given_id = _get(src, name_field), _get(src, id_field)
    if uid not in ids or given_id not in (None, uid):
        return None
    related = list(dict.fromkeys([*((src.get("related") or {}).get("user") or []), ids[uid]]))
    doc: dict[str, Any] = {"related": {"user": related}}
    holder = doc
    *path, last = name_field.split(".")
    for part in path:
        holder = holder.setdefault(part, {})
    holder[last] = ids[uid]
    return _update(hit["_index"], hit["_id"], doc)


def _get(src: dict[str, Any], dotted: str) -> Any:
    node: Any = src
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _update(index: str, doc_id: str, doc: dict[str, Any]) -> str:
    import json

    return json.dumps({"update": {"_index": index, "_id": doc_id}}) + "\n" + json.dumps({"doc": doc}) + "\n"


def run_directory(cluster: Cluster, settings: Settings, *, now: dt.datetime | None = None,
                  accounts: Iterable[Account] | None = None, rest: Any = None,
                  realm: str | None = None) -> JobReport:
    """One run: read the sources, write the directory, sweep, resolve admin-event actors.

    accounts / rest (a KeycloakRest) and realm: given by callers that already hold them; else
    from the settings (connectors.keycloak, sources.directory).
    """
    began = time.monotonic()
    clock = start_run(now)
    report = JobReport(job="directory", run_id=clock.run_id, started_at=clock.now_iso)
    d = settings.sources.directory
    if accounts is None:
        sources: list[list[Account]] = []
        kc = settings.connectors.keycloak
        if rest is not None or (d.from_keycloak and kc.url):
            realm = realm or kc.realm
            if not realm:
                raise PacsguardError("connectors.keycloak.realm is not set: the directory job reads its users")
            sources.append(keyed(keycloak_accounts(rest or _rest(settings), realm), settings.sources.keycloak.identity,
                                 settings))
        if d.csv_file is not None:
            sources.append(keyed(read_csv(d.csv_file), d.identity, settings))
        if not sources:
            raise PacsguardError("the directory job has no source: set connectors.keycloak (url, realm, secret) "
                                 "and/or sources.directory.csv_file")
        merged = merge(*sources)
    else:
        merged = merge(keyed(accounts, d.identity, settings))
    admin_roles = set(settings.thresholds.admin_roles)
    target = settings.index("directory")
    seen = _last_seen(cluster, settings, sorted(merged))
    writer = BulkWriter(cluster, target)
    for a in merged.values():
        key = f"{a.source.split('+')[0]}:{a.name}"
        user: dict[str, Any] = {"name": a.name, "roles": sorted(a.roles)}
        if a.id:
            user["id"] = a.id
        if a.email:
            user["email"] = a.email
        directory: dict[str, Any] = {"admin": bool(a.roles & admin_roles), "enabled": a.enabled, "source": a.source}
        for k, v in (("created", a.created), ("last_seen", seen.get(a.name)), ("realm", a.realm)):
            if v:
                directory[k] = v
        writer.put(key, {"@timestamp": clock.now_iso, "user": user, "directory": directory,
                         "job": job_stamp(clock.run_id, clock.now_iso, key)})
    report.users = {"accounts": len(merged), "admins": sum(1 for a in merged.values() if a.roles & admin_roles)}
    finish_run(cluster, writer, target, clock.run_id, report, 1, began, 1000)
    ids = {a.id: a.name for a in merged.values() if a.id}
    moment = now or dt.datetime.now(dt.timezone.utc)
    report.markers = resolve_actors(cluster, settings, ids, now=moment,
                                    window_seconds=duration_seconds(d.resolve_window))
    report.seconds = round(time.monotonic() - began, 3)
    return report


@dataclass(frozen=True)
class Named:
    """An account as an alert keys it, and what the directory says of it."""

    value: str
    name: str | None = None  # the directory's name for the account; None: the directory does not know it
    id: str | None = None  # the account id, where the value is one

    def text(self) -> str:
        if self.name and self.id:
            return f"{self.name} (id {self.id})"
        if self.name:
            return self.name
        if self.id:
            return f"{self.id} (an id the directory does not know)"
        return f"{self.value} (not in the directory)"


def lookup_names(cluster: Cluster, settings: Settings, values: list[str]) -> dict[str, Named]:
    """What the directory index says of each value: an account's id (named by the account), an
    account's name, or neither; for the last, whether the events gave the value as an id."""
    values = list(dict.fromkeys(v for v in values if v))
    if not values:
        return {}
    res = cluster.request("POST", f"/{settings.index('directory')}/_search", ok_missing=True, body={
        "size": 2 * len(values), "_source": ["user.name", "user.id"],
        "query": {"bool": {"should": [{"terms": {"user.id": values}}, {"terms": {"user.name": values}}]}}}) or {}
    out: dict[str, Named] = {}
    for h in res.get("hits", {}).get("hits", []):
        user = h["_source"].get("user") or {}
        if user.get("id") in values:
            out[user["id"]] = Named(user["id"], user.get("name"), user["id"])
        if user.get("name") in values and user["name"] not in out:
            out[user["name"]] = Named(user["name"], user["name"])
    for v in values:
        if v not in out:
            out[v] = Named(v, None, v if _given_as_id(cluster, settings, v) else None)
    return out


def _given_as_id(cluster: Cluster, settings: Settings, value: str) -> bool:
    """Whether an event names an account by this value where its id field holds the same value
    (the pipelines key an account the event names only by id by that id)."""
    should = [{"bool": {"filter": [{"term": {name: value}}, {"term": {id_field: value}}]}}
              for name, id_field in ID_NAMED]
    res = cluster.request("POST", f"/{settings.index('events_data_stream')}/_search", ok_missing=True,
                          body={"size": 0, "track_total_hits": 1, "query": {"bool": {"should": should}}}) or {}
    return int(res.get("hits", {}).get("total", {}).get("value", 0)) > 0
