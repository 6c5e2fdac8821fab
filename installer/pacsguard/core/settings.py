"""Pack settings: defaults from pack/settings.yaml, a user file, then env vars.

Precedence (last wins): packaged defaults < user file < PACSGUARD_* env vars <
explicit CLI options. Secrets are SecretStr so they never print.
"""

from __future__ import annotations

import os
import re
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


class Pseudonymization(Frozen):
    salt: SecretStr | None = None
    salt_file: Path | None = None


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
    escalation_window: str
    share_links: int = Field(ge=1)
    share_links_window: str
    new_external_recipients: int = Field(ge=1)
    new_external_recipients_window: str
    admin_roles: list[str]

    @field_validator("*", mode="after")
    @classmethod
    def _durations(cls, value: Any, info: Any) -> Any:
        if info.field_name.endswith("_window"):
            duration_seconds(value)
        return value


class Channel(Frozen):
    """A Notifications channel the monitors send to (DESIGN.md D9)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    type: Literal["webhook", "slack", "chime", "smtp"]
    url: str | None = None
    smtp_account: str | None = None
    recipients: list[str] = []


class Notifications(Frozen):
    channels: list[Channel] = []


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
    tick_seconds: float = Field(default=1.0, gt=0)

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


class Settings(Frozen):
    cluster: ClusterSettings
    namespace: str = Field(pattern=r"^[a-z0-9_]+$")
    id_prefix: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    indices: Indices
    pseudonymization: Pseudonymization
    thresholds: Thresholds
    internal_domains: list[str] = []
    notifications: Notifications = Notifications()
    detection: DetectionSettings
    engine: EngineSettings = EngineSettings()
    routing: Routing

    @model_validator(mode="after")
    def _routes_name_channels(self) -> Settings:
        names = {c.name for c in self.notifications.channels}
        for i, route in enumerate(self.routing.routes):
            unknown = set(route.channels or []) - names
            if unknown:
                raise ValueError(f"routing.routes.{i}.channels names unknown channels: {', '.join(sorted(unknown))}")
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
        value = raw if path[-1] in ("password", "username", "salt", "url") else yaml.safe_load(raw)
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    if "PACSGUARD_SALT" in environ:
        tree.setdefault("pseudonymization", {})["salt"] = environ["PACSGUARD_SALT"]
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
