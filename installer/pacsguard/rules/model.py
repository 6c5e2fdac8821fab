"""Detection rules: one YAML file per rule under detections/, loaded into frozen typed models.

Validation errors name the file and the line of the offending key, so a rule
author can fix them without reading Python. Thresholds are not written in
rules: a rule names the pack setting (pack/settings.yaml `thresholds`) that
holds each number, so there is one place for every threshold.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from pacsguard.core.errors import PacsguardError
from pacsguard.core.fields import ENTITY_TYPES, check_query, known_field
from pacsguard.core.models import Frozen
from pacsguard.core.render import canonical_hash
from pacsguard.core.settings import DURATION, Thresholds
from pacsguard.core.vocabulary import vocabulary

FILE_NAME = re.compile(r"^(?P<tactic>[a-z_]+)_(?P<what>[a-z0-9_]+)\.yml$")
SEVERITIES = {"critical": 1, "high": 2, "medium": 3, "low": 4, "info": 5}
RISK_RANGES = {"critical": (90, 100), "high": (70, 89), "medium": (40, 69), "low": (20, 39), "info": (0, 19)}
THRESHOLD_KEYS = set(Thresholds.model_fields)
PACK_SIGNAL = re.compile(r"^[1-5][a-c]?$")
# A team's own rule (settings rules.folders) names itself: lower case, not a pack signal.
CUSTOM_SIGNAL = re.compile(r"^[a-z][a-z0-9-]{1,30}$")
Scalar = str | int | float | bool
NEWER_FILTER_KEYS = ("where", "where_not", "query")


def in_vocabulary(value: str | None, known: Iterable[str], what: str) -> str | None:
    """value when the vocabulary has it (or it is unset); else the error a rule author sees."""
    names = list(known)
    if value is not None and value not in names:
        raise ValueError(f"unknown {what} {value!r}; the vocabulary (pack/schema.yaml) has: {', '.join(names)}")
    return value


class RuleError(PacsguardError):
    """A rule file that does not validate; the message names file:line."""


class Mitre(Frozen):
    tactic_id: str = Field(pattern=r"^TA\d{4}$")
    tactic: str
    technique_id: str = Field(pattern=r"^T\d{4}(\.\d{3})?$")
    technique: str


class Guide(Frozen):
    """The 10-minute routine every alert carries (docs/design.md)."""

    triage: str
    contain: str
    preserve: str
    scope: str
    reset: str


class Filter(Frozen):
    """Which events count: any query on the schema's fields. The structured keys (actions,
    outcome, where, where_not) and a Lucene query string (query) all hold together."""

    actions: list[str] = []
    outcome: Literal["success", "failure"] | None = None
    # field: value (or values, any of them); every field must hold
    where: dict[str, Scalar | list[Scalar]] = {}
    # field: value (or values); none may hold
    where_not: dict[str, Scalar | list[Scalar]] = {}
    # a Lucene query string (query_string), every term on a named field of the schema
    query: str | None = None
    exclude_admins: bool = False
    external_only: bool = False

    @field_validator("actions")
    @classmethod
    def _known_actions(cls, value: list[str]) -> list[str]:
        known = vocabulary().actions
        unknown = [a for a in value if a not in known]
        if unknown:
            raise ValueError(f"unknown event.action {', '.join(map(repr, unknown))}; the vocabulary "
                             f"(pack/schema.yaml) has: {', '.join(known)}")
        return value

    @field_validator("where", "where_not")
    @classmethod
    def _known_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            known_field(name, "filter field")
        return value

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | None) -> str | None:
        return None if value is None else check_query(value)

    @model_validator(mode="after")
    def _something(self) -> Filter:
        if not (self.actions or self.where or self.query):
            raise ValueError("a filter needs actions, where or query (it would match every event)")
        return self


class Detection(Frozen):
    type: Literal["threshold", "sequence", "baseline", "new_value", "event"]
    # any keyword (or ip) field of the schema; e.g. observer.hostname, pacs.share.recipients
    entity: str = "user.name"
    filter: Filter | None = None
    # names of pack thresholds (validated against Thresholds' fields)
    window: str | None = None
    threshold: str | None = None
    # studies are counted as distinct Study Instance UIDs, never as a sum of per-event counts: one
    # export audited by two sources is one export (docs/identity.md)
    count: Literal["events", "distinct_studies"] = "events"
    # sequence: the run of failures before a success
    before: Filter | None = None
    # new_value: which profile kind (written by the profiles job)
    profile_kind: str | None = None
    require_new_flag: bool = True
    # baseline: which baseline metric (written by the baselines job)
    baseline_metric: str | None = None
    # escalation (4c): raise to critical when a new-device/country login of the
    # same entity happened within this window (a pack threshold name)
    escalate_after_new_login: str | None = None
    # event: every matching event alerts, once per (entity, group) in the event-rule window
    group_by: list[str] = []

    @field_validator("entity")
    @classmethod
    def _entity(cls, value: str) -> str:
        return known_field(value, "entity", ENTITY_TYPES)

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, value: list[str]) -> list[str]:
        return [known_field(v, "group_by field", ENTITY_TYPES) for v in value]

    @field_validator("profile_kind")
    @classmethod
    def _known_profile_kind(cls, value: str | None) -> str | None:
        return in_vocabulary(value, vocabulary().profile_kinds, "profile kind")

    @field_validator("baseline_metric")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        return in_vocabulary(value, vocabulary().baseline_metrics, "baseline metric")

    @field_validator("window", "threshold", "escalate_after_new_login")
    @classmethod
    def _known_threshold(cls, value: str | None) -> str | None:
        if value is not None and value not in THRESHOLD_KEYS:
            raise ValueError(f"unknown pack threshold {value!r}; known: {', '.join(sorted(THRESHOLD_KEYS))}")
        return value

    @model_validator(mode="after")
    def _needs(self) -> Detection:
        need: dict[str, list[str]] = {
            "threshold": ["filter", "window", "threshold"],
            "sequence": ["filter", "before", "window", "threshold"],
            "baseline": ["filter", "baseline_metric"],
            "new_value": ["profile_kind", "window"],
            "event": ["filter"],
        }
        missing = [f for f in need[self.type] if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a {self.type} detection needs {', '.join(missing)}")
        return self


class Rule(Frozen):
    id: uuid.UUID
    name: str = Field(min_length=5, max_length=120)
    # the pack's signals (1a..5b); a team's own rule: a name of its own (CUSTOM_SIGNAL)
    signal: str = Field(pattern=r"^([1-5][a-c]?|[a-z][a-z0-9-]{1,30})$")
    version: int = Field(ge=1)
    created: dt.date
    updated: dt.date
    maturity: Literal["development", "experimental", "production"]
    author: str
    description: str = Field(min_length=20)
    severity: Literal["critical", "high", "medium", "low", "info"]
    risk_score: int = Field(ge=0, le=100)
    mitre: list[Mitre] = Field(min_length=1)
    data_sources: list[str] = Field(min_length=1)
    false_positives: list[str] = Field(min_length=1)
    references: list[str] = []
    guide: Guide
    schedule: str = Field(pattern=DURATION.pattern)
    detection: Detection
    enabled: bool = True
    _path: Path | None = PrivateAttr(default=None)
    _custom: bool = PrivateAttr(default=False)

    @property
    def path(self) -> Path | None:
        """The file the rule was loaded from (None for a rule built in code)."""
        return self._path

    @property
    def custom(self) -> bool:
        """A team's own rule (from a folder of settings rules.folders), not one of the pack's."""
        return self._custom

    def content_hash(self) -> str:
        """Hash of what the rule does and says, without its version and dates (see rules/lock.py)."""
        data = self.model_dump(mode="json", exclude={"version", "updated", "created"})
        # filter keys added after rules were first locked count only when a rule uses them
        for name in ("filter", "before"):
            f = data["detection"].get(name)
            for key in NEWER_FILTER_KEYS if isinstance(f, dict) else ():
                if not f[key]:
                    del f[key]
        return canonical_hash(data)

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        low, high = RISK_RANGES[self.severity]
        if not low <= self.risk_score <= high:
            raise ValueError(f"risk_score {self.risk_score} does not match severity {self.severity} ({low}-{high})")
        if self.updated < self.created:
            raise ValueError("updated is before created")
        if not self.schedule.endswith(("m", "h", "d")):
            raise ValueError("schedule: Alerting takes minutes, hours or days (minimum 1m)")
        return self

    @property
    def monitor_severity(self) -> str:
        return str(SEVERITIES[self.severity])


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Line number (1-based) of every mapping key path in a YAML document."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                sub = (*path, str(i))
                lines[sub] = item.start_mark.line + 1
                walk(item, sub)

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return lines


def _line_for(lines: dict[tuple[str, ...], int], loc: tuple[Any, ...]) -> int:
    path = tuple(str(p) for p in loc)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return 1


def load_rule(path: Path) -> Rule:
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise RuleError(f"{path}:{mark.line + 1 if mark else 1}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise RuleError(f"{path}:1: a rule file is a mapping")
    if not FILE_NAME.match(path.name):
        raise RuleError(f"{path}:1: file name must be <tactic>_<what>.yml in lower case")
    try:
        rule = Rule.model_validate(data)
    except ValidationError as exc:
        lines = _key_lines(text)
        problems = [f"{path}:{_line_for(lines, err['loc'])}: {'.'.join(str(p) for p in err['loc']) or 'rule'}: "
                    f"{err['msg'].removeprefix('Value error, ')}" for err in exc.errors()]
        raise RuleError("\n".join(problems)) from None
    rule._path = path
    return rule


def load_rules(folder: Path, custom: bool = False) -> list[Rule]:
    """Every rule of a folder; all offenders reported at once, duplicate ids refused.
    custom: a team's folder, whose signals are names of their own (not 1a..5b)."""
    rules, problems = _load_folder(folder, custom)
    if problems:
        raise RuleError("\n".join(problems))
    return rules


