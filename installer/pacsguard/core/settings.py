"""Pack settings: defaults from pack/settings.yaml, a user file, then env vars.

Precedence (last wins): packaged defaults < user file < PACSGUARD_* env vars <
explicit CLI options. Secrets are SecretStr so they never print.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from pacsguard.core.content import content_path
from pacsguard.core.errors import PacsguardError
from pacsguard.core.models import Frozen

ENV_PREFIX = "PACSGUARD_"
DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(value: str) -> int:
    match = DURATION.match(value)
    if not match:
        raise ValueError(f"bad duration {value!r}: use e.g. 30s, 10m, 24h, 90d")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class ClusterSettings(Frozen):
    url: str
    auth: Literal["none", "basic"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    ca_bundle: Path | None = None
    verify_tls: bool = True
    timeout_seconds: float = 30

    def resolved_password(self) -> SecretStr | None:
        if self.password is not None:
            return self.password
        if self.password_file is not None:
            try:
                return SecretStr(self.password_file.read_text().strip())
            except OSError as exc:
                raise PacsguardError(f"cannot read password_file {self.password_file}: {exc.strerror}") from exc
        return None


class Indices(Frozen):
    events_data_stream: str
    failures: str
    baselines: str
    profiles: str
    state: str
    alerts: str
    directory: str
    actions: str = "{prefix}-actions-{namespace}"
    exceptions: str = "{prefix}-exceptions-{namespace}"


class Pseudonymization(Frozen):
    salt: SecretStr | None = None
    salt_file: Path | None = None
    # The MAC key of the collector's ATNA envelope (core/secrets.py): PACSGUARD_ENVELOPE_KEY or a file.
    envelope_key: SecretStr | None = None
    envelope_key_file: Path | None = None


class Thresholds(Frozen):
    model_config = ConfigDict(extra="forbid", frozen=True)
    login_failures_per_user: int = Field(ge=1)
    login_failures_per_user_window: str
    login_failures_per_ip: int = Field(ge=1)
    login_failures_per_ip_window: str
    failures_before_success: int = Field(ge=1)
    failures_before_success_window: str
    profile_history_window: str
    bulk_export_studies: int = Field(ge=1)
    bulk_export_window: str
    baseline_window: str
    baseline_recent_window: str
    baseline_multiplier: float = Field(gt=0)
    baseline_floor: int = Field(ge=1)
    # 4b: at most this much of the activity still going on at the baseline window's end is left out
    # of the baseline (an always-active account keeps a baseline from before it)
    baseline_ongoing_window: str = "12h"
    escalation_window: str
    share_links: int = Field(ge=1)
    share_links_window: str
    new_external_recipients: int = Field(ge=1)
    new_external_recipients_window: str
    admin_roles: list[str]
    # Events older / newer than this (by @timestamp, at ingest) are kept but tagged
    # pacsguard-backdated / pacsguard-future-dated: a sender cannot hide an action in the past unseen.
    max_backdate_window: str = "30d"
    max_future_window: str = "15m"
    # The user_agent processor parses at most this many characters of user_agent.original (its cost
    # grows faster than the length); the whole value is kept.
    user_agent_parse_max_chars: int = Field(default=1024, ge=64)

    @field_validator("*", mode="after")
    @classmethod
    def _durations(cls, value: Any, info: Any) -> Any:
        if info.field_name.endswith("_window"):
            duration_seconds(value)
        return value


ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_SMTP_PORTS = {"starttls": 587, "tls": 465, "none": 25}
# Fields that only one kind of channel reads; naming one on another kind is a mistake worth reporting.
_ONLY_FOR: dict[str, tuple[str, ...]] = {
    "secret_env": ("webhook",), "secret_file": ("webhook",), "headers": ("webhook",),
    "headers_from_env": ("webhook",),
    "smtp_account": ("smtp",), "recipients": ("smtp",), "host": ("smtp",), "port": ("smtp",),
    "security": ("smtp",), "username": ("smtp",), "password_env": ("smtp",), "password_file": ("smtp",),
    "from_address": ("smtp",),
    "url": ("webhook", "slack", "chime"), "url_env": ("webhook", "slack", "chime"),
    "url_file": ("webhook", "slack", "chime"),
    "path": ("inbox",),
}


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where pacsguard keeps its local state (the collector's offsets and spool, the alert inbox):
    $XDG_STATE_HOME/pacsguard, by default ~/.local/state/pacsguard. Never the work tree."""
    env = os.environ if environ is None else environ
    return Path(env.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "pacsguard"


def secret_from(env_name: str | None, file: Path | None, what: str,
                environ: Mapping[str, str] | None = None) -> SecretStr | None:
    """A credential named by an environment variable or a file (never held in settings).

    Read at each use, so a rotated secret file takes effect without a restart.
    """
    environ = os.environ if environ is None else environ
    if env_name is not None:
        value = environ.get(env_name, "")
        if not value:
            raise PacsguardError(f"{what}: environment variable {env_name} is not set")
        return SecretStr(value)
    if file is not None:
        try:
            value = file.read_text().strip()
        except OSError as exc:
            raise PacsguardError(f"{what}: cannot read {file}: {exc.strerror}") from exc
        if not value:
            raise PacsguardError(f"{what}: {file} is empty")
        return SecretStr(value)
    return None


class Channel(Frozen):
    """Where alerts go (docs/design.md): rendered as an OpenSearch Notifications config for
    Alerting, and delivered by the pack's own engine (engines/delivery.py) where Alerting is absent.

    Credentials are never values here: they are named by an environment variable (`*_env`)
    or a file (`*_file`) and read when a message is sent.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    # inbox: the built-in local file (engines/channels/inbox.py) the pack's engine delivers to when no
    # channel is configured; not a type for the settings file (Notifications refuses it).
    type: Literal["webhook", "slack", "chime", "smtp", "inbox"]
    # webhook / slack / chime. A Slack incoming-webhook URL is itself a credential: prefer url_env/url_file.
    url: str | None = Field(default=None, pattern=r"^https?://")
    url_env: str | None = Field(default=None, pattern=ENV_NAME)
    url_file: Path | None = None
    # webhook only: HMAC-SHA256 signing key, and extra request headers (plain, or values from env).
    secret_env: str | None = Field(default=None, pattern=ENV_NAME)
    secret_file: Path | None = None
    headers: dict[str, str] = {}
    headers_from_env: dict[str, str] = {}
    # smtp: smtp_account is the Notifications email account (Alerting); the rest is the pack's own sender.
    smtp_account: str | None = None
    recipients: list[str] = []
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password_env: str | None = Field(default=None, pattern=ENV_NAME)
    password_file: Path | None = None
    from_address: str | None = Field(default=None, pattern=r"^[^@\s<>]+@[^@\s<>]+$")
    # TLS for every kind: verified by default; ca_bundle for a private CA; verify_tls: false for tests only.
    ca_bundle: Path | None = None
    verify_tls: bool = True
    path: Path | None = None  # inbox only: the JSON-lines file

    @model_validator(mode="after")
    def _coherent(self) -> Channel:
        for field_name, kinds in _ONLY_FOR.items():
            if field_name in self.model_fields_set and self.type not in kinds:
                raise ValueError(f"{field_name} does not apply to a {self.type} channel (only {'/'.join(kinds)})")
        for group in (("url", "url_env", "url_file"), ("secret_env", "secret_file"),
                      ("password_env", "password_file")):
            given = [g for g in group if getattr(self, g) is not None]
            if len(given) > 1:
                raise ValueError(f"give one of {', '.join(group)}, not {' and '.join(given)}")
        for header in [*self.headers, *self.headers_from_env]:
            if not re.match(r"^[A-Za-z0-9-]+$", header):
                raise ValueError(f"header name {header!r} is not a valid HTTP header name")
        for header, env_name in self.headers_from_env.items():
            if not re.match(ENV_NAME, env_name):
                raise ValueError(f"headers_from_env.{header}: {env_name!r} is not an environment variable name")
        for address in self.recipients:
            if not re.match(r"^[^@\s<>,]+@[^@\s<>,]+$", address):
                raise ValueError(f"recipient {address!r} is not an e-mail address")
        return self

    def resolved_url(self, environ: Mapping[str, str] | None = None) -> str | None:
        if self.url is not None:
            return self.url
        secret = secret_from(self.url_env, self.url_file, f"channel {self.name} url", environ)
        return None if secret is None else secret.get_secret_value()

    def resolved_secret(self, environ: Mapping[str, str] | None = None) -> SecretStr | None:
        """The webhook signing key, or None when the channel signs nothing."""
        return secret_from(self.secret_env, self.secret_file, f"channel {self.name} secret", environ)

    def resolved_password(self, environ: Mapping[str, str] | None = None) -> SecretStr | None:
        return secret_from(self.password_env, self.password_file, f"channel {self.name} password", environ)

    def resolved_headers(self, environ: Mapping[str, str] | None = None) -> dict[str, SecretStr]:
        """headers_from_env values are secrets (e.g. an Authorization token); plain headers are not."""
        resolved: dict[str, SecretStr] = {}
        for header, env_name in self.headers_from_env.items():
            value = secret_from(env_name, None, f"channel {self.name} header {header}", environ)
            if value is not None:
                resolved[header] = value
        return resolved

    def smtp_port(self) -> int:
        return self.port or _SMTP_PORTS[self.security]


class DeliveryPolicy(Frozen):
    """How hard the pack's own engine tries one delivery before recording a failure (the engine retries later)."""

    max_attempts: int = Field(default=5, ge=1)
    initial_backoff_seconds: float = Field(default=1.0, ge=0)
    max_backoff_seconds: float = Field(default=30.0, ge=0)
    attempt_timeout_seconds: float = Field(default=10.0, gt=0)
    total_seconds: float = Field(default=120.0, gt=0)


class Notifications(Frozen):
    channels: list[Channel] = []
    delivery: DeliveryPolicy = DeliveryPolicy()

    @model_validator(mode="after")
    def _no_inbox(self) -> Notifications:
        for channel in self.channels:
            if channel.type == "inbox":
                raise ValueError(f"channel {channel.name}: the inbox is built in (it receives the alerts while "
                                 "no channel is configured); use webhook, slack, chime or smtp here")
        return self


class DetectionSettings(Frozen):
    """How rules are compiled and run; the same numbers on both engines."""

    composite_page_size: int = Field(ge=1, le=1000)
    action_throttle: str
    event_rule_window: str
    event_rule_every: str
    time_field: str
    event_rule_time_field: str

    @field_validator("action_throttle", "event_rule_window", "event_rule_every")
    @classmethod
    def _duration(cls, value: str) -> str:
        duration_seconds(value)
        return value


EngineName = Literal["alerting", "pacsguard"]


class EngineSettings(Frozen):
    """Which engine runs each rule: auto = Alerting where the plugin runs, else pacsguard's own."""

    mode: Literal["auto", "alerting", "pacsguard"] = "auto"
    # per-signal override, e.g. {"3": pacsguard} for admin changes within seconds
    rules: dict[str, Literal["auto", "alerting", "pacsguard"]] = {}
    jobs_every: str = "5m"
    # the profiles job rereads every user's history this often; between, it rewrites only the users
    # with new events or ageing values (docs/baselines.md; "0s": every run is full)
    profiles_full_every: str = "24h"
    tick_seconds: float = Field(default=1.0, gt=0)
    # an ACTIVE alert nobody acknowledged is sent again this often ("0s": never)
    renotify_every: str = "60m"
    # a failed delivery is tried again on later ticks, this long after the previous try
    redeliver_after: str = "30s"
    # this often `watch` asks whether events a rule reads arrived since its last run,
    # and runs it at once when they did, not at its schedule ("0s": on the schedule only)
    arrival_check_every: str = "2s"

    @field_validator("profiles_full_every")
    @classmethod
    def _duration(cls, value: str) -> str:
        duration_seconds(value)
        return value

    def engine_for(self, signal: str, alerting_present: bool) -> EngineName:
        mode = self.rules.get(signal, self.mode)
        if mode == "auto":
            return "alerting" if alerting_present else "pacsguard"
        return mode


class Route(Frozen):
    """Alerts of these signals/severities (empty: any) go to these channels (None: all) and this owner."""

    signals: list[str] = []
    severities: list[str] = []
    channels: list[str] | None = None
    owner: str


class Routing(Frozen):
    default_owner: str
    routes: list[Route] = []
    # OpenSearch Dashboards base URL for links in alert messages; no link when unset
    dashboards_url: str | None = None

    def route(self, signal: str, severity: str) -> Route:
        """The first route that matches, else the default owner on every channel."""
        for route in self.routes:
            if (not route.signals or signal in route.signals) and (not route.severities or severity in route.severities):
                return route
        return Route(owner=self.default_owner)


class PatientData(Frozen):
    """Where a source's patient data hides (docs/schema.md, "Patient data"): enrich hashes the ids
    and drops the rest in every field of the event. Keys and route names match case-insensitively."""

    # A URL path segment naming a patient route: the segment after it is a patient id, and every
    # query value of that URL is dropped (it may name the patient).
    path_routes: list[str] = Field(default=["patients", "patient"], validate_default=True)
    # Query parameters (and, for generic JSON, keys anywhere in the document) whose value is a
    # patient id (hashed) ...
    id_keys: list[str] = Field(default=["PatientID", "00100020", "patient_id", "patientId", "OtherPatientIDs",
                                        "00101000", "mrn"], validate_default=True)
    # ... or a name or other demographics (dropped).
    drop_keys: list[str] = Field(default=["PatientName", "00100010", "patient_name", "patientName",
                                          "PatientBirthDate", "00100030", "OtherPatientNames", "00101001",
                                          "PatientMotherBirthName", "00101060"], validate_default=True)

    @field_validator("path_routes", "id_keys", "drop_keys")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        for key in value:
            if not key.strip() or any(c in key for c in "/?&=#"):
                raise ValueError(f"[{key}] is not a key or path segment name")
        return list(dict.fromkeys(key.strip().lower() for key in value))


class Identity(Frozen):
    """How a source's account names (or e-mail addresses) become the key the rules count by
    (docs/identity.md). Applied at ingest by the enrich pipeline, in this order: Unicode
    normalization, trimming, domain stripping, case folding; the source's spelling is kept
    in pacs.identity.* where it differs from the key."""

    # insensitive: the source treats "Alice" and "alice" as one account: keyed lower-cased
    case: Literal["sensitive", "insensitive"] = "sensitive"
    # white space around a name is never part of it
    trim: bool = True
    # NFC: one spelling for canonically equal text (e + combining accent = é); NFKC also folds
    # compatibility forms (full-width letters, ligatures): only for a source that does so itself
    unicode: Literal["none", "NFC", "NFKC"] = "NFC"
    # strip: DOMAIN\name and name@domain are keyed as name (the domain goes to user.domain)
    domain: Literal["keep", "strip"] = "keep"


def _case_insensitive() -> Identity:
    return Identity(case="insensitive")


class GenericSourceSettings(Frozen):
    patient: PatientData = PatientData()
    identity: Identity = Identity()


class AtnaSourceSettings(Frozen):
    # DICOM audit UserIDs as the archive writes them (dcm4chee: its Keycloak or LDAP login name)
    identity: Identity = Identity()


class FhirSourceSettings(Frozen):
    identity: Identity = Identity()


class OrthancSourceSettings(Frozen):
    identity: Identity = Identity()


class KeycloakSourceSettings(Frozen):
    # The zone of the server's clock for text lines that carry no offset (IANA name or +hh:mm).
    timezone: str = "UTC"
    # Patient routes and keys in redirect URIs (and any other URL of an event).
    patient: PatientData = PatientData()
    # Keycloak user names are case-insensitive: it stores them lower-cased, but its failed-login
    # events carry the name as typed
    identity: Identity = Field(default_factory=_case_insensitive)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        import zoneinfo

        if value.startswith(("+", "-")) or value in ("UTC", "Z"):
            return value
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"sources.keycloak.timezone [{value}] is not a time zone name") from exc
        return value


