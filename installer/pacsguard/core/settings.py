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
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from pacsguard.core.content import content_path
from pacsguard.core.errors import PacsguardError

ENV_PREFIX = "PACSGUARD_"
DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(value: str) -> int:
    match = DURATION.match(value)
    if not match:
        raise ValueError(f"bad duration {value!r}: use e.g. 30s, 10m, 24h, 90d")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    baseline_multiplier: float = Field(gt=0)
    baseline_floor: int = Field(ge=1)
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


class Settings(Frozen):
    cluster: ClusterSettings
    namespace: str = Field(pattern=r"^[a-z0-9_]+$")
    id_prefix: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    indices: Indices
    pseudonymization: Pseudonymization
    thresholds: Thresholds
    internal_domains: list[str] = []
    notifications: Notifications = Notifications()

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