def _load_folder(folder: Path, custom: bool) -> tuple[list[Rule], list[str]]:
    rules: list[Rule] = []
    problems: list[str] = []
    if not folder.is_dir():
        return [], [f"{folder}:1: rules folder does not exist"]
    ids: dict[uuid.UUID, Path] = {}
    signals: dict[str, Path] = {}
    for path in sorted(folder.glob("*.yml")):
        try:
            rule = load_rule(path)
        except RuleError as exc:
            problems.append(str(exc))
            continue
        if rule.id in ids:
            problems.append(f"{path}:1: id {rule.id} is also used by {ids[rule.id].name}")
        if rule.signal in signals:
            problems.append(f"{path}:1: signal {rule.signal} is also used by {signals[rule.signal].name}")
        wrong = not CUSTOM_SIGNAL.match(rule.signal) if custom else not PACK_SIGNAL.match(rule.signal)
        if wrong:
            lines = _key_lines(path.read_text())
            problems.append(f"{path}:{lines.get(('signal',), 1)}: signal: "
                            + (f"{rule.signal!r}: a custom rule names itself (lower case, e.g. team-node-query), "
                               "never a pack signal 1a..5b" if custom else f"{rule.signal!r} is not a pack signal"))
        ids[rule.id] = path
        signals[rule.signal] = path
        rule._custom = custom
        rules.append(rule)
    return rules, problems


def load_rule_sets(folders: list[tuple[Path, bool]]) -> list[Rule]:
    """The rules of several folders (the pack's, then the team's): a custom rule may not reuse
    a pack rule's id or signal; every problem of every folder reported at once."""
    rules: list[Rule] = []
    problems: list[str] = []
    for folder, custom in folders:
        found, bad = _load_folder(folder, custom)
        problems += bad
        for rule in found:
            twin = next((r for r in rules if r.id == rule.id or r.signal == rule.signal), None)
            if twin is not None:
                what = f"id {rule.id}" if twin.id == rule.id else f"signal {rule.signal}"
                problems.append(f"{rule.path}:1: {what} is already used by {twin.path}"
                                + (" (a pack rule)" if not twin.custom else ""))
                continue
            rules.append(rule)
    if problems:
        raise RuleError("\n".join(problems))
    return rules