class DirectorySourceSettings(Frozen):
    """Where the directory job reads accounts (pacsguard.jobs.directory)."""

    # users and realm roles from connectors.keycloak (its service account needs view-users)
    from_keycloak: bool = True
    # a CSV export: username,email,roles(;-separated),enabled,created
    csv_file: Path | None = None
    # admin events this recent get their actor id replaced by the account's name
    resolve_window: str = "2d"
    # how the CSV's user names are keyed (Keycloak's accounts follow sources.keycloak.identity):
    # as the rules see the same accounts in the events of the sources that name them
    identity: Identity = Identity()

    @field_validator("resolve_window")
    @classmethod
    def _duration(cls, value: str) -> str:
        duration_seconds(value)
        return value


class KeycloakConnectorSettings(Frozen):
    """The containment connector's Keycloak: a confidential client's service account (docs/design.md)."""

    url: str | None = None
    realm: str | None = None
    client_id: str = "pacsguard-containment"
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    ca_bundle: Path | None = None
    verify_tls: bool = True
    timeout_seconds: float = Field(default=10, gt=0)

    def resolved_secret(self) -> SecretStr:
        if self.client_secret is not None and self.client_secret.get_secret_value():
            return self.client_secret
        if self.client_secret_file is not None:
            try:
                value = self.client_secret_file.read_text().strip()
            except OSError as exc:
                raise PacsguardError(f"cannot read connectors.keycloak.client_secret_file "
                                     f"{self.client_secret_file}: {exc.strerror}") from exc
            if value:
                return SecretStr(value)
            raise PacsguardError(f"connectors.keycloak.client_secret_file {self.client_secret_file} is empty")
        raise PacsguardError("no Keycloak client secret: set PACSGUARD_CONNECTORS__KEYCLOAK__CLIENT_SECRET "
                             "or connectors.keycloak.client_secret_file")


