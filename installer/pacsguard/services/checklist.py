"""`pacsguard checklist`: the eight questions of a quick baseline audit (docs/design.md section 1),
each answered PASS / FAIL / UNKNOWN from data, with the evidence and the data it looked at.

Facts are gathered from the cluster (events, alerts, the engine's rule status, Alerting
monitors), the identity provider where a connector is configured, and the settings;
each question is then a pure function of those facts (tests hold them to PASS and FAIL).
UNKNOWN means the data to answer is not there -- never a guess.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pacsguard.core.connection import Cluster
from pacsguard.core.errors import PacsguardError
from pacsguard.core.settings import Settings, duration_seconds
from pacsguard.services.alerts import list_alerts
from pacsguard.services.response.context import parse_time
from pacsguard.services.response.scope import composite_buckets
from pacsguard.services.rulestatus import rule_runs

Status = Literal["PASS", "FAIL", "UNKNOWN"]
PASS: Status = "PASS"
FAIL: Status = "FAIL"
UNKNOWN: Status = "UNKNOWN"
LOGIN_SIGNALS = ("1a", "1b", "1c", "2a", "2b")
ADMIN_SIGNALS = ("3",)
EXPORT_SIGNALS = ("4a", "4b", "5a", "5b")
MFA_CREDENTIALS = ("otp", "webauthn", "webauthn-passwordless")


@dataclass
class Answer:
    key: str
    question: str
    status: Status
    evidence: list[str]
    looked_at: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------ facts


@dataclass
class LoginFacts:
    """Successful logins per account: the most countries / devices it used within one hour."""

    events: int = 0
    accounts: dict[str, tuple[int, int]] = field(default_factory=dict)   # user -> (max countries, max devices)


@dataclass
class RoleFacts:
    """Accounts and which of them hold an admin role: from the user directory index when it holds
    accounts (every account, also those never seen), else from the roles events carry."""

    accounts: set[str] = field(default_factory=set)
    admins: set[str] = field(default_factory=set)
    source: str = "events"      # directory | events


@dataclass
class DirectoryFacts:
    """From the identity provider: which admin accounts have a second factor (None: no directory)."""

    source: str | None = None
    mfa: dict[str, bool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@dataclass
class RuleFacts:
    signal: str
    name: str
    enabled: bool
    engine: str                   # pacsguard | alerting
    installed: bool
    running: bool | None          # None: cannot be seen
    last_run: str | None
    error: str | None
    channels: list[str]
    owner: str


@dataclass
class AlertFacts:
    id: str
    signal: str
    state: str
    start: dt.datetime
    acknowledged: dt.datetime | None


@dataclass
class Facts:
    window: str
    now: dt.datetime
    logins: LoginFacts
    roles: RoleFacts
    directory: DirectoryFacts
    rules: dict[str, RuleFacts]
    alerts: list[AlertFacts]
    pack_installed: bool


# --------------------------------------------------------------- questions


def unique_logins(f: Facts, s: Settings) -> Answer:
    q = "Unique logins: no shared accounts"
    c = s.checklist
    looked = [f"{f.logins.events} successful login(s) of {len(f.logins.accounts)} account(s) in the last {f.window}",
              f"generic names: {', '.join(c.shared_account_names)}"]
    if not f.logins.accounts:
        return Answer("unique-logins", q, UNKNOWN, ["no successful logins in the window: nothing to judge"], looked)
    bad: list[str] = []
    for user, (countries, devices) in sorted(f.logins.accounts.items()):
        local = user.split("@")[0].lower()
        if local in c.shared_account_names:
            bad.append(f"{user}: a generic account name")
        if countries > c.max_countries_per_hour:
            bad.append(f"{user}: {countries} countries within one hour")
        if devices > c.max_devices_per_hour:
            bad.append(f"{user}: {devices} devices within one hour")
    if bad:
        return Answer("unique-logins", q, FAIL, bad, looked)
    return Answer("unique-logins", q, PASS, [(f"{len(f.logins.accounts)} account(s), none generic, none used from "
                                              f"more than {c.max_countries_per_hour} country or "
                                              f"{c.max_devices_per_hour} devices in one hour")], looked)


def least_privilege(f: Facts, s: Settings) -> Answer:
    q = "Least privilege: not everyone is admin"
    where = (f"enabled accounts in the user directory {s.index('directory')}" if f.roles.source == "directory"
             else f"accounts whose events carry roles in the last {f.window}")
    looked = [f"{where}: {len(f.roles.accounts)}", f"admin roles: {', '.join(s.thresholds.admin_roles)}"]
    if not f.roles.accounts:
        return Answer("least-privilege", q, UNKNOWN, [("no user directory and no event carries "
                                                       "user.roles: roles cannot be seen")], looked)
    share = len(f.roles.admins) / len(f.roles.accounts)
    line = (f"{len(f.roles.admins)} of {len(f.roles.accounts)} account(s) hold an admin role ({share:.0%}; "
            f"at most {s.checklist.max_admin_share:.0%} passes): {', '.join(sorted(f.roles.admins)) or 'none'}")
    return Answer("least-privilege", q, FAIL if share > s.checklist.max_admin_share else PASS, [line], looked)


def mfa(f: Facts, s: Settings) -> Answer:
    q = "MFA for admins and remote access"
    d = f.directory
    looked = [f"identity provider: {d.source or 'none configured (connectors.keycloak)'}",
              f"admin accounts seen in events: {len(f.roles.admins)}"]
    if d.source is None:
        return Answer("mfa", q, UNKNOWN, ["no identity provider to ask: configure connectors.keycloak"], looked)
    if not f.roles.admins:
        return Answer("mfa", q, UNKNOWN, ["no admin account seen in the events of the window"], looked)
    without = sorted(u for u, has in d.mfa.items() if not has)
    unknown = sorted(u for u in f.roles.admins if u not in d.mfa)
    evidence = [f"{u}: no second factor (otp/webauthn) in {d.source}" for u in without]
    evidence += [f"{u}: not found in {d.source}" for u in unknown] + d.problems
    if without:
        return Answer("mfa", q, FAIL, evidence, looked)
    if unknown or d.problems:
        return Answer("mfa", q, UNKNOWN, evidence, looked)
    return Answer("mfa", q, PASS, [f"every admin account ({len(d.mfa)}) has a second factor in {d.source}",
                                   ("remote access: MFA is enforced by the identity provider's flows; "
                                    "the flows themselves are not read")], looked)


def _alerting(key: str, q: str, signals: tuple[str, ...], f: Facts) -> Answer:
    looked = [f"rules of signals {', '.join(signals)}: enabled, installed, last run and error, channels, owner"]
    problems: list[str] = []
    good: list[str] = []
    unknown: list[str] = []
    if not f.pack_installed:
        return Answer(key, q, FAIL, ["the pack is not installed in this cluster"], looked)
    for signal in signals:
        r = f.rules.get(signal)
        if r is None:
            problems.append(f"{signal}: no rule")
            continue
        faults = []
        if not r.enabled:
            faults.append("disabled")
        elif not r.installed:
            faults.append(f"not installed on {r.engine}")
        elif r.error:
            faults.append(f"last run failed: {r.error}")
        elif r.running is False:
            faults.append("not running (no recent run: is `pacsguard watch` up?)"
                          if r.engine == "pacsguard" else "monitor disabled")
        if not r.channels:
            faults.append('no channel: add one under notifications.channels (README "Alert channels")')
        if not r.owner.strip():
            faults.append("no owner")
        if faults:
            problems.append(f"{signal} {r.name}: {'; '.join(faults)}")
        elif r.running is None:
            unknown.append(f"{signal} {r.name}: installed on {r.engine}; whether it runs cannot be seen")
        else:
            good.append(f"{signal} {r.name}: {r.engine}, last run {r.last_run or '-'}, "
                        f"channels {', '.join(r.channels)}, owner {r.owner}")
    if problems:
        return Answer(key, q, FAIL, problems + good + unknown, looked)
    if unknown:
        return Answer(key, q, UNKNOWN, unknown + good, looked)
    return Answer(key, q, PASS, good, looked)


def alerts_logins(f: Facts, s: Settings) -> Answer:
    return _alerting("alerts-logins", "Alerts on failure bursts and new devices/locations", LOGIN_SIGNALS, f)


def alerts_admin(f: Facts, s: Settings) -> Answer:
    return _alerting("alerts-admin-changes", "Immediate alerts on admin grants and permission changes",
                     ADMIN_SIGNALS, f)


def alerts_export(f: Facts, s: Settings) -> Answer:
    return _alerting("alerts-export-sharing", "Alerts on bulk export and mass sharing", EXPORT_SIGNALS, f)


def encryption(f: Facts, s: Settings) -> Answer:
    q = "Encryption in transit and at rest"
    seen: list[str] = []
    bad: list[str] = []
    url = s.cluster.url
    (seen if url.startswith("https://") and s.cluster.verify_tls else bad).append(
        f"cluster {url}: " + ("TLS, certificate verified" if url.startswith("https://") and s.cluster.verify_tls
                              else "TLS without verification" if url.startswith("https://") else "plain HTTP"))
    kc = s.connectors.keycloak
    if kc.url:
        (seen if kc.url.startswith("https://") and kc.verify_tls else bad).append(
            f"identity provider {kc.url}: " + ("TLS" if kc.url.startswith("https://") else "plain HTTP"))
    for ch in s.notifications.channels:
        if ch.type == "smtp":
            (bad if ch.security == "none" else seen).append(f"channel {ch.name}: SMTP {ch.security}")
        elif ch.url:
            (seen if ch.url.startswith("https://") and ch.verify_tls else bad).append(
                f"channel {ch.name}: {'TLS' if ch.url.startswith('https://') else 'plain HTTP'}")
        else:
            seen.append(f"channel {ch.name}: URL from env/file, not read here")
    looked = ["settings: cluster.url / verify_tls, connectors, notifications.channels",
              ("not visible from here: the collector's listeners (check `pacsguard collect` uses --tls/--https), "
               "disk encryption of the nodes (at rest: UNKNOWN, check the volumes)")]
    if bad:
        return Answer("encryption", q, FAIL, bad + seen, looked)
    return Answer("encryption", q, PASS, [*seen, "at rest: cannot be seen through the API (UNKNOWN)"], looked)


def response_owner(f: Facts, s: Settings) -> Answer:
    q = "A response routine and a named owner for alerts"
    limit = duration_seconds(s.checklist.ack_within)
    owners = [s.routing.default_owner, *(r.owner for r in s.routing.routes)]
    looked = [f"routing owners: {', '.join(o or '(empty)' for o in owners)}",
              f"{len(f.alerts)} alert(s) opened in the last {f.window}; acknowledged within {s.checklist.ack_within}?"]
    problems: list[str] = []
    if any(not o.strip() for o in owners):
        problems.append("an alert route has no owner (routing.default_owner / routing.routes[].owner)")
    delays: list[float] = []
    for a in f.alerts:
        if a.acknowledged is not None:
            took = (a.acknowledged - a.start).total_seconds()
            delays.append(took)
            if took > limit:
                problems.append(f"{a.id} ({a.signal}) acknowledged after {took / 60:.0f} min")
        elif (f.now - a.start).total_seconds() > limit:
            problems.append(f"{a.id} ({a.signal}) never acknowledged ({a.state})")
    summary = [f"owners: {', '.join(sorted(set(owners)))}"]
    if delays:
        delays.sort()
        summary.append(f"{len(delays)} of {len(f.alerts)} alert(s) acknowledged; median "
                       f"{delays[len(delays) // 2] / 60:.1f} min, slowest {delays[-1] / 60:.1f} min")
    elif not f.alerts:
        summary.append(f"no alerts in the last {f.window}: acknowledgement not measured")
    return Answer("response-owner", q, FAIL if problems else PASS, problems + summary, looked)


QUESTIONS = (unique_logins, least_privilege, mfa, alerts_logins, alerts_admin, alerts_export, encryption,
             response_owner)


# ------------------------------------------------------------------ gather


def _login_facts(cluster: Cluster, settings: Settings, index: str, since: str) -> LoginFacts:
    """Per account, the most countries and devices within one hour. Hours are counted on two grids,
    the second shifted by 30 minutes, so two logins less than 30 minutes apart always share an hour
    whatever the clock says (one grid alone splits them at every full hour)."""
    query = {"bool": {"filter": [{"term": {"event.action": "user-login"}}, {"term": {"event.outcome": "success"}},
                                 {"range": {"@timestamp": {"gte": since}}}]}}
    facts = LoginFacts()
    per_hour = {"countries": {"cardinality": {"field": "source.geo.country_iso_code"}},
                "devices": {"cardinality": {"field": "device.id"}}}
    for offset in ("+0m", "+30m"):
        hours = {"date_histogram": {"field": "@timestamp", "fixed_interval": "1h", "offset": offset}}
        events = 0
        for b in composite_buckets(cluster, index, query, [{"u": {"terms": {"field": "user.name"}}}, {"h": hours}],
                                   settings.detection.composite_page_size, per_hour):
            user = b["key"]["u"]
            countries, devices = facts.accounts.get(user, (0, 0))
            facts.accounts[user] = (max(countries, int(b["countries"]["value"])),
                                    max(devices, int(b["devices"]["value"])))
            events += b["doc_count"]
        facts.events = events  # the same logins on either grid
    return facts


def _role_facts(cluster: Cluster, settings: Settings, index: str, since: str) -> RoleFacts:
    directory = settings.index("directory")
    cluster.request("POST", f"/{directory}/_refresh", ok_missing=True)
    enabled = {"bool": {"must_not": [{"term": {"directory.enabled": False}}]}}
    known = RoleFacts(source="directory")
    for b in composite_buckets(cluster, directory, enabled, [{"u": {"terms": {"field": "user.name"}}},
                                                             {"a": {"terms": {"field": "directory.admin",
                                                                              "missing_bucket": True}}}],
                               settings.detection.composite_page_size):
        known.accounts.add(b["key"]["u"])
        if b["key"]["a"] in (True, 1, "true"):
            known.admins.add(b["key"]["u"])
    if known.accounts:
        return known
    query = {"bool": {"filter": [{"exists": {"field": "user.roles"}}, {"range": {"@timestamp": {"gte": since}}}]}}
    facts = RoleFacts()
    admin_roles = set(settings.thresholds.admin_roles)
    for b in composite_buckets(cluster, index, query, [{"u": {"terms": {"field": "user.name"}}},
                                                       {"r": {"terms": {"field": "user.roles"}}}],
                               settings.detection.composite_page_size):
        facts.accounts.add(b["key"]["u"])
        if b["key"]["r"] in admin_roles:
            facts.admins.add(b["key"]["u"])
    return facts


def _directory_facts(settings: Settings, admins: set[str]) -> DirectoryFacts:
    kc = settings.connectors.keycloak
    if not kc.url:
        return DirectoryFacts()
    from pacsguard.response.connectors.keycloak import KeycloakConnector

    facts = DirectoryFacts(source=f"Keycloak {kc.url} realm {kc.realm}")
    try:
        connector = KeycloakConnector(kc, dry_run=True)
        for user in sorted(admins):
            try:
                types = connector.credential_types(user)
            except PacsguardError as exc:
                if "no such user" in str(exc):
                    continue
                raise
            facts.mfa[user] = any(t in MFA_CREDENTIALS for t in types)
    except PacsguardError as exc:
        facts.problems.append(f"cannot read the identity provider: {exc}")
    return facts


def _rule_facts(cluster: Cluster, settings: Settings, now: dt.datetime) -> tuple[dict[str, RuleFacts], bool]:
    installed = cluster.exists(f"/{settings.index('alerts')}")  # every install creates it
    out = {r.signal: RuleFacts(r.signal, r.rule, r.enabled, r.engine, r.installed and r.enabled, r.running,
                               r.last_run, r.last_error, r.channels, r.owner)
           for r in rule_runs(cluster, settings, now)}
    return out, installed


def _alert_facts(cluster: Cluster, settings: Settings, since: dt.datetime) -> list[AlertFacts]:
    out = []
    cluster.request("POST", f"/{settings.index('alerts')}/_refresh", ok_missing=True)
    for v in list_alerts(cluster, settings):
        start = parse_time(v.start_time)
        if start < since:
            continue
        ack = None
        if v.engine == "pacsguard":
            src = v.detail or {}
            if not src:
                from pacsguard.engines.alerts import AlertStore

                src = AlertStore(cluster, settings.index("alerts")).get(v.id).source
            if src.get("acknowledged_time"):
                ack = parse_time(src["acknowledged_time"])
            else:  # closed by a person without an ack first: that is when someone had it
                people = [h for h in src.get("history", []) if h.get("by") != "pacsguard" and not h.get("action")]
                ack = parse_time(people[0]["at"]) if people else None
        else:  # who acknowledged or closed it through the pack, else through Alerting (Dashboards)
            detail = v.detail or {}
            when = (detail.get("workflow") or {}).get("acknowledged_time") or detail.get("acknowledged_time")
            ack = parse_time(when) if when else None
        out.append(AlertFacts(v.id, v.signal, v.state, start, ack))
    return out


def gather(cluster: Cluster, settings: Settings, now: dt.datetime | None = None) -> Facts:
    now = now or dt.datetime.now(dt.timezone.utc)
    window = settings.checklist.window
    since_dt = now - dt.timedelta(seconds=duration_seconds(window))
    since = since_dt.isoformat()
    index = settings.index("events_data_stream")
    cluster.request("POST", f"/{index}/_refresh", ok_missing=True)
    roles = _role_facts(cluster, settings, index, since)
    rules, installed = _rule_facts(cluster, settings, now)
    return Facts(window, now, _login_facts(cluster, settings, index, since), roles,
                 _directory_facts(settings, roles.admins), rules, _alert_facts(cluster, settings, since_dt), installed)


def evaluate(facts: Facts, settings: Settings) -> list[Answer]:
    return [question(facts, settings) for question in QUESTIONS]


def checklist(cluster: Cluster, settings: Settings, now: dt.datetime | None = None) -> list[Answer]:
    return evaluate(gather(cluster, settings, now), settings)


def as_text(answers: list[Answer]) -> str:
    lines = []
    for i, a in enumerate(answers, 1):
        lines.append(f"{i}. [{a.status:<7}] {a.question}")
        lines += [f"     - {e}" for e in a.evidence]
        lines += [f"     looked at: {x}" for x in a.looked_at]
    counts = {s: sum(a.status == s for a in answers) for s in (PASS, FAIL, UNKNOWN)}
    return "\n".join(lines) + f"\n\n{counts[PASS]} pass, {counts[FAIL]} fail, {counts[UNKNOWN]} unknown"


def as_markdown(answers: list[Answer], settings: Settings, now: dt.datetime | None = None) -> str:
    when = (now or dt.datetime.now(dt.timezone.utc)).isoformat(timespec="seconds")
    lines = [f"# pacsguard posture checklist ({settings.scope})", "", f"Answered from data on {when}.", "",
             "| # | Question | Answer |", "|---|---|---|"]
    lines += [f"| {i} | {a.question} | **{a.status}** |" for i, a in enumerate(answers, 1)]
    for i, a in enumerate(answers, 1):
        lines += ["", f"## {i}. {a.question}: {a.status}", "", "Evidence:", ""]
        lines += [f"- {e}" for e in a.evidence]
        lines += ["", "Data looked at:", ""] + [f"- {x}" for x in a.looked_at]
    return "\n".join(lines) + "\n"