class WebhookConnectorSettings(Frozen):
    """A response action for a system without an API we know: a signed webhook asking for it."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    channel: str
    step: Literal["contain", "reset"] = "contain"
    signals: list[str] = []
    action: str = Field(min_length=3)


class Connectors(Frozen):
    keycloak: KeycloakConnectorSettings = KeycloakConnectorSettings()
    webhooks: list[WebhookConnectorSettings] = []


class ResponseSettings(Frozen):
    """The response routine: the evidence window and what reset may remove."""

    evidence_before: str = "24h"
    evidence_after: str | None = None
    removable_roles: list[str] = ["admin", "realm-admin", "pacs-admin"]

    @field_validator("evidence_before", "evidence_after")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            duration_seconds(value)
        return value


class ChecklistSettings(Frozen):
    """What the posture checklist counts as a FAIL."""

    window: str = "30d"
    shared_account_names: list[str] = []
    max_countries_per_hour: int = Field(default=1, ge=1)
    max_devices_per_hour: int = Field(default=3, ge=1)
    max_admin_share: float = Field(default=0.2, ge=0, le=1)
    ack_within: str = "15m"

    @field_validator("window", "ack_within")
    @classmethod
    def _duration(cls, value: str) -> str:
        duration_seconds(value)
        return value


class ProxySourceSettings(Frozen):
    """How the reverse-proxy pipeline reads access logs (docs/sources/proxy.md)."""

    # A request to one of these paths (exact, or below it) is a login: success when it carries a
    # user and did not fail, failure on 401/403. The auth proxy's own paths by default.
    login_paths: list[str] = ["/login", "/oauth2/callback"]
    logout_paths: list[str] = ["/logout", "/oauth2/sign_out"]
    # Addresses of proxies/load balancers in front of this one: when remote_addr is one of them,
    # the client is the right-most X-Forwarded-For address that is not (never the sender's own claim).
    trusted_proxies: list[str] = []
    patient: PatientData = PatientData()
    identity: Identity = Identity()

    @field_validator("login_paths", "logout_paths")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"path {path!r} must start with '/'")
        return [p.rstrip("/") or "/" for p in value]


class SourcesSettings(Frozen):
    atna: AtnaSourceSettings = AtnaSourceSettings()
    fhir: FhirSourceSettings = FhirSourceSettings()
    orthanc: OrthancSourceSettings = OrthancSourceSettings()
    proxy: ProxySourceSettings = ProxySourceSettings()
    keycloak: KeycloakSourceSettings = KeycloakSourceSettings()
    generic: GenericSourceSettings = GenericSourceSettings()
    directory: DirectorySourceSettings = DirectorySourceSettings()
    # e-mail addresses (user.email, user.target.email) and share recipients (pacs.share.recipients)
    # of every source: mail domains and, in practice, local parts are case-insensitive
    addresses: Identity = Field(default_factory=_case_insensitive)

    @field_validator("addresses")
    @classmethod
    def _addresses_keep_domain(cls, value: Identity) -> Identity:
        if value.domain != "keep":
            raise ValueError("sources.addresses.domain must be keep: the domain is part of an address")
        return value


class RuleFolder(Frozen):
    """A team's own rules: a folder of rule files (with its rules.lock.yaml) and their scenarios."""

    path: Path
    scenarios: Path | None = None  # default: <path>/scenarios


class RuleOverride(Frozen):
    """One rule tuned for this site, without changing the rule file or the shared thresholds."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool | None = None
    severity: Literal["critical", "high", "medium", "low", "info"] | None = None
    schedule: str | None = Field(default=None, pattern=r"^\d+[mhd]$")
    owner: str | None = None
    channels: list[str] | None = None
    thresholds: dict[str, Any] = {}


class RulesSettings(Frozen):
    folders: list[RuleFolder] = []
    # per rule signal (a pack signal or a custom rule's)
    overrides: dict[str, RuleOverride] = {}

    @model_validator(mode="after")
    def _threshold_names(self) -> RulesSettings:
        for signal, override in self.overrides.items():
            unknown = set(override.thresholds) - set(Thresholds.model_fields)
            if unknown:
                raise ValueError(f"rules.overrides.{signal}.thresholds: unknown threshold(s) "
                                 f"{', '.join(sorted(unknown))}; known: {', '.join(sorted(Thresholds.model_fields))}")
        return self


class RetentionSettings(Frozen):
    """How long the event data stream keeps events, and when it rolls over to a new backing index
    (an ISM policy, installed where the Index Management plugin runs: docs/sizing.md)."""

    events: str = "2190d"  # audit trails are often kept for years (6 here); a backing index goes after this age
    rollover_age: str = "30d"
    rollover_primary_shard_size: str = Field(default="30gb", pattern=r"^[0-9]+(b|kb|mb|gb|tb)$")

    @field_validator("events", "rollover_age")
    @classmethod
    def _duration(cls, value: str) -> str:
        duration_seconds(value)
        return value


class Settings(Frozen):
    cluster: ClusterSettings
    namespace: str = Field(pattern=r"^[a-z0-9_]+$")
    id_prefix: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    indices: Indices
    pseudonymization: Pseudonymization
    thresholds: Thresholds
    internal_domains: list[str] = []
    sources: SourcesSettings = SourcesSettings()
    notifications: Notifications = Notifications()
    connectors: Connectors = Connectors()
    detection: DetectionSettings
    engine: EngineSettings = EngineSettings()
    retention: RetentionSettings = RetentionSettings()
    routing: Routing
    response: ResponseSettings = ResponseSettings()
    checklist: ChecklistSettings = ChecklistSettings()
    rules: RulesSettings = RulesSettings()

    @model_validator(mode="before")
    @classmethod
    def _override_routes(cls, data: Any) -> Any:
        """A rule override's owner/channels is a route of that rule's own, ahead of the others
        (owner: the default owner when unset; channels: every channel when unset)."""
        rules = data.get("rules") if isinstance(data, dict) else None
        overrides = (rules.get("overrides") or {}) if isinstance(rules, dict) else {}
        extra = [{"signals": [str(signal)], "owner": o.get("owner") or (data.get("routing") or {}).get("default_owner"),
                  "channels": o.get("channels")}
                 for signal, o in overrides.items() if isinstance(o, dict) and (o.get("owner") or o.get("channels"))]
        if extra:
            routing = dict(data.get("routing") or {})
            data = {**data, "routing": {**routing, "routes": extra + list(routing.get("routes") or [])}}
        return data

    @model_validator(mode="after")
    def _routes_name_channels(self) -> Settings:
        names = {c.name for c in self.notifications.channels}
        for i, route in enumerate(self.routing.routes):
            unknown = set(route.channels or []) - names
            if unknown:
                raise ValueError(f"routing.routes.{i}.channels names unknown channels: {', '.join(sorted(unknown))}")
        webhooks = {c.name for c in self.notifications.channels if c.type == "webhook"}
        for i, hook in enumerate(self.connectors.webhooks):
            if hook.channel not in webhooks:
                raise ValueError(f"connectors.webhooks.{i}.channel: {hook.channel!r} is not a webhook channel of "
                                 f"notifications.channels (have: {', '.join(sorted(webhooks)) or 'none'})")
        return self

    @property
    def owner(self) -> str:
        """The installation (id_prefix, namespace) that owns an object: written into every stamp."""
        return f"{self.id_prefix}/{self.namespace}"

    @property
    def scope(self) -> str:
        """Prefix of the ids of this installation's objects (pipelines, templates, monitors...)."""
        return f"{self.id_prefix}-{self.namespace}"

    def index(self, key: str) -> str:
        """A resolved index / data stream name, e.g. index('failures')."""
        template: str = getattr(self.indices, key)
        return template.format(namespace=self.namespace, prefix=self.id_prefix)


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """PACSGUARD_CLUSTER__URL=... -> {"cluster": {"url": ...}} (values parsed as YAML scalars)."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        key = name[len(ENV_PREFIX):]
        if not name.startswith(ENV_PREFIX) or ("__" not in key and key != "NAMESPACE"):
            continue
        path = name[len(ENV_PREFIX):].lower().split("__")
        value = raw if path[-1] in ("password", "username", "salt", "envelope_key", "url", "client_secret") \
            else yaml.safe_load(raw)
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    if "PACSGUARD_SALT" in environ:
        tree.setdefault("pseudonymization", {})["salt"] = environ["PACSGUARD_SALT"]
    if "PACSGUARD_ENVELOPE_KEY" in environ:
        tree.setdefault("pseudonymization", {})["envelope_key"] = environ["PACSGUARD_ENVELOPE_KEY"]
    return tree


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise PacsguardError(f"cannot read settings file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise PacsguardError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise PacsguardError(f"{path}: settings must be a mapping")
    return data


def load_settings(
    user_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    environ = dict(os.environ) if environ is None else environ
    data = _read_yaml(content_path("pack", "settings.yaml"))
    source = "pack/settings.yaml"
    user_file = user_file or (Path(environ["PACSGUARD_SETTINGS"]) if environ.get("PACSGUARD_SETTINGS") else None)
    if user_file:
        data = _deep_merge(data, _read_yaml(user_file))
        source = str(user_file)
    data = _deep_merge(data, _env_overrides(environ))
    data = _deep_merge(data, overrides or {})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise PacsguardError(f"invalid settings (from {source} and env): {problems}") from exc
